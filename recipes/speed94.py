"""speed94: airbench94's recipe through the fastai Learner, for a GPU.

Source: K. Jordan's airbench94 (github.com/KellerJordan/cifar10-airbench, airbench94.py): 94.01% mean test accuracy
(TTA level 2) over 1000 runs in 3.83 s on one A100 (3.29 s compiled), on the original lossless CIFAR-10, with
fastnet94 (1.97M parameters). Compared side by side with airbench94 by benchmarks/vs_airbench.py.
Measured: 90.70 ± 0.20% (TTA 2) in 5.46 s a run, n=5, one H200 (airbench94: 90.69%, 2.13 s) — docs/benchmarks.md
"""
from cifar_fast import DataConfig, Recipe, SpeedConfig, run_script

recipe = Recipe(
    # names the run folder; airbench94's net (widths 64/256/256)
    name='speed94', model='fastnet94',
    # airbench94's batch 1024, 2-pixel translate and alternating flip; its evaluation batch of 2000
    data=DataConfig(batch_size=1024, translate=2, pad_mode='reflect', flip=True, alt_flip=True, val_batch_size=2000),
    # airbench94's 9.9 epochs, as 10 whole ones; triangle(start=.2, peak=.23, end=.07): lr/5 → lr at 23% → 0.07 × lr
    epochs=10, schedule='triangular', pct_start=0.23, div=5, final_div=1 / 0.07,
    # airbench94's values: lr and wd per 1024 examples (speed.decoupled), Nesterov 0.85, label smoothing 0.2, TTA 2
    lr=11.5, wd=0.0153, momentum=0.85, nesterov=True, label_smoothing=0.2, tta=2,
    # airbench94's optimiser units, whitening stem (bias trained 3 epochs), BatchNorm-bias lr × 64, and lookahead
    # averaging every 5 steps; the loss read back every 50 batches (about once an epoch): a host sync per batch
    # stalls a net this small on a GPU
    speed=SpeedConfig(decoupled=True, whiten=True, whiten_bias_epochs=3, bias_lr_scale=64, lookahead=True,
                      lookahead_start=3, lookahead_every=5, sync_every=50),
    # channels-last as airbench94 keeps its net and images ('auto' would choose it on CUDA too)
    precision='auto', channels_last=True,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

"""speed95: airbench95's recipe through the fastai Learner, for a GPU (≤ 5M parameters).

Source: K. Jordan's airbench95 (github.com/KellerJordan/cifar10-airbench, airbench95.py): 95.01% mean test accuracy
(TTA level 2) over 200 runs in 10.4 s on one A100, on the original lossless CIFAR-10, with fastnet95 (4.61M
parameters). Compared side by side with airbench95 by benchmarks/vs_airbench.py.
Measured: 91.82 ± 0.17% (TTA 2) in 10.36 s a run, n=3, one H200 (airbench95: 91.99%, 5.45 s) — docs/benchmarks.md
"""
from cifar_fast import DataConfig, Recipe, SpeedConfig, run_script

recipe = Recipe(
    # names the run folder; airbench95's wider net (widths 128/384/384)
    name='speed95', model='fastnet95',
    # airbench95's batch 1024, 2-pixel translate and alternating flip; its evaluation batch of 2000
    data=DataConfig(batch_size=1024, translate=2, pad_mode='reflect', flip=True, alt_flip=True, val_batch_size=2000),
    # airbench95's 15 epochs and triangle from lr/5 to 0.07 × lr; the peak at 25% is the default (airbench95: 23%)
    epochs=15, schedule='triangular', pct_start=0.25, div=5, final_div=1 / 0.07,
    # airbench95's lower lr 10.0 for the wider net, otherwise airbench94's wd, momentum, label smoothing and TTA 2
    lr=10.0, wd=0.0153, momentum=0.85, nesterov=True, label_smoothing=0.2, tta=2,
    # airbench's optimiser units, whitening stem (bias trained 3 epochs), BatchNorm-bias lr × 64, and lookahead
    # averaging every 5 steps; the loss read back every 50 batches (about once an epoch): a host sync per batch
    # stalls a net this small on a GPU
    speed=SpeedConfig(decoupled=True, whiten=True, whiten_bias_epochs=3, bias_lr_scale=64, lookahead=True,
                      lookahead_start=3, lookahead_every=5, sync_every=50),
    # channels-last as airbench95 keeps its net and images ('auto' would choose it on CUDA too)
    precision='auto', channels_last=True,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

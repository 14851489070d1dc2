"""speed94: airbench94's recipe through the fastai Learner, for a GPU.

Source: K. Jordan's airbench94 (github.com/KellerJordan/cifar10-airbench, airbench94.py): 94.01% mean test accuracy
(TTA level 2) over 1000 runs in 3.83 s on one A100 (3.29 s compiled), on the original lossless CIFAR-10: fastnet94
(1.97M parameters), 9.9 epochs at batch 1024 (we run 10 whole epochs), lr 11.5 and weight decay 0.0153 per 1024
examples with Nesterov momentum 0.85, BatchNorm-bias lr × 64, label smoothing 0.2, 2-pixel translate and alternating
flip, whitening stem with its bias trained for 3 epochs, lookahead averaging from epoch 3 every 5 steps, triangular
schedule (0.2 → 1 at 23% → 0.07). Target: airbench94's accuracy on our JPEG data in less time, measured side by side
with benchmarks/vs_airbench.py. Measured on one H200 (2026-11-30, benchmarks/gpu_check.py, docs/benchmarks.md), n=5
interleaved on the JPEG copy: 90.70 ± 0.20% (TTA 2) in 5.46 s a run against airbench94's 90.69 ± 0.09% in 2.13 s —
its accuracy, at 2.6× its time (training alone 2.97 s).
"""
from cifar_fast import DataConfig, Recipe, SpeedConfig, run_script

recipe = Recipe(
    name='speed94', model='fastnet94',
    data=DataConfig(batch_size=1024, translate=2, pad_mode='reflect', flip=True, alt_flip=True, val_batch_size=2000),
    epochs=10, schedule='triangular', pct_start=0.23, div=5, final_div=1 / 0.07,
    lr=11.5, wd=0.0153, momentum=0.85, nesterov=True, label_smoothing=0.2, tta=2,
    speed=SpeedConfig(decoupled=True, whiten=True, whiten_bias_epochs=3, bias_lr_scale=64, lookahead=True,
                      lookahead_start=3, lookahead_every=5, sync_every=50),
    precision='auto', channels_last=True,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

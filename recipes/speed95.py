"""speed95: airbench95's recipe through the fastai Learner, for a GPU (≤ 5M parameters).

Source: K. Jordan's airbench95 (github.com/KellerJordan/cifar10-airbench, airbench95.py): 95.01% mean test accuracy
(TTA level 2) over 200 runs in 10.4 s on one A100, on the original lossless CIFAR-10: fastnet95 (4.61M parameters,
widths 128/384/384), 15 epochs at batch 1024, otherwise airbench94's optimiser and augmentation. Target: airbench95's
accuracy + 0.5 point in no more time, measured side by side with benchmarks/vs_airbench.py. Measured on one H200
(2026-11-30, benchmarks/gpu_check.py, docs/benchmarks.md), n=3 interleaved on the JPEG copy: 91.82 ± 0.17% (TTA 2)
in 10.36 s a run against airbench95's 91.99 ± 0.11% in 5.45 s: neither target met yet.
"""
from cifar_fast import DataConfig, Recipe, SpeedConfig, run_script

recipe = Recipe(
    name='speed95', model='fastnet95',
    data=DataConfig(batch_size=1024, translate=2, pad_mode='reflect', flip=True, alt_flip=True, val_batch_size=2000),
    epochs=15, schedule='triangular', pct_start=0.25, div=5, final_div=1 / 0.07,
    lr=10.0, wd=0.0153, momentum=0.85, nesterov=True, label_smoothing=0.2, tta=2,
    speed=SpeedConfig(decoupled=True, whiten=True, whiten_bias_epochs=3, bias_lr_scale=64, lookahead=True,
                      lookahead_start=3, lookahead_every=5, sync_every=50),
    precision='auto', channels_last=True,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

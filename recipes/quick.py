"""quick: airbench94's recipe scaled down for a 2-core CPU, through the fastai Learner.

Source: K. Jordan's airbench94 (github.com/KellerJordan/cifar10-airbench, airbench94.py): 94.01% mean test accuracy
over 1000 runs in 3.83 s on one A100, on the original CIFAR-10. Here its net narrowed to widths 32/64/128
(`fastnet_cpu`, 0.30M parameters) and its optimiser, schedule, augmentation and lookahead, for 8 epochs on a CPU, the
first 4 on images downscaled to 24 px, at batch 256.
Measured: 86.25 ± 0.06% (flip TTA), n=3, 2-core AMD EPYC (bf16), 193 ± 3 s launch to exit: 0.95× the time of a plain
PyTorch loop of the old 8-epoch recipe at 85.97% — docs/benchmarks.md, "CPU · 2026-12-07"
"""
from cifar_fast import DataConfig, Recipe, SpeedConfig, run_script

recipe = Recipe(
    # names the run folder; airbench94's net at widths 32/64/128, narrow enough for a 2-core CPU
    name='quick', model='fastnet_cpu',
    # airbench94's augmentation: 2-pixel translate, and alternating flip (every other epoch flips all images).
    # Batch 256, not airbench's 1024: twice the steps of 512 for the same epoch time on a CPU, which learn more in few
    # epochs (docs/benchmarks.md, 2026-12-07)
    data=DataConfig(batch_size=256, translate=2, pad_mode='reflect', flip=True, alt_flip=True),
    # 8 epochs, the first 4 at 24 px (speed below): about 0.75× the cost of a 32-px epoch here
    epochs=8,
    # airbench94's triangle(start=.2, peak=.23, end=.07): lr/5 → lr at 23% of the steps → 0.07 × lr
    schedule='triangular', pct_start=0.23, div=5, final_div=1 / 0.07,
    # airbench94's lr, weight decay and Nesterov momentum, lr and wd per 1024 examples (speed.decoupled)
    lr=11.5, wd=0.0153, momentum=0.85, nesterov=True,
    # airbench94's label smoothing; flip TTA only: level 2 has 3× its views (2-view pass: 15.7 s, docs/benchmarks.md)
    label_smoothing=0.2, tta=1,
    # airbench94's optimiser units, 2×2 whitening stem (its bias trained 3 epochs), BatchNorm-bias lr × 64 and
    # lookahead (from epoch 3, every 5 steps); progressive resizing: epochs 1-4 on 24-px images
    speed=SpeedConfig(decoupled=True, whiten=True, whiten_bias_epochs=3, bias_lr_scale=64, lookahead=True,
                      low_res=24, low_res_epochs=4),
    # bf16 autocast on CPUs with native bf16 (AMX), fp32 elsewhere
    precision='auto',
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

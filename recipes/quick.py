"""quick: airbench94's recipe scaled down for a 2-core CPU, through the fastai Learner.

Source: K. Jordan's airbench94 (github.com/KellerJordan/cifar10-airbench, airbench94.py: 94.01% mean of 1000 runs in
3.83 s on an A100, 9.9 epochs at batch 1024, widths 64/256/256, TTA level 2, lookahead averaging), scaled down for a
2-core CPU: the same net narrowed to widths 32/64/128 (fastnet_cpu, 0.30M parameters), 8 epochs at
batch 512, label smoothing 0.2, 2-pixel translate + alternating flip, flip-only TTA; airbench's optimiser in its
decoupled units (lr 11.5 and weight decay 0.0153 per 1024 examples, Nesterov momentum 0.85, BatchNorm-bias lr × 64,
whitening stem from training patches with its bias trained for 3 epochs) and triangular schedule (0.2 → 1 at 23% →
0.07). Measured on a 2-core AMD EPYC (fp32, 3 seeds): 85.92 ± 0.09% with flip TTA in 658 ± 51 s wall; the same
training as a plain PyTorch loop, 86.01 ± 0.06% in 658 ± 45 s (docs/benchmarks.md, which has the commands).
"""
from cifar_fast import DataConfig, Recipe, SpeedConfig, run_script

recipe = Recipe(
    name='quick', model='fastnet_cpu',
    data=DataConfig(batch_size=512, translate=2, pad_mode='reflect', flip=True, alt_flip=True),
    epochs=10,
    schedule='triangular', pct_start=0.23, div=5, final_div=1 / 0.07,  # airbench: triangle(start=.2, peak=.23, end=.07)
    lr=11.5, wd=0.0153, momentum=0.85, nesterov=True,  # per 1024 examples (speed.decoupled)
    label_smoothing=0.2, tta=1,
    speed=SpeedConfig(decoupled=True, whiten=True, whiten_bias_epochs=3, bias_lr_scale=64),
    precision='auto',  # bf16 autocast on CPUs with native bf16 (AMX), fp32 elsewhere
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

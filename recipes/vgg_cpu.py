"""vgg_cpu: the VGG-style net with batch norm and dropout (VGG-11, configuration A), trained on a 2-core CPU in under
45 minutes.

Source: Simonyan & Zisserman 2015 (arXiv:1409.1556) configuration A with batch norm, the 512-512-10 dropout head of
github.com/szagoruyko/cifar.torch (models/vgg_bn_drop.lua, which reports 92.45% for its VGG-16 variant); the figure
this family was specified with is 90%. VGG-16 (recipes/vgg16.py) trains about 200 images/s here, too slow for the
budget, so VGG-11: one-cycle over 14 epochs at batch 256 with label smoothing, reflect-padded crops with airbench's
alternating flip, and flip TTA at evaluation.

Measured (docs/benchmarks.md), recipe hash d8e4f4995daf (as shipped; --data and --seed change it in a run folder): on
a 2-core Intel Xeon with AMX, 2026-11-30, bf16 + channels_last chosen by 'auto', the shared JPEG copy: seed 0, 87.61%
with flip TTA (86.99% without), n=1, against the source's 90% (goal: within 3 points, ≥ 87%); 26.3 min from launch
to exit (the decode cache warm), 104-113 s an epoch.
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    name='vgg_cpu', model='vgg11',
    data=DataConfig(batch_size=256, translate=4, pad_mode='reflect', flip=True, alt_flip=True),
    epochs=14, schedule='one_cycle', pct_start=0.25, lr=0.2, div=25, final_div=1e4,
    opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
    label_smoothing=0.1, tta=1,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

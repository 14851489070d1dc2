"""vgg_cpu: the VGG-style net with batch norm and dropout (VGG-11, configuration A), trained on a 2-core CPU in under
45 minutes.

Source: Simonyan & Zisserman 2015 (arXiv:1409.1556) configuration A with batch norm, the 512-512-10 dropout head of
github.com/szagoruyko/cifar.torch (models/vgg_bn_drop.lua, which reports 92.45% for its VGG-16 variant); the figure
this family was specified with is 90%.
Measured: 87.61% (flip TTA), n=1, 2-core Intel Xeon (AMX, bf16), 26.3 min — docs/benchmarks.md
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    # names the run folder; VGG-11, since VGG-16 trains ~200 images/s here, too slow for the budget (docs/benchmarks.md)
    name='vgg_cpu', model='vgg11',
    # batch 256 and airbench's alternating flip (as in quick): common short-budget practice, not trialled
    data=DataConfig(batch_size=256, translate=4, pad_mode='reflect', flip=True, alt_flip=True),
    # 14 epochs at 101-118 s each fit the 45-minute budget; one-cycle to peak lr 0.2, not trialled
    epochs=14, schedule='one_cycle', pct_start=0.25, lr=0.2, div=25, final_div=1e4,
    opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
    # label smoothing 0.1 for the short schedule (not trialled); flip TTA: +0.6 points here (docs/benchmarks.md)
    label_smoothing=0.1, tta=1,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

"""ResNet-9 of David Page's DAWNBench entry (6.57M parameters).

Source: Page, "How to train your ResNet" (myrtle.ai, 2018), parts 1-4, code at github.com/davidcpage/cifar10-fast:
94% test accuracy in 24 epochs (79 s on one V100), on the original data; logits scaled by 0.125 in the model.
Measured: not yet — docs/benchmarks.md
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    # names the run folder; Page's 9-layer residual net
    name='resnet9', model='resnet9',
    # Page's augmentation: batch 512, reflect-padded 4-pixel crops, flips and 8×8 cutout
    data=DataConfig(batch_size=512, translate=4, pad_mode='reflect', flip=True, cutout=8),
    # Page's 24 epochs, lr rising linearly to its peak over 5 epochs then falling linearly: 0 → 0.4 at epoch 5 → 0
    epochs=24, schedule='triangular', pct_start=5 / 24, div=1e3, final_div=1e4,
    # Page's peak: 0.4/512 per example with a summed loss, i.e. 0.4 with our mean loss; Nesterov 0.9, wd 5e-4
    lr=0.4, opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

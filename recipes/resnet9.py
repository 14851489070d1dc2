"""ResNet-9 of David Page's DAWNBench entry (6.57M parameters).

Source: Page, "How to train your ResNet" (myrtle.ai, 2018), parts 1-4, code at github.com/davidcpage/cifar10-fast: 94% test accuracy in 24 epochs (79 s on one
V100) with batch 512, SGD Nesterov momentum 0.9, weight decay 5e-4, lr rising linearly to 0.4 over 5 epochs then
falling linearly to 0 (in per-example units with a summed loss, i.e. 0.4 with a mean loss), reflect-padded 4-pixel
crops, flips and 8×8 cutout, logits scaled by 0.125. Measured on the original data. Not yet run to completion here.
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    name='resnet9', model='resnet9',
    data=DataConfig(batch_size=512, translate=4, pad_mode='reflect', flip=True, cutout=8),
    epochs=24, schedule='triangular', pct_start=5 / 24, div=1e3, final_div=1e4,  # 0 → 0.4 at epoch 5 → 0
    lr=0.4, opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

"""ResNet-18 under 5M parameters (4.91M): 7×7 stride-2 stem, one basic block per stage (64, 128, 256, 512).

Source: the ResNet-18 of He et al. 2016, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385), table 1,
with one basic block per stage instead of two and no max-pool after the stem, to stay under 5M parameters. The training setup follows the
common CIFAR ResNet-18 recipe of kuangliu/pytorch-cifar (SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 128,
cosine annealing over 200 epochs, crop + flip), which reports 93.02% for the full 11.2M ResNet-18; we shorten it to
100 epochs for this smaller, faster-to-saturate net. The 7×7 stride-2 stem quarters the 32×32 input early, so
expect less than the full ResNet-18. Not yet run to completion here.
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    name='resnet18_5m', model='resnet18_5m',
    data=DataConfig(batch_size=128, translate=4, flip=True),
    epochs=100, schedule='cosine', lr=0.1, opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

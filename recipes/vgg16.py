"""VGG-16 with batch norm and an FC–dropout–FC head.

Source: Simonyan & Zisserman 2015 (arXiv:1409.1556) for the 13-conv configuration; the head after
github.com/szagoruyko/cifar.torch (models/vgg_bn_drop.lua); trained as in github.com/kuangliu/pytorch-cifar, which
reports 92.64% for its VGG16 (one linear head).
Measured: not yet — docs/benchmarks.md
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    # names the run folder; configuration D (13 convs) with batch norm
    name='vgg16', model='vgg16',
    # kuangliu/pytorch-cifar's batch 128 (4-pixel crop and flip are the defaults)
    data=DataConfig(batch_size=128, translate=4, flip=True),
    # kuangliu's cosine annealing over 200 epochs from lr 0.1 (SGD 0.9, wd 5e-4: the defaults)
    epochs=200, schedule='cosine', lr=0.1, opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

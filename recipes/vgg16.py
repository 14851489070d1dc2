"""VGG-16 with batch norm and an FC–dropout–FC head.

Source: Simonyan & Zisserman 2015 (arXiv:1409.1556) for the 13-conv configuration; the head after
github.com/szagoruyko/cifar.torch (models/vgg_bn_drop.lua); the CIFAR training setup of github.com/kuangliu/pytorch-cifar
(SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 128, cosine annealing over 200 epochs, crop + flip), which
reports 92.64% for its VGG16 (one linear head). Not yet run to completion here.
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    name='vgg16', model='vgg16',
    data=DataConfig(batch_size=128, translate=4, flip=True),
    epochs=200, schedule='cosine', lr=0.1, opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

"""ResNet-18 under 5M parameters (4.91M): 7×7 stride-2 stem, one basic block per stage (64, 128, 256, 512).

Source: the ResNet-18 of He et al. 2016, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385), table 1,
with one basic block per stage instead of two and no max-pool after the stem, to stay under 5M parameters; trained
as in github.com/kuangliu/pytorch-cifar, which reports 93.02% for the full 11.2M ResNet-18 (200 epochs). The 7×7
stride-2 stem quarters the 32×32 input early, so expect less than the full ResNet-18.
Measured: not yet — docs/benchmarks.md
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    # names the run folder; the 4.91M-parameter ResNet-18 layout
    name='resnet18_5m', model='resnet18_5m',
    # kuangliu/pytorch-cifar's batch 128 (4-pixel crop and flip are the defaults)
    data=DataConfig(batch_size=128, translate=4, flip=True),
    # kuangliu's cosine annealing from lr 0.1 (SGD 0.9, wd 5e-4: the defaults); 100 epochs, not its 200: our choice,
    # expecting the smaller net to saturate sooner (not measured)
    epochs=100, schedule='cosine', lr=0.1, opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

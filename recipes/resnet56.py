"""ResNet-56 (He et al. 2016), the deepest common member of the 3-stage CIFAR ResNet family.

Source: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385), section 4.2
and Table 6: ResNet-56 (0.85M parameters) reaches 6.97% test error (93.03% accuracy) after 64k iterations at batch
128, option-A shortcuts, on the original PNG data. The training below is theirs, with one change: the warm-up they
used for ResNet-110 (lr 0.01 for about 400 iterations, then 0.1), because at lr 0.1 from the first step this net's
loss went to 8-9 within five steps on the CPU and it reached only 27.90% after one epoch on an H200, where every other
net was over 50% (docs/benchmarks.md).
Measured: not yet — docs/benchmarks.md
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    # names the run folder; the paper's 56-layer net
    name='resnet56', model='resnet56',
    # the paper's augmentation: batch 128, 4-pixel zero padding, random 32×32 crops and horizontal flips
    data=DataConfig(batch_size=128, translate=4, pad_mode='zeros', flip=True),
    # 64k iterations × 128 / 50k images
    epochs=164,
    # ÷10 at 32k and 48k of 64k iterations (after the warm-up epoch: at epochs 82.5 and 123.25, theirs 81.9 and 122.9)
    schedule='step', milestones=(0.5, 0.75), gamma=0.1,
    # the paper's SGD: plain (not Nesterov) momentum 0.9, weight decay 1e-4, lr 0.1
    lr=0.1, opt='sgd', momentum=0.9, nesterov=False, wd=1e-4,
    # He et al.'s ResNet-110 warm-up: lr/10 = 0.01 held for the first epoch (390 iterations at batch 128; theirs
    # "about 400", until training error fell below 80%), then the step schedule over the other 163; in epochs, not a
    # fraction, so that a shorter run (--epochs) still gets the whole epoch
    warmup_epochs=1, warmup_shape='constant', div=10,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

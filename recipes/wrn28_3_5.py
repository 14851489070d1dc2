"""WRN-28-3.5 (4.48M parameters): a Wide ResNet of depth 28 and fractional widening 3.5 (widths 56/112/224).

Source: Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (arXiv:1605.07146): training as in their section 4 (SGD with
Nesterov momentum 0.9, lr 0.1 multiplied by 0.2 at epochs 60, 120 and 160 of 200, weight decay 5e-4, batch 128,
flips and 4-pixel crops); they report 96.00% for WRN-28-10 (36.5M) and 95.58% for WRN-40-4 (8.9M) on the original
data. k=3.5 is our choice: the widest half-step under 5M parameters (k=4 gives 5.85M).
Not yet run to completion here: on one H200 (2026-11-30) it trains 11,500-12,900 images/s in bf16, so the 200
epochs are about 15 minutes there (one epoch: 61.28%). `python recipes/wrn28_3_5.py --epochs 30` gives a shorter run
on the same schedule.
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    name='wrn28_3_5', model='wrn28_3_5', model_kwargs=dict(dropout=0.0),
    data=DataConfig(batch_size=128, translate=4, flip=True),
    epochs=200, schedule='step', milestones=(0.3, 0.6, 0.8), gamma=0.2,  # epochs 60/120/160 of 200
    lr=0.1, opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

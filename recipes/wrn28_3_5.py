"""WRN-28-3.5 (4.48M parameters): a Wide ResNet of depth 28 and fractional widening 3.5 (widths 56/112/224).

Source: Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (arXiv:1605.07146), trained as in their section
4; they report 96.00% for WRN-28-10 (36.5M) and 95.58% for WRN-40-4 (8.9M) on the original data. k=3.5 is our
choice: the widest half-step under 5M parameters (k=4 gives 5.85M). `--epochs 30` gives a shorter run on the same
schedule.
Measured: not yet — docs/benchmarks.md
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    # names the run folder; without dropout, as the paper's 96.00% for WRN-28-10
    name='wrn28_3_5', model='wrn28_3_5', model_kwargs=dict(dropout=0.0),
    # the paper's batch 128 (4-pixel crops and flips are the defaults)
    data=DataConfig(batch_size=128, translate=4, flip=True),
    # the paper's 200 epochs, lr × 0.2 at epochs 60/120/160
    epochs=200, schedule='step', milestones=(0.3, 0.6, 0.8), gamma=0.2,
    # the paper's SGD: lr 0.1, Nesterov momentum 0.9, weight decay 5e-4 (all defaults)
    lr=0.1, opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

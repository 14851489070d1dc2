"""resnet18_5m_cpu: the ResNet-18 layout under 5M parameters, trained on a 2-core CPU in under 45 minutes.

Source: He et al. 2016 (arXiv:1512.03385), table 1's ResNet-18 with one basic block per stage and its 7×7/2 stem
without the max-pool (4.91M parameters, `resnet18_5m`); the figure this family was specified with is over 90% on
CIFAR-10. The full recipe (recipes/resnet18_5m.py, 100 epochs cosine) waits for a GPU; here one-cycle over 15 epochs
at batch 256 with label smoothing, reflect-padded crops with airbench's alternating flip, and flip TTA at evaluation.

Measured (docs/benchmarks.md), recipe hash 91cb84d1a213 (as shipped; --data and --seed change it in a run folder): on
a 2-core Intel Xeon with AMX, 2026-11-30, bf16 + channels_last chosen by 'auto', the shared JPEG copy: seeds 0/1
87.30 / 87.37% with flip TTA (86.66 / 86.79% without), 87.34 ± 0.05%, against the source's 90% (goal: within 3 points,
≥ 87%); 14.1 / 24.2 min from launch to exit (the decode cache warm; the same run at different hours of a drifting
machine), so the budget leaves room for more epochs.
"""
from cifar_fast import DataConfig, Recipe, run_script

recipe = Recipe(
    name='resnet18_5m_cpu', model='resnet18_5m',
    data=DataConfig(batch_size=256, translate=4, pad_mode='reflect', flip=True, alt_flip=True),
    epochs=15, schedule='one_cycle', pct_start=0.25, lr=0.4, div=25, final_div=1e4,
    opt='sgd', momentum=0.9, nesterov=True, wd=5e-4,
    label_smoothing=0.1, tta=1,
)

if __name__ == '__main__': run_script(recipe, recipe_file=__file__)

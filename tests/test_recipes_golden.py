"""Golden recipe hashes: each shipped recipe's hash is pinned here, so a change to a recipe, or to what the hash
covers, is a visible decision in review rather than a silent change of every run folder's identity."""
from pathlib import Path

import pytest

from cifar_fast.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / 'recipes'

# `load_recipe(f'recipes/{name}.py').hash`, computed on 2026-11-30 from the recipes as then shipped; recomputed the same
# day when the fields channels_last/compile ('auto'), threads, sam and sam_adaptive came in and quick went to 10 epochs,
# and when the CPU recipes of each family (resnet20_cpu, resnet18_5m_cpu, vgg_cpu) came in; recomputed on 2026-12-06
# when the fields deterministic (cuDNN's flags), warmup_epochs and warmup_shape came in (every hash moves) and resnet56
# took He et al.'s ResNet-110 warm-up (warmup_epochs=1, warmup_shape='constant', div=10); and when the one-GPU recipes
# of each family (wrn28_3_5_gpu, resnet56_gpu, resnet18_5m_gpu, vgg16_gpu) came in.
GOLDEN = {
    'quick': '28d1c9e8d27d',
    'resnet18_5m': 'a849237f1c6d',
    'resnet18_5m_cpu': '697cb369b0c0',
    'resnet18_5m_gpu': '5f2be5c1d098',
    'resnet20_cpu': 'bc46f5343a7f',
    'resnet56': 'dc29aa94cd57',
    'resnet56_gpu': '1e72a1d12505',
    'resnet9': '3606619b0046',
    'speed94': '9e0721fab497',
    'speed95': 'f713268b40e1',
    'vgg16': '1053b944eaf6',
    'vgg16_gpu': 'ad8f7d904425',
    'vgg_cpu': 'a3dd845bcacd',
    'wrn28_3_5': '6b66c2391c2a',
    'wrn28_3_5_gpu': '3112d01228b1',
}

RULE = ("see the hash rule in cifar_fast/recipe.py: if the change is meant, update GOLDEN in "
        "tests/test_recipes_golden.py in the same commit and say why in its message")


def test_every_shipped_recipe_has_a_pinned_hash():
    shipped = sorted(p.stem for p in RECIPES.glob('*.py'))
    added, removed = sorted(set(shipped) - set(GOLDEN)), sorted(set(GOLDEN) - set(shipped))
    assert not added and not removed, (f"recipes added without a pinned hash: {added or 'none'}; pinned recipes no "
                                       f"longer shipped: {removed or 'none'} ({RULE})")


@pytest.mark.parametrize('name', sorted(GOLDEN))
def test_recipe_hash_is_pinned(name):
    path = RECIPES / f'{name}.py'
    if not path.is_file(): pytest.fail(f"recipes/{name}.py is pinned in GOLDEN but no longer shipped ({RULE})")
    got = load_recipe(path).hash
    assert got == GOLDEN[name], f"recipes/{name}.py hash changed: {GOLDEN[name]} -> {got} ({RULE})"

"""Golden recipe hashes: each shipped recipe's hash is pinned here, so a change to a recipe, or to what the hash
covers, is a visible decision in review rather than a silent change of every run folder's identity."""
from pathlib import Path

import pytest

from cifar_fast.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / 'recipes'

# `load_recipe(f'recipes/{name}.py').hash`, computed on 2026-11-30 from the recipes as then shipped; recomputed the same
# day when the fields channels_last/compile ('auto'), threads, sam and sam_adaptive came in and quick went to 10 epochs,
# and when the CPU recipes of each family (resnet20_cpu, resnet18_5m_cpu, vgg_cpu) came in; recomputed on 2026-12-06
# when the fields warmup_epochs and warmup_shape came in (every hash moves; each is unchanged with those two keys left
# out) and resnet56 took He et al.'s ResNet-110 warm-up (warmup_epochs=1, warmup_shape='constant', div=10); and when
# the one-GPU recipes of each family (wrn28_3_5_gpu, resnet56_gpu, resnet18_5m_gpu, vgg16_gpu) came in.
GOLDEN = {
    'quick': 'a8e5ee1f002f',
    'resnet18_5m': 'e8222065e38c',
    'resnet18_5m_cpu': '486de3ce8abb',
    'resnet18_5m_gpu': '70d5d1449acc',
    'resnet20_cpu': 'c7091b1283c0',
    'resnet56': '7c611e743fc2',
    'resnet56_gpu': '1d21d75befcd',
    'resnet9': '7956adf46fe5',
    'speed94': '4100593543e6',
    'speed95': '082a984c5dcd',
    'vgg16': '44060a209f39',
    'vgg16_gpu': '4c62470f8383',
    'vgg_cpu': 'ecfbfd439285',
    'wrn28_3_5': '450cbc229c86',
    'wrn28_3_5_gpu': '38295d4a5380',
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

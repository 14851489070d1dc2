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
# of each family (wrn28_3_5_gpu, resnet56_gpu, resnet18_5m_gpu, vgg16_gpu) came in; recomputed on 2026-12-07 when the
# fields speed.low_res and speed.low_res_epochs (progressive resizing) came in and quick went to batch 256, lookahead
# and 8 epochs, the first 4 at 24 px.
GOLDEN = {
    'quick': '2f21cacff2d1',
    'resnet18_5m': '59773fa5f2cd',
    'resnet18_5m_cpu': 'f9843115b92c',
    'resnet18_5m_gpu': '1d77b020a59a',
    'resnet20_cpu': '167670888796',
    'resnet56': '0ed139afca68',
    'resnet56_gpu': 'ab6658f39dff',
    'resnet9': '4fc290f238d1',
    'speed94': 'fe9f0df0c374',
    'speed95': 'dc849e954d8e',
    'vgg16': 'b6da51256d03',
    'vgg16_gpu': '6e112ac51a71',
    'vgg_cpu': 'cef8acd536e0',
    'wrn28_3_5': '687807c6d8e0',
    'wrn28_3_5_gpu': '42ca7bd10df6',
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

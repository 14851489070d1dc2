"""Every shipped recipe trains: one short epoch of each recipes/*.py on the synthetic fixture, with the recipe's own
model, optimiser, schedule, augmentation, mixing, precision and speed options, to a complete run folder.

Where the real archive is present, tests/test_recipes_learn.py trains every recipe on it and demands that it learns,
so this synthetic stand-in runs only where that one is skipped."""
import csv
import math
from pathlib import Path

import pytest

from cifar_fast.recipe import Recipe, apply_overrides, load_recipe
from cifar_fast.rundir import read_json
from cifar_fast.training import train

RECIPES = sorted((Path(__file__).resolve().parents[1] / 'recipes').glob('*.py'))


def cheap(r: Recipe, source: Path) -> Recipe:
    """`r` made cheap and nothing else: one epoch of the fixture at batch 32 (validation at 64, the default 2×).
    Every model keeps its full width: the slowest recipe (resnet9, vgg16, wrn28_3_5) takes about 3.5 s to train this
    epoch on one core of a shared 2-core Xeon; the ~4 s each run spends writing its figures is the larger cost."""
    over = {'epochs': 1, 'data.source': str(source), 'data.batch_size': 32, 'data.val_batch_size': 64}
    if r.compile is True: over['compile'] = False  # torch.compile alone takes ~35 s on this 2-core CPU
    if isinstance(r.lr, str):
        # lr_find would add 100 steps (over 15 epochs of the fixture) to a one-epoch run; instead the usual peak of the
        # optimiser: 0.1 for SGD (He et al. 2016), 1e-3 for Adam/AdamW (Kingma & Ba 2015).
        over['lr'] = 0.1 if r.opt == 'sgd' else 1e-3
    return apply_overrides(r, over)


@pytest.mark.parametrize('path', RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_trains_one_epoch(path, no_real_data, synthetic, tmp_path):
    r = load_recipe(path)
    c = cheap(r, synthetic)
    kept = ('model', 'model_kwargs', 'opt', 'schedule', 'wd', 'momentum', 'label_smoothing', 'mixup', 'cutmix',
            'mix_switch', 'precision', 'channels_last', 'tta', 'speed')
    assert [k for k in kept if getattr(c, k) != getattr(r, k)] == [] and (c.lr == r.lr or isinstance(r.lr, str))
    assert (c.data.translate, c.data.flip, c.data.alt_flip, c.data.cutout) == \
           (r.data.translate, r.data.flip, r.data.alt_flip, r.data.cutout)

    d = train(c, runs_root=tmp_path).run_dir
    assert read_json(d / 'status.json')['state'] == 'complete'
    with open(d / 'metrics.csv') as f: rows = list(csv.DictReader(f))
    assert len(rows) == 1 and math.isfinite(float(rows[0]['train_loss'])), rows
    s = read_json(d / 'summary.json')
    assert 0 <= s['test_accuracy'] <= 1 and s['model'] == r.model and s['epochs'] == 1

"""A recipe with its conv filters under Muon (speed.muon) against the same recipe all-SGD, on the real data, on this
machine: seeds interleaved (sgd, muon, sgd, muon, ...) so drift in the machine's speed hits both alike, each run its
own process through the CLI. Reports test accuracy (with the recipe's TTA and without) and training seconds.

    python benchmarks/muon_vs_sgd.py --data ../shared/data/cifar10.tgz --seeds 0 1
    python benchmarks/muon_vs_sgd.py --data ../shared/data/cifar10.tgz --seeds 0 -- --epochs 2 --data.train_size 5000
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from quick_vs_loop import ROOT, mean_std, timed

VARIANTS = {'sgd': ['--speed.muon', 'false'], 'muon': ['--speed.muon', 'true']}


def main(recipe: str, data: str, seeds: list[int], overrides: list[str], out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs_root = Path(tempfile.mkdtemp(prefix='muon_vs_sgd_runs_'))
    res = dict(recipe=recipe, overrides=overrides, runs={v: [] for v in VARIANTS})
    for seed in seeds:
        for name, flags in VARIANTS.items():
            runs = runs_root / f'{name}_s{seed}'
            timed([sys.executable, '-m', 'cifar_fast.cli', 'train', recipe, '--data', data, '--seed', str(seed),
                   '--runs', str(runs), *flags, *overrides], out_dir / f'{name}_s{seed}.log')
            (run,) = [d for d in runs.iterdir() if (d / 'summary.json').is_file()]
            s, env = (json.loads((run / f).read_text()) for f in ('summary.json', 'env.json'))
            row = dict(seed=seed, accuracy=s['test_accuracy'], accuracy_tta=s['test_accuracy_tta'],
                       train_s=s['train_seconds'], cpu=env.get('cpu'), precision=env.get('precision'))
            res['runs'][name].append(row)
            print(f'{name:4}', json.dumps(row), flush=True)
    for name, rows in res['runs'].items():
        res[f'{name}_summary'] = {k: mean_std([r[k] for r in rows]) for k in ('accuracy', 'accuracy_tta', 'train_s')}
    t = {n: statistics.mean(r['train_s'] for r in rows) for n, rows in res['runs'].items()}
    res['train_ratio_muon_over_sgd'] = round(t['muon'] / t['sgd'], 4)
    (out_dir / 'muon_vs_sgd.json').write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != 'runs'}, indent=1))
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--recipe', default='recipes/quick.py')
    p.add_argument('--data', required=True)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'muon_vs_sgd')
    p.add_argument('overrides', nargs='*', help='recipe overrides for both sides, after --')
    a = p.parse_args()
    main(a.recipe, a.data, a.seeds, a.overrides, a.out)

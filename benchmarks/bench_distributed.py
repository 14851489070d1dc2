"""Training images/s of one process against N processes (torchrun, gloo on CPU / NCCL on GPU) for the same recipe,
global batch and data (docs/benchmarks.md, "One process vs two"). On a 2-core CPU this shows correctness and
overhead, not speed-up: two processes share the same two cores (torchrun gives each one thread).

    python benchmarks/bench_distributed.py --data ../shared/data/cifar10.tgz --nproc 1 2 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(recipe: str, data: str, nproc: int, overrides: list[str], runs: Path) -> dict:
    cmd = [sys.executable, '-m', 'cifar_fast.cli', 'train', recipe, '--data', data, '--runs', str(runs), *overrides]
    if nproc > 1: cmd += ['--nproc', str(nproc)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode: sys.exit(f'{" ".join(cmd)} failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}')
    (d,) = [p for p in runs.iterdir() if (p / 'summary.json').is_file()]
    s = json.loads((d / 'summary.json').read_text())
    return dict(nproc=nproc, images_per_sec=s['train_images_per_sec'], train_s=s['train_seconds'],
                accuracy=s['test_accuracy'], world_size=json.loads((d / 'env.json').read_text())['world_size'],
                process_wall_s=round(wall, 2))


def main(recipe, data, nprocs, repeats, overrides) -> dict:
    rows = []
    for i in range(repeats):  # alternate, so drift in the machine's speed hits every setting alike
        for n in nprocs:
            rows.append(one_run(recipe, data, n, overrides, Path(tempfile.mkdtemp(prefix=f'dist{n}_'))))
            print(json.dumps(rows[-1]), flush=True)
    res = dict(recipe=recipe, overrides=overrides, rows=rows, median_images_per_sec={
        n: statistics.median(r['images_per_sec'] for r in rows if r['nproc'] == n) for n in nprocs})
    print(json.dumps(res['median_images_per_sec']))
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True)
    p.add_argument('--recipe', default='recipes/quick.py')
    p.add_argument('--nproc', type=int, nargs='+', default=[1, 2])
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--overrides', nargs=argparse.REMAINDER,
                   default=['--epochs', '2', '--data.train_size', '10240', '--data.valid_size', '2000', '--tta', '0'],
                   help='recipe overrides (default: 2 epochs on 10,240 images, 2,000 test images)')
    a = p.parse_args()
    main(a.recipe, a.data, a.nproc, a.repeats, a.overrides)

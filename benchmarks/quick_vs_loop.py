"""`quick` through the fastai Learner against the same training as a plain PyTorch loop (benchmarks/plain_loop.py), on
the real data, on this machine: seeds interleaved (loop, quick, loop, quick, ...) so that any drift in the machine's
speed hits both alike. Each run is its own process, timed from launch to exit (imports, data load, training, TTA,
and for quick the run folder it writes). The first decode of the archive is paid before the first run and reported
apart. Goals (issue #9): quick's accuracy ≥ the loop's, and its wall time ≤ 1.03× the loop's; quick ≥ 80% in ≤ 10 min.

    python benchmarks/quick_vs_loop.py --data ../shared/data/cifar10.tgz --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], log: Path) -> float:
    "Run `cmd` to completion with its output in `log`; its wall seconds. A failure stops the benchmark, log named."
    t0 = time.perf_counter()
    with open(log, 'w') as f: rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if rc: sys.exit(f'{cmd[:4]}... failed with exit code {rc}; see {log}')
    return time.perf_counter() - t0


def first_decode(data: str) -> float:
    "Seconds to decode the archive into an empty cache (what a user's first run pays once)."
    code = 'import sys,time; from cifar_fast.data import cifar_data; t=time.perf_counter(); cifar_data(sys.argv[1]); ' \
           'print(time.perf_counter()-t)'
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([sys.executable, '-c', code, data], capture_output=True, text=True, check=True,
                             env={**os.environ, 'CIFAR_FAST_CACHE': d}, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def mean_std(xs: list[float]) -> str:
    return f'{statistics.mean(xs):.4g} ± {statistics.stdev(xs):.2g}' if len(xs) > 1 else f'{xs[0]:.4g}'


def main(data: str, seeds: list[int], out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs_root = Path(tempfile.mkdtemp(prefix='quick_vs_loop_runs_'))
    res = dict(first_decode_s=round(first_decode(data), 2), loop=[], quick=[])
    subprocess.run([sys.executable, '-c', 'import sys; from cifar_fast.data import cifar_data; cifar_data(sys.argv[1])',
                    data], check=True, cwd=ROOT)  # warm this user's cache so both sides load decoded arrays
    print(f"first decode: {res['first_decode_s']} s", flush=True)
    for seed in seeds:
        j = out_dir / f'loop_s{seed}.json'
        wall = timed([sys.executable, 'benchmarks/plain_loop.py', '--data', data, '--seed', str(seed), '--out', str(j)],
                     out_dir / f'loop_s{seed}.log')
        r = json.loads(j.read_text())
        res['loop'].append(dict(seed=seed, accuracy_tta=r['accuracy_tta'], accuracy=r['accuracy'],
                                train_s=r['train_seconds'], process_wall_s=round(wall, 2)))
        print('loop ', json.dumps(res['loop'][-1]), flush=True)
        runs = runs_root / f's{seed}'
        wall = timed([sys.executable, '-m', 'cifar_fast.cli', 'train', 'recipes/quick.py', '--data', data,
                      '--seed', str(seed), '--runs', str(runs)], out_dir / f'quick_s{seed}.log')
        (run,) = [d for d in runs.iterdir() if (d / 'summary.json').is_file()]
        s = json.loads((run / 'summary.json').read_text())
        env = json.loads((run / 'env.json').read_text())
        res['quick'].append(dict(seed=seed, accuracy_tta=s['test_accuracy_tta'], accuracy=s['test_accuracy'],
                                 train_s=s['train_seconds'], process_wall_s=round(wall, 2),
                                 precision=env.get('precision'), cpu=env.get('cpu')))
        print('quick', json.dumps(res['quick'][-1]), flush=True)
    for side in ('loop', 'quick'):
        rows = res[side]
        res[f'{side}_summary'] = {k: mean_std([r[k] for r in rows]) for k in ('accuracy_tta', 'train_s', 'process_wall_s')}
    ql, qq = (statistics.mean(r['process_wall_s'] for r in res[s]) for s in ('loop', 'quick'))
    res['wall_ratio_quick_over_loop'] = round(qq / ql, 4)
    tl, tq = (statistics.mean(r['train_s'] for r in res[s]) for s in ('loop', 'quick'))
    res['train_ratio_quick_over_loop'] = round(tq / tl, 4)
    (out_dir / 'quick_vs_loop.json').write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k not in ('loop', 'quick')}, indent=1))
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'quick_vs_loop')
    a = p.parse_args()
    main(a.data, a.seeds, a.out)

"""`quick` through the fastai Learner against the same training as a plain PyTorch loop (benchmarks/plain_loop.py), on
the real data, on this machine. Each run is its own process, timed from launch to exit (imports, data load, training,
TTA, and for quick the run folder it writes).

- cold: one `quick` run first, with an empty cifar_fast cache (so it decodes the archive, and would compile if its
  machine choices compile), as on a fresh machine;
- warm: then seeds interleaved (loop, quick, loop, quick, ...) with the cache filled, so any drift in the machine's
  speed hits both alike.

Goals (results in docs/benchmarks.md): warm quick's accuracy ≥ the loop's, and its wall time ≤ 0.75× the loop's;
cold quick faster than the loop. The first decode of the archive is also timed apart. The loop computes in the
precision and memory format `quick` chooses on this machine (`cifar_fast.machine.choose`: bf16 and channels-last where
the CPU has native bf16), so the comparison is of the training code, not of the machine settings.

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


def timed(cmd: list[str], log: Path, env: dict | None = None) -> float:
    "Run `cmd` to completion with its output in `log`; its wall seconds. A failure stops the benchmark, log named."
    t0 = time.perf_counter()
    with open(log, 'w') as f: rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
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


def run_quick(data: str, seed: int, runs: Path, log: Path, env: dict | None = None, overrides=()) -> dict:
    """One `cifar-fast train recipes/quick.py` process (recipe fields overridden by `overrides`, CLI style): its
    accuracy, training and wall seconds, and machine choices."""
    wall = timed([sys.executable, '-m', 'cifar_fast.cli', 'train', 'recipes/quick.py', '--data', data,
                  '--seed', str(seed), '--runs', str(runs), *overrides], log, env)
    (run,) = [d for d in runs.iterdir() if (d / 'summary.json').is_file()]
    s = json.loads((run / 'summary.json').read_text())
    e = json.loads((run / 'env.json').read_text())
    return dict(seed=seed, accuracy_tta=s['test_accuracy_tta'], accuracy=s['test_accuracy'], train_s=s['train_seconds'],
                process_wall_s=round(wall, 2), epochs=s['epochs'], recipe_hash=s.get('hash'),
                choices={k: v['value'] for k, v in e.get('choices', {}).items()}, cpu=e.get('cpu'))


def quick_choices() -> list[str]:
    "plain_loop.py's flags for the precision and memory format `quick` chooses on this machine."
    import torch
    from cifar_fast.machine import choose
    from cifar_fast.recipe import load_recipe
    c = choose(load_recipe(ROOT / 'recipes' / 'quick.py'), torch.device('cpu'))
    return ['--precision', c.precision] + (['--channels-last'] if c.channels_last else [])


def main(data: str, seeds: list[int], out_dir: Path, cold: bool = True, variants: dict | None = None) -> dict:
    """`variants`: name -> recipe overrides (e.g. {'e7': ['--epochs', '7']}), each also run for every seed, right
    after quick as shipped, so a candidate recipe is timed in the same interleaving."""
    variants = variants or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    runs_root = Path(tempfile.mkdtemp(prefix='quick_vs_loop_runs_'))
    loop_choices = quick_choices()
    res = dict(first_decode_s=round(first_decode(data), 2), loop=[], quick=[], quick_cold=[], loop_args=loop_choices)
    print(f"first decode: {res['first_decode_s']} s", flush=True)
    if cold:  # a fresh machine: nothing decoded, nothing compiled
        with tempfile.TemporaryDirectory() as cache:
            res['quick_cold'].append(run_quick(data, seeds[0], runs_root / 'cold',
                                               out_dir / f'quick_cold_s{seeds[0]}.log',
                                               {**os.environ, 'CIFAR_FAST_CACHE': cache}))
        print('quick cold', json.dumps(res['quick_cold'][-1]), flush=True)
    subprocess.run([sys.executable, '-c', 'import sys; from cifar_fast.data import cifar_data; cifar_data(sys.argv[1])',
                    data], check=True, cwd=ROOT)  # warm this user's cache so both sides load decoded arrays
    for seed in seeds:
        j = out_dir / f'loop_s{seed}.json'
        wall = timed([sys.executable, 'benchmarks/plain_loop.py', '--data', data, '--seed', str(seed), '--out', str(j),
                      *loop_choices], out_dir / f'loop_s{seed}.log')
        r = json.loads(j.read_text())
        res['loop'].append(dict(seed=seed, accuracy_tta=r['accuracy_tta'], accuracy=r['accuracy'],
                                train_s=r['train_seconds'], process_wall_s=round(wall, 2)))
        print('loop ', json.dumps(res['loop'][-1]), flush=True)
        res['quick'].append(run_quick(data, seed, runs_root / f's{seed}', out_dir / f'quick_s{seed}.log'))
        print('quick', json.dumps(res['quick'][-1]), flush=True)
        for name, over in variants.items():
            res.setdefault(name, []).append(run_quick(data, seed, runs_root / f'{name}_s{seed}',
                                                      out_dir / f'{name}_s{seed}.log', overrides=over))
            res[name][-1]['overrides'] = over
            print(name, json.dumps(res[name][-1]), flush=True)
    for side in ('loop', 'quick', *variants):
        rows = res[side]
        res[f'{side}_summary'] = {k: mean_std([r[k] for r in rows])
                                  for k in ('accuracy_tta', 'train_s', 'process_wall_s')}
    ql, qq = (statistics.mean(r['process_wall_s'] for r in res[s]) for s in ('loop', 'quick'))
    res['wall_ratio_quick_over_loop'] = round(qq / ql, 4)
    if res['quick_cold']: res['wall_ratio_cold_quick_over_loop'] = round(res['quick_cold'][0]['process_wall_s'] / ql, 4)
    tl, tq = (statistics.mean(r['train_s'] for r in res[s]) for s in ('loop', 'quick'))
    res['train_ratio_quick_over_loop'] = round(tq / tl, 4)
    for name in variants:
        res[f'wall_ratio_{name}_over_loop'] = round(statistics.mean(r['process_wall_s'] for r in res[name]) / ql, 4)
    (out_dir / 'quick_vs_loop.json').write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k not in ('loop', 'quick', *variants)}, indent=1))
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'quick_vs_loop')
    p.add_argument('--no-cold', dest='cold', action='store_false', help='skip the cold first run')
    p.add_argument('--variant', nargs=2, action='append', default=[], metavar=('NAME', 'OVERRIDES'),
                   help="also run quick with these recipe overrides for each seed, e.g. --variant e7 '--epochs 7'")
    a = p.parse_args()
    main(a.data, a.seeds, a.out, a.cold, {name: over.split() for name, over in a.variant})

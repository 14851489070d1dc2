"""airbench's own train94/train95 against our speed94/speed95 recipes on the same GPU and the same (JPEG) data.

airbench (the registry package, a benchmark-only extra: `pip install -e '.[bench]'`) reads `cifar10/train.pt` and
`cifar10/test.pt` ({'images': uint8 N×32×32×3, 'labels', 'classes'}) from its working folder; this script writes them
from cifar_fast's decode of `--data`, so both sides train on exactly the same pixels. Per pair: one warm-up run of
each (cuDNN autotuning, allocator, compile caches), then `--runs` runs of each, interleaved. Reported per side: test
accuracy with TTA as airbench reports it (mean ± std) and wall seconds per run, timed around the call with the GPU
synchronised: airbench's = train + TTA evaluation; ours = `train()` from recipe to finished run folder (it also
validates every epoch and writes weights, export and curves); training alone beside each (airbench's train call; our
summary's train_seconds), and the cuDNN flags each side ran under (airbench's own: torch's defaults are reset before it;
ours: the recipe's `deterministic`, default off, so cuDNN's autotuner is on).
Goals: speed94 ≥ airbench94's accuracy in ≤ 1.0× its time; speed95 ≥ airbench95's + 0.5 pt, ≤ 1.0× time.

    python benchmarks/vs_airbench.py --data .data/cifar10.tgz --runs 5 --pairs 94 95

Needs CUDA. Results go to benchmarks/results/vs_airbench.json and are printed as a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def write_airbench_data(data: str, folder: Path) -> None:
    "cifar_fast's decoded arrays in airbench's file format (HWC uint8 images)."
    from cifar_fast.data import cifar_data
    a = cifar_data(data).arrays
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (('train', 'train.pt'), ('test', 'test.pt')):
        x = torch.from_numpy(a.x[split]).permute(0, 2, 3, 1).contiguous()  # ours are N×3×H×W
        torch.save(dict(images=x, labels=torch.from_numpy(a.y[split]).long(), classes=list(a.classes)), folder / name)


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def airbench_run(pair: str) -> dict:
    """airbench's train{pair} then its TTA evaluation, each timed, under airbench's own cuDNN flags: torch's defaults
    reset first (a run of ours may have set them), whatever airbench sets itself kept, and recorded."""
    import airbench
    train = getattr(airbench, f'train{pair}')
    tta = 2  # airbench94/95's hyp['net']['tta_level']
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, False  # torch's defaults
    model, train_s = timed(lambda: train(verbose=False))
    acc, eval_s = timed(lambda: airbench.evaluate(model, airbench.CifarLoader('cifar10', train=False, batch_size=2000),
                                                  tta_level=tta))
    return dict(accuracy_tta=acc, wall_s=train_s + eval_s, train_s=train_s,
                cudnn=dict(deterministic=torch.backends.cudnn.deterministic, benchmark=torch.backends.cudnn.benchmark))


def ours_run(pair: str, data: str, seed: int, runs_root: Path) -> dict:
    from cifar_fast import load_recipe, train
    from cifar_fast.recipe import apply_overrides
    r = apply_overrides(load_recipe(ROOT / 'recipes' / f'speed{pair}.py'), {'data.source': data, 'seed': seed})
    res, secs = timed(lambda: train(r, runs_root=runs_root, show_progress=False))
    s = res.summary
    return dict(accuracy_tta=s['test_accuracy_tta'], wall_s=secs, train_s=s['train_seconds'],
                compile_s=s['compile_seconds'], run_dir=str(res.run_dir),
                cudnn=dict(deterministic=torch.backends.cudnn.deterministic, benchmark=torch.backends.cudnn.benchmark))


def summarise(rows: list[dict], key: str) -> str:
    xs = [r[key] for r in rows]
    return f'{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}' if len(xs) > 1 else f'{xs[0]:.4f}'


def main(data: str, pairs: list[str], runs: int, out: Path) -> dict:
    if not torch.cuda.is_available(): sys.exit('vs_airbench.py needs a CUDA GPU (airbench is CUDA-only).')
    try: import airbench  # noqa: F401
    except ImportError: sys.exit("airbench is not installed: pip install -e '.[bench]'")
    data = str(Path(data).resolve())
    work = Path(tempfile.mkdtemp(prefix='vs_airbench_'))
    write_airbench_data(data, work / 'cifar10')
    os.chdir(work)  # airbench opens 'cifar10/...' relative to the working folder
    res = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, data=data, runs=runs)
    for pair in pairs:
        airbench_run(pair); ours_run(pair, data, 10_000, work / 'runs')  # warm-ups, not reported
        rows = dict(airbench=[], ours=[])
        for i in range(runs):
            rows['airbench'].append(airbench_run(pair))
            rows['ours'].append(ours_run(pair, data, i, work / 'runs'))
            print(pair, i, json.dumps({k: v[-1] for k, v in rows.items()}), flush=True)
        res[pair] = dict(rows=rows, **{f'{side}_{k}': summarise(v, k) for side, v in rows.items()
                                       for k in ('accuracy_tta', 'wall_s')})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"\n{res['gpu']}, torch {res['torch']}, {runs} runs each after one warm-up\n")
    print('| pair | side | accuracy (TTA) | wall s per run |\n|---|---|---:|---:|')
    for pair in pairs:
        for side, name in (('airbench', f'airbench{pair}'), ('ours', f'speed{pair}')):
            print(f"| {pair} | {name} | {res[pair][side + '_accuracy_tta']} | {res[pair][side + '_wall_s']} |")
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='the CIFAR-10 source both sides train on')
    p.add_argument('--pairs', nargs='+', default=['94', '95'], choices=['94', '95'])
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'vs_airbench.json')
    a = p.parse_args()
    main(a.data, a.pairs, a.runs, a.out)

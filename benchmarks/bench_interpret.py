"""What interpretation costs beyond inference, on CPU: `predict_loader` alone vs the whole `interpret_run` (tables,
CSVs, three figures, report) on the full 10,000-image test set, with each process's peak RSS.

Run: `PYTHONPATH=. .venv/bin/python benchmarks/bench_interpret.py --data ../shared/data/cifar10.tgz` (or `--run
RUN_DIR` to reuse a run). Without `--run` it first trains fastnet_cpu (default widths) for 1 epoch on a stratified
5,000-image training subset, in a child process so training memory does not count. Inference alone and
`interpret_run` then each run in a fresh child process, so each peak RSS (`resource.getrusage`, a high-water mark)
belongs to that job only; "before" is after imports, "after" is after the work. Each process makes `--repeats`
calls (default 3): the first is cold (what one `cifar-fast interpret` pays), the fastest is "best". Other
processes on a shared CPU inflate every figure: the cores each call got (CPU s / wall s) are reported beside it.
Prints the figures and appends a markdown section to benchmarks/results/interpret_cpu.md.
"""
from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    "This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare():
    "Child set-up before anything is measured: quiet warnings, and every module the timed code needs imported."
    import warnings
    warnings.filterwarnings('ignore', category=FutureWarning)  # torch.jit.script deprecation raised by fastai
    import cifar_fast.interpret_plots  # noqa: F401  matplotlib
    import cifar_fast.training  # noqa: F401  fastai, the models, the data engines
    from cifar_fast.plots import _plt
    _plt()


def train_run(data: str, runs_root: str, train_size: int, epochs: int, q) -> None:
    "Child: train the small benchmark run and send back its folder and test accuracy."
    _prepare()
    from cifar_fast.recipe import DataConfig, Recipe
    from cifar_fast.training import train
    # Plain one-cycle SGD; batch 64 gives 78 steps in the epoch. Seen on this CPU (2026-11-22, 1 epoch, 5,000 images):
    # batch 256 lr 0.05 -> 23.4%, batch 64 lr 0.05 -> 34.3%, batch 64 lr 0.2 -> 42.1% test accuracy. Not a tuned
    # recipe: it only has to be clearly better than chance, so the tables and figures look like a real model's.
    r = Recipe(name='bench-interpret', model='fastnet_cpu', epochs=epochs, lr=0.2, seed=0,
               data=DataConfig(source=data, batch_size=64, train_size=train_size))
    res = train(r, runs_root=runs_root, show_progress=False)
    q.put((str(res.run_dir), res.summary['test_accuracy'], res.summary['train_seconds']))


def _clock():
    "(wall, CPU) seconds now: CPU/wall over a job is the cores it got (below the thread count: the cores were shared)."
    return time.perf_counter(), time.process_time()


def _timed(fn):
    "(result, wall seconds, cores used) of one call."
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    wall = time.perf_counter() - w
    return out, wall, (time.process_time() - c) / wall


def time_inference(run: str, repeats: int, q) -> None:
    "Child: load the run and its test loader, then time `predict_loader` alone, `repeats` times."
    _prepare()
    from cifar_fast.inference import load_run, run_dls
    from cifar_fast.interpret import split_dl
    from cifar_fast.predictions import predict_loader
    before = peak_rss_mib()
    r, model = load_run(run)
    dl = split_dl(run_dls(r, run), 'test')
    out = dict(seconds=[], cores=[], rss_before=before)
    for _ in range(repeats):
        (probs, targs, losses), wall, cores = _timed(lambda: predict_loader(model, dl))
        out['seconds'].append(wall); out['cores'].append(cores)
        out.setdefault('rss_first', peak_rss_mib())
    q.put(dict(out, n=len(targs), rss_after=peak_rss_mib()))


def time_interpret(run: str, top_losses: int, repeats: int, q) -> None:
    "Child: time the whole `interpret_run` (model and data loading, inference, every file), `repeats` times."
    _prepare()
    from cifar_fast.interpret import interpret_run
    out = dict(seconds=[], cores=[], parts=[], rss_before=peak_rss_mib())
    for _ in range(repeats):
        res = None  # drop the previous call's result first: each holds its own copy of the test images
        res, wall, cores = _timed(lambda: interpret_run(run, top_losses=top_losses))
        out['seconds'].append(wall); out['cores'].append(cores); out['parts'].append(dict(res.seconds))
        out.setdefault('rss_first', peak_rss_mib())
    q.put(dict(out, n=res.n, accuracy=res.accuracy, ece=res.ece, rss_after=peak_rss_mib(),
               out=str(res.files['report.md'].parent)))


def in_child(fn, *args):
    "Run `fn(*args, queue)` in a fresh spawned process and return what it put on the queue."
    ctx = mp.get_context('spawn')
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    if p.exitcode: raise SystemExit(f'{fn.__name__} failed with exit code {p.exitcode}')
    return out


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or 'unknown CPU'


def main(argv: list[str] | None = None) -> int:
    "Train (or reuse) a run, time inference alone and the whole interpretation, print and record the figures."
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default=None, help='CIFAR-10 source (folder, archive, pickles); default $CIFAR_FAST_DATA')
    p.add_argument('--run', default=None, help='an existing run folder to interpret instead of training one')
    p.add_argument('--runs-root', default=str(ROOT / 'runs'), help='where the benchmark run is trained')
    p.add_argument('--train-size', type=int, default=5000, help='training subset for the benchmark run (images)')
    p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--top-losses', type=int, default=16)
    p.add_argument('--repeats', type=int, default=3, help='calls per timing process (the first is the cold one)')
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'interpret_cpu.md')
    args = p.parse_args(argv)
    import torch  # only for the versions and thread count reported; the work happens in child processes

    trained = None
    if args.run is None:
        data = str(Path(args.data).resolve()) if args.data else None  # the recipe records it: make it cwd-proof
        t = time.perf_counter()
        run, acc, train_s = in_child(train_run, data, args.runs_root, args.train_size, args.epochs)
        trained = dict(accuracy=acc, train_seconds=train_s, wall=time.perf_counter() - t)
        print(f'trained {run}: test accuracy {100 * acc:.2f}% ({train_s:.1f} s training, '
              f'{trained["wall"]:.1f} s with data and evaluation)')
    else: run = args.run
    load = os.getloadavg()[0]
    inf = in_child(time_inference, run, args.repeats)
    itp = in_child(time_interpret, run, args.top_losses, args.repeats)
    # Cold: the first call in a fresh process (what one `cifar-fast interpret` pays). Best: the fastest call, the
    # one least disturbed by other processes on a shared CPU (as timeit advises; the median still moves with them).
    cold, best = (lambda xs: xs[0]), min
    own = [p['load'] + p['write'] for p in itp['parts']]  # the same call's time outside inference
    rows = [('inference alone (`predict_loader`)', inf['seconds']), ('whole `interpret_run`', itp['seconds']),
            ('· of which load (model + data)', [p['load'] for p in itp['parts']]),
            ('· of which predict', [p['predict'] for p in itp['parts']]),
            ('· of which tables, figures, report', [p['write'] for p in itp['parts']]),
            ('extra beyond inference: load + tables/figures/report in the same call', own),
            ('cores used, inference alone', inf['cores']), ('cores used, `interpret_run`', itp['cores'])]
    unit = lambda name: '' if name.startswith('cores') else ' s'
    for name, xs in rows:
        print(f'{name:72s} cold {cold(xs):6.2f}{unit(name)}  best {best(xs):6.2f}{unit(name)}  all: '
              + ', '.join(f'{x:.2f}' for x in xs))
    gap = (cold(itp['seconds']) - cold(inf['seconds']), best(itp['seconds']) - best(inf['seconds']))
    print(f'whole interpret_run minus inference alone: cold {gap[0]:.2f} s, best {gap[1]:.2f} s')
    rss = 'peak RSS (ru_maxrss): ' + ' · '.join(
        f"{name} process {d['rss_before']:.0f} MiB after imports → {d['rss_first']:.0f} after the first call → "
        f"{d['rss_after']:.0f} after all" for name, d in (('inference', inf), ('interpret', itp)))

    print(rss)
    print(f"accuracy {100 * itp['accuracy']:.2f}%, ECE {100 * itp['ece']:.2f}%; files in {itp['out']}")

    cmd = ' '.join(['python benchmarks/bench_interpret.py', *(sys.argv[1:] if argv is None else argv)])
    new = not args.out.is_file()
    lines = (['# Interpretation cost on CPU: inference alone vs the whole `interpret_run`', '',
              'Each section is one invocation of `benchmarks/bench_interpret.py`. Inference alone and `interpret_run` '
              'each run in their own fresh process, `repeats` times: cold is the first call (what one '
              '`cifar-fast interpret` pays), best the fastest call. "Cores used" is CPU seconds per wall '
              'second: below the thread count, other processes shared the CPU and every figure is inflated. Peak RSS '
              'is `resource.getrusage` ru_maxrss (a high-water mark) of each process. The figure least moved by that '
              'noise is "extra beyond inference … in the same call"; the two processes\' inference times can '
              'differ by more than the interpretation costs.', ''] if new else [])
    lines += [f'## {datetime.date.today().isoformat()} · {cpu_name()} ({os.cpu_count()} logical cores)', '',
              f'- torch {torch.__version__}, {torch.get_num_threads()} threads; Python {platform.python_version()}; '
              f'load average {load:.2f} at the start; command: `{cmd}`',
              f'- run: `{Path(run).name}` (fastnet_cpu' + (f", {args.epochs} epoch(s) on {args.train_size:,} training "
              f"images, {trained['train_seconds']:.1f} s training)" if trained else ', given with --run)'),
              f"- test split: {itp['n']:,} images, accuracy {100 * itp['accuracy']:.2f}%, ECE {100 * itp['ece']:.2f}%; "
              f'top losses: {args.top_losses}; {args.repeats} calls per process', '',
              '| measure | cold | best | all calls |', '|---|---:|---:|---|']
    for name, xs in rows:
        lines.append(f'| {name} | {cold(xs):.2f}{unit(name)} | {best(xs):.2f}{unit(name)} | '
                     f'{", ".join(f"{x:.2f}" for x in xs)} |')
    lines.append(f'| whole `interpret_run` minus inference alone | {gap[0]:.2f} s | {gap[1]:.2f} s | |')
    lines += ['', f'- {rss}', '']
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, 'a') as f: f.write('\n'.join(lines) + '\n')
    print(f'appended to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

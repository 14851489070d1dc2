"""Training throughput of every registered model on this CPU: forward + backward images/s at batch 128, fp32.

Run: `.venv/bin/python benchmarks/bench_models.py` with the project installed (`make install`, or PYTHONPATH=.);
several minutes on 2 cores, most of it in wrn28_10 (36M params, 5.2 GMACs per image). Prints a markdown table and
writes it, with the CPU, torch version and thread count, to benchmarks/results/models_cpu.md. Each model is timed
once, in one process, on random data; img/s is from the median step of a single run.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cifar_fast.models import create_model, list_models, model_info


def cpu_name() -> str:
    "The CPU's model name from /proc/cpuinfo, or platform's guess elsewhere."
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def others_busy(interval: float = 5.) -> float:
    "Cores that other processes kept busy over the next `interval` seconds (Linux /proc/stat; 0 elsewhere)."
    def busy() -> float:  # seconds of non-idle CPU, all processes
        fields = [float(f) for f in Path('/proc/stat').read_text().split('\n', 1)[0].split()[1:9]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf('SC_CLK_TCK')  # minus idle and iowait
    def ours() -> float:
        t = os.times()
        return t.user + t.system
    try:
        b0, o0 = busy(), ours()
        time.sleep(interval)
        return max(0., (busy() - b0) - (ours() - o0)) / interval
    except (OSError, ValueError):
        return 0.


def wait_idle(max_wait_s: float) -> None:
    "Wait (up to `max_wait_s`) until other processes use under a tenth of a core, so they don't skew the timing."
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline and others_busy() > 0.1: pass


def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    "One forward and backward pass (no optimiser: its cost does not depend on the architecture's compute)."
    F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)


def bench(name: str, bs: int, target_s: float) -> tuple[float, int, float]:
    "(images/s of the median step, timed steps, cores used) of `name` in train mode on random data."
    model = create_model(name, seed=0).train()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(bs, 3, 32, 32, generator=g), torch.randint(0, 10, (bs,), generator=g)
    t = time.perf_counter()
    step(model, x, y)  # first step: allocator and oneDNN primitive set-up
    first = time.perf_counter() - t
    if first < 5: step(model, x, y)  # a second warm-up where it is cheap
    # Enough steps to fill about target_s, at least 3 so the median shrugs off one disturbed step, at most 20.
    times, cpu0, wall0 = [], time.process_time(), time.perf_counter()
    for _ in range(max(3, min(20, round(target_s / max(first, 1e-3))))):
        t = time.perf_counter()
        step(model, x, y)
        times.append(time.perf_counter() - t)
    # CPU seconds per wall second: close to the thread count on an idle machine, lower when another process
    # competed for the cores (then the img/s understate the model).
    cores = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return bs / statistics.median(times), len(times), cores


def main(argv: list[str] | None = None) -> int:
    "Benchmark the models matching --models and write the markdown table."
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', default=None, help="fnmatch pattern over registered names, e.g. 'resnet*'")
    p.add_argument('--bs', type=int, default=128, help='batch size (default 128)')
    p.add_argument('--target-s', type=float, default=8., help='about how long to time each model, seconds')
    p.add_argument('--retries', type=int, default=3, help='re-time a model this often while the cores were shared')
    p.add_argument('--max-wait-s', type=float, default=600., help='longest wait for other processes to go idle')
    p.add_argument('--out', type=Path, default=Path(__file__).parent / 'results' / 'models_cpu.md')
    args = p.parse_args(argv)

    cmd = ' '.join(['python benchmarks/bench_models.py', *(sys.argv[1:] if argv is None else argv)])
    header = [f'# Model zoo throughput on CPU: forward + backward, fp32, batch {args.bs}, 32×32 inputs',
              '',
              f'- CPU: {cpu_name()} ({os.cpu_count()} logical cores); torch {torch.__version__}, '
              f'{torch.get_num_threads()} threads; Python {platform.python_version()}',
              f'- {datetime.date.today().isoformat()}, one run per model, random data; command: `{cmd}`',
              '- MACs: one 32×32 image, Conv2d and Linear only (`cifar_fast.models.model_info`). '
              'Cores used: CPU s per wall s while timed; below the thread count means another process shared them.',
              '']
    rows = ['| model | params | MACs | img/s (median step) | timed steps | cores used |',
            '|---|---:|---:|---:|---:|---:|']
    print('\n'.join(header + rows), flush=True)
    for name in list_models(args.models):
        info = model_info(name)
        wait_idle(args.max_wait_s)
        ips, n, cores = bench(name, args.bs, args.target_s)
        for _ in range(args.retries):
            # Another process took a share of the cores: its slowdown is not the model's, so wait and time again.
            if cores >= 0.9 * torch.get_num_threads(): break
            wait_idle(args.max_wait_s)
            ips, n, cores = max((ips, n, cores), bench(name, args.bs, args.target_s), key=lambda r: r[2])
        rows.append(f"| {name} | {info['params'] / 1e6:.2f}M | {info['macs'] / 1e6:,.0f}M | {ips:,.1f} | {n} "
                    f"| {cores:.2f} |")
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text('\n'.join(header + rows) + '\n')
    print(f'\nwrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

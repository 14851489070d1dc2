"""What each machine choice (cifar_fast.machine) is worth on this CPU, and how close training gets to its peak.

For one model at one batch size: training and inference images/s under every combination of precision (fp32, bf16),
memory format (contiguous, channels_last), torch.compile (off, on) and intra-op threads, each measurement in its own
process, the combinations interleaved and repeated (`--repeats`), so drift in the machine's speed hits all alike.
Then the machine's measured matrix-multiply peak (a 4096² matmul in fp32 and in bf16) and the model's FLOPs per
image (torch's FlopCounterMode: forward, and ×3 for forward + backward), from which the FLOP rate each setting reaches.

    python benchmarks/cpu_choices.py --model fastnet_cpu --bs 512 --repeats 3 --out benchmarks/results/cpu_choices
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(model: str, bs: int, precision: str, channels_last: bool, compile: bool, threads: int, steps: int) -> dict:
    "One setting, in this process: training step and inference images/s on a random batch (speed does not see data)."
    import torch
    import torch.nn.functional as F

    from cifar_fast.models import create_model
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    net = create_model(model)
    x, y = torch.randn(bs, 3, 32, 32), torch.randint(0, 10, (bs,))
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    run = torch.compile(net) if compile else net
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    ac = torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bf16')

    def step():
        with ac: loss = F.cross_entropy(run(x), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    t0 = time.perf_counter(); step(); first = time.perf_counter() - t0  # includes compiling, when on
    for _ in range(3): step()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    train = steps * bs / (time.perf_counter() - t0)
    net.eval()
    with torch.no_grad():
        with ac: run(x)
        t0 = time.perf_counter()
        for _ in range(steps):
            with ac: run(x)
        infer = steps * bs / (time.perf_counter() - t0)
    return dict(train_img_s=train, infer_img_s=infer, first_step_s=first)


def matmul_peak(dtype: str, threads: int, n: int = 4096, reps: int = 10) -> float:
    "GFLOP/s of an n×n matmul in `dtype` (the best of `reps`, after one warm-up)."
    import torch
    torch.set_num_threads(threads)
    dt = dict(fp32=torch.float32, bf16=torch.bfloat16)[dtype]
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b
    best = float('inf')
    for _ in range(reps):
        t0 = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def forward_flops(model: str) -> int:
    "FLOPs of one image's forward pass (multiply-adds count 2), as torch's FlopCounterMode counts them."
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cifar_fast.models import create_model
    net = create_model(model).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad(): net(torch.randn(1, 3, 32, 32))
    return fc.get_total_flops()


def in_child(fn: str, **kw) -> dict | float | int:
    "Run `fn(**kw)` of this file in a fresh Python process (fresh threads, allocator, compile state); its result."
    code = f'import json, sys; sys.path.insert(0, {str(ROOT / "benchmarks")!r}); import cpu_choices as c; ' \
           f'print("RESULT", json.dumps(c.{fn}(**json.loads(sys.argv[1]))))'
    out = subprocess.run([sys.executable, '-c', code, json.dumps(kw)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode: sys.exit(f'{fn}({kw}) failed:\n{out.stderr[-3000:]}')
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith('RESULT ')][-1][7:])


def stats(xs: list[float]) -> str:
    return f'{statistics.mean(xs):,.0f} ± {statistics.stdev(xs):,.0f}' if len(xs) > 1 else f'{xs[0]:,.0f}'


def main(model: str, bs: int, repeats: int, threads: list[int], compile_too: bool, steps: int, out: Path | None):
    settings = [dict(precision=p, channels_last=cl, compile=c, threads=t) for p, cl, c, t in itertools.product(
        ('fp32', 'bf16'), (False, True), (False, True) if compile_too else (False,), threads)]
    rows = {json.dumps(s): [] for s in settings}
    for rep in range(repeats):
        for s in settings:  # interleaved: every setting once per repeat
            r = in_child('measure', model=model, bs=bs, steps=steps, **s)
            rows[json.dumps(s)].append(r)
            print(rep, s, {k: round(v, 1) for k, v in r.items()}, flush=True)
    peaks = {f'{d}_{t}t': in_child('matmul_peak', dtype=d, threads=t) for d in ('fp32', 'bf16') for t in threads}
    fwd = in_child('forward_flops', model=model)
    res = dict(model=model, bs=bs, repeats=repeats, forward_flops_per_image=fwd, matmul_peak_gflops=peaks,
               settings=[dict(**json.loads(k), runs=v) for k, v in rows.items()])
    print(f'\n{model}, batch {bs}; forward {fwd / 1e6:.1f} MFLOP/image, training ≈ 3× that; matmul peak GFLOP/s: '
          + ', '.join(f'{k} {v:,.0f}' for k, v in peaks.items()))
    print('| precision | channels_last | compile | threads | train img/s | infer img/s | training GFLOP/s '
          '| % of peak |')
    print('|---|---|---|---:|---:|---:|---:|---:|')
    for s in res['settings']:
        tr = [r['train_img_s'] for r in s['runs']]
        gf = 3 * fwd * statistics.mean(tr) / 1e9
        peak = peaks[f"{s['precision']}_{s['threads']}t"]
        print(f"| {s['precision']} | {s['channels_last']} | {s['compile']} | {s['threads']} | {stats(tr)} | "
              f"{stats([r['infer_img_s'] for r in s['runs']])} | {gf:,.0f} | {100 * gf / peak:.0f}% |")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / f'{model}_bs{bs}.json').write_text(json.dumps(res, indent=1))


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='fastnet_cpu')
    p.add_argument('--bs', type=int, default=512)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, nargs='+', default=[2])
    p.add_argument('--no-compile', dest='compile_too', action='store_false', help='skip the torch.compile settings')
    p.add_argument('--steps', type=int, default=15, help='timed steps per measurement')
    p.add_argument('--out', type=Path)
    a = p.parse_args()
    main(a.model, a.bs, a.repeats, a.threads, a.compile_too, a.steps, a.out)

"""GPU check: everything the first GPU should measure, in one command that ends within 9 minutes.

On one CUDA GPU, with this checkout, the archive in the git-ignored `.data/` and any missing wheels in `.whl/`
(nothing is fetched from a network), it runs five parts, each with its own time budget, and writes one markdown
table plus one JSON line per run into --out:

  1. airbench94 (the `airbench` package's train94, called as benchmarks/vs_airbench.py calls it) and recipes/speed94.py,
     interleaved after one warm-up of each, n=5 each: TTA accuracy, wall and training seconds on the same pixels,
     each side under its own cuDNN flags; then one profiled run of each (`profiled`: a torch.profiler trace of 20
     steps, host µs and kernels per step, GPU busy fraction, syncs per run from CUDA's sync debug mode);
  2. airbench95 and recipes/speed95.py the same way, n=3 each;
  3. speed94 --speed.muon true, n=3;
  4. training images/s through the Learner of wrn28_3_5, resnet18_5m, resnet56 and vgg16 at their recipes' batch
     size and precision (one epoch on a subset: 20 warm-up batches, then 100 timed ones), and from it the N-GPU
     estimate of `n_gpu_estimate` for N = 1, 2, 4, 8;
  5. one epoch of every recipe in recipes/ on the real data, with its accuracy.

Budgets. The 9 minutes are shared out in BUDGET_S (setup, then parts 1-5). Part k must end by start + the shares of
setup and parts 1..k, so time a part leaves unused passes on to the next, and an overrun is taken from the next.
Before each run the deadline is checked against that run's expected length (the last run of the same kind, else the
part's last run, else 0): a run that would not end in time is not started, and it and the later runs of its kind are
reported as "not run (budget)". Nothing is dropped silently: every planned run is in the table, run or not run, with
the reason.

    python benchmarks/gpu_check.py           # --data .data/cifar10.tgz --out benchmarks/results/gpu_<date>/
    python benchmarks/gpu_check.py --data DIR --dry-run --out /tmp/x   # every part, a few steps, on CPU

--dry-run runs every part through the same code on CPU, smaller: n=1, no warm-up, one epoch of two 10-image batches
(20 training images; 20 test images, as interpretation's 16 top losses need), in one CPU thread (see DRY_THREADS).
airbench's own code needs CUDA, so there it only checks that its entry points import. Part 5 trains two recipes
there (DRY['part5']; tests/test_recipes_learn.py trains every one) and lists the others as not run.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / 'benchmarks'):  # the checkout's cifar_fast, installed or not, and vs_airbench beside this file
    if str(_p) not in sys.path: sys.path.insert(0, str(_p))

# Seconds of the 9 minutes (540 s) for setup and each part. Parts 1-3 from airbench's published times (airbench94
# 3.83 s, airbench95 10.4 s per run on an A100, its README), with ours at up to 3× that: part 1, 6 × (3.8 + 11.5) =
# 92 s plus first-run start-up; part 2, 4 × (10.4 + 31.2) = 166 s; part 3, 3 × 11.5 = 35 s. Parts 4 (4 short runs) and
# 5 (one-epoch runs) are what is left. Measured on an H200 (2026-11-30, docs/benchmarks.md): setup 14 s, parts about
# 50 / 70 / 19 / 14 / 55 s, so the shares are caps with room to spare; raising n is the next lease's choice.
BUDGET_S = {'setup': 30, 1: 150, 2: 170, 3: 50, 4: 60, 5: 80}
PARTS = {1: 'airbench94 vs speed94', 2: 'airbench95 vs speed95', 3: 'speed94 with Muon', 4: 'training images/s',
         5: 'one epoch of each recipe'}
THROUGHPUT_RECIPES = ('wrn28_3_5', 'resnet18_5m', 'resnet56', 'vgg16')
COMPILE_ARGS = '--compile reduce-overhead'  # part 1's third row: speed94 under CUDA graphs
AIRBENCH_ENTRY_POINTS = ('train94', 'train95', 'evaluate', 'CifarLoader')  # what vs_airbench.airbench_run calls
# profile_skip/profile_steps: the profiled window, after the first epochs' steps (speed94: 48 a 50,000-image epoch)
GPU = dict(runs94=5, runs95=3, runs_muon=3, warmups=1, tp_warm=20, tp_timed=100, tp_valid=1000, overrides=[],
           profile_skip=100, profile_steps=20)
# The dry run's part 5 trains two recipes: airbench's techniques (whitening, decoupled units) and a ResNet with TTA 2
DRY = dict(runs94=1, runs95=1, runs_muon=1, warmups=0, tp_warm=1, tp_timed=1, tp_valid=20, profile_skip=0,
           profile_steps=1, part5=('quick', 'resnet56_gpu'),
           overrides=['--epochs', '1', '--data.train_size', '20', '--data.valid_size', '20', '--data.batch_size', '10',
                      '--data.val_batch_size', '20'])
# The dry run checks the code, not speed, in one thread: with another process busy on the same 2 cores, a resnet56
# step at batch 10 took 6.9-8.7 s with 2 threads and 0.16-0.20 s with 1 (2-core Xeon, 2026-11-30).
DRY_THREADS = 1
# Assumed, not measured: the bandwidth one GPU sends at in a ring all-reduce. NVIDIA's H200 datasheet gives PCIe Gen5
# 128 GB/s and NVLink 900 GB/s, both directions together; a ring sends one way, so 64 and 450 GB/s. The default is the
# PCIe figure, so the estimate also holds for a node without NVLink; --link-gbps 450 gives the NVLink one.
LINK_GBPS = 64.


# ---- pure parts: the schedule and the N-GPU estimate (tested without a GPU) ------------------------------------

def deadlines(t0: float, budgets: dict) -> dict:
    "Each part's deadline: t0 + the budgets of every part up to and including it, in order."
    out, t = {}, t0
    for k, b in budgets.items():
        t += b
        out[k] = t
    return out


def fits(now: float, expected_s: float, deadline: float) -> bool:
    "Does a run expected to take `expected_s` seconds, started now, end by the deadline?"
    return now + expected_s <= deadline


def n_gpu_estimate(ips1: float, params: int, bs: int, n: int, link_gbps: float = LINK_GBPS) -> tuple[float, float]:
    """(images/s, efficiency) of n GPUs estimated from one GPU's `ips1`, data-parallel, each GPU keeping the recipe's
    batch `bs` (the global batch grows n×; scale lr with it, README). Per step a GPU computes for bs/ips1 seconds, then
    all-reduces the gradients: params × 4 bytes (fp32: autocast keeps weights and their gradients in fp32), of which a
    ring all-reduce sends 2(n−1)/n through each GPU's link. Efficiency = compute / (compute + all-reduce): no overlap
    with the backward pass (DDP overlaps, so this is low) and no per-message latency (this is high)."""
    if n == 1: return ips1, 1.
    compute_s = bs / ips1
    allreduce_s = 2 * (n - 1) / n * params * 4 / (link_gbps * 1e9)
    eff = compute_s / (compute_s + allreduce_s)
    return n * ips1 * eff, eff


def mean_std(xs: list, fmt: str = '{:.4f}') -> str:
    "'m ± s' over n ≥ 2 values, the value itself for one, '–' for none."
    if not xs: return '–'
    if len(xs) == 1: return fmt.format(xs[0])
    return f'{fmt.format(statistics.mean(xs))} ± {fmt.format(statistics.stdev(xs))}'


# ---- what was planned and what happened -----------------------------------------------------------------------

@dataclass
class Item:
    "One row of the table: a thing run `planned` times (or not at all, with `reason`)."
    part: int
    name: str
    planned: int
    runs: list = field(default_factory=list)  # the reported (non-warm-up) runs
    reason: str | None = None  # why the runs that did not happen did not: budget, a failure, airbench missing
    last_s: float = 0.  # the last run's seconds: the expected length of the next

    def stop(self, reason: str) -> None:
        if self.reason is None: self.reason = reason


@dataclass(eq=False)
class Check:
    "Where results go and what every part shares."
    out: Path
    device: str
    data: str
    cfg: dict
    runs_root: Path
    work: Path
    budgets: dict
    deadline: dict
    link_gbps: float
    airbench: str | None = None  # None: airbench can run; else why not
    items: list = field(default_factory=list)
    failed: bool = False
    part_last_s: dict = field(default_factory=dict)  # part -> its last run's seconds

    def item(self, part: int, name: str, planned: int) -> Item:
        it = Item(part, name, planned)
        self.items.append(it)
        return it

    def line(self, **d) -> None:
        "One JSON line in runs.jsonl, written at once: a run killed later still leaves what it did."
        with open(self.out / 'runs.jsonl', 'a') as f: f.write(json.dumps(d) + '\n')

    def attempt(self, it: Item, fn, warmup: bool = False, **info) -> dict | None:
        "Run `fn` for `it` if the part's deadline allows; record the run, a failure, or that it was not run."
        if it.reason: return None
        # The expected length: this item's last run, else its part's (parts 4 and 5 run each item once), else 0.
        if not fits(time.monotonic(), it.last_s or self.part_last_s.get(it.part, 0.), self.deadline[it.part]):
            it.stop('not run (budget)')
            return None
        t = time.monotonic()
        try: res = fn()
        except Exception as e:  # one failing run costs its item, not the other parts of a 9-minute lease
            msg = f'{type(e).__name__}: {e}'.splitlines()[0][:300]
            it.stop(f'failed ({msg})'); self.failed = True
            self.line(kind='failed', part=it.part, item=it.name, warmup=warmup, error=msg, **info)
            print(f'part {it.part} {it.name}: FAILED {msg}', flush=True)
            return None
        finally:
            it.last_s = self.part_last_s[it.part] = time.monotonic() - t
            free_memory()
        if not warmup: it.runs.append(res)
        self.line(kind='run', part=it.part, item=it.name, warmup=warmup, **info, **res)
        print(f'part {it.part} {it.name}{" (warm-up)" if warmup else ""}: {json.dumps(res)}', flush=True)
        return res


@contextlib.contextmanager
def chdir(path: Path):
    "contextlib.chdir, which Python 3.10 (the project's floor) lacks."
    old = os.getcwd()
    os.chdir(path)
    try: yield
    finally: os.chdir(old)


def free_memory() -> None:
    import torch
    gc.collect()
    if torch.cuda.is_available(): torch.cuda.empty_cache()


# ---- one run of each kind -------------------------------------------------------------------------------------

def timed(fn, device: str):
    "(fn(), seconds), the GPU synchronised before and after so queued kernels are counted."
    import torch
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    sync(); t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def resolved(c: Check, recipe: str, args: list[str]):
    "recipes/<recipe>.py with the data, the dry run's overrides and `args`, parsed as the CLI parses them."
    from cifar_fast.recipe import apply_overrides, load_recipe, parse_overrides
    return apply_overrides(load_recipe(ROOT / 'recipes' / f'{recipe}.py'),
                           parse_overrides(['--data.source', c.data, *c.cfg['overrides'], *args]))


def ours(c: Check, recipe: str, args: list[str], extra_cbs=()) -> dict:
    "`train` the recipe file with CLI-style overrides on the check's device; the run folder is read, then removed."
    from cifar_fast import train
    r = resolved(c, recipe, args)
    res, secs = timed(lambda: train(r, runs_root=c.runs_root, device=c.device, show_progress=False,
                                    extra_cbs=extra_cbs), c.device)
    s = res.summary
    shutil.rmtree(res.run_dir, ignore_errors=True)
    if s.get('state') == 'interrupted': raise RuntimeError(f'{recipe} was interrupted')
    acc = s['test_accuracy_tta'] if s['test_accuracy_tta'] is not None else s['test_accuracy']
    import torch
    return dict(accuracy=acc, tta_level=s['tta_level'], test_accuracy=s['test_accuracy'], wall_s=round(secs, 3),
                train_s=s['train_seconds'], compile_s=s['compile_seconds'], images_per_s=s['train_images_per_sec'],
                epochs=s['epochs'], params=s['params'], batch_size=r.data.batch_size, precision=s['precision'],
                seed=r.seed, cudnn=dict(deterministic=torch.backends.cudnn.deterministic,
                                        benchmark=torch.backends.cudnn.benchmark))


def airbench(c: Check, pair: str) -> dict:
    "airbench's own train{pair} + TTA evaluation, timed by vs_airbench.airbench_run, in the folder holding its data."
    from vs_airbench import airbench_run
    with chdir(c.work):  # airbench opens 'cifar10/train.pt' relative to the working folder
        r = airbench_run(pair)
    return dict(accuracy=float(r['accuracy_tta']), tta_level=2, wall_s=round(r['wall_s'], 3),
                train_s=round(r['train_s'], 3), cudnn=r['cudnn'])


def profiled(c: Check, fn) -> dict:
    """One run of `fn` under torch.profiler, its trace kept for `profile_steps` optimiser steps after `profile_skip`
    (every optimiser's steps, airbench's too, move the profiler's window through a step hook), and, on a GPU, under
    CUDA's sync debug mode for the whole run. Per step: host µs (the profiler's step ranges), kernels launched, the
    GPU's busy fraction of the window; syncs per run (the debug mode's warnings). The trace goes to --out."""
    import warnings
    import torch
    from torch.autograd import DeviceType
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.profiler import ProfilerActivity, profile, schedule
    cuda = c.device == 'cuda'
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sched = schedule(wait=c.cfg['profile_skip'], warmup=1, active=c.cfg['profile_steps'], repeat=1)
    with warnings.catch_warnings(record=True) as caught, profile(activities=acts, schedule=sched) as prof:
        warnings.simplefilter('always')
        hook = register_optimizer_step_post_hook(lambda *a: prof.step())
        if cuda: torch.cuda.set_sync_debug_mode('warn')
        try: res = fn()
        finally:
            hook.remove()
            if cuda: torch.cuda.set_sync_debug_mode(0)
    steps = [e for e in prof.events() if e.name.startswith('ProfilerStep')]
    if not steps: raise RuntimeError(f"no profiled step: the run had fewer than {c.cfg['profile_skip'] + 2} steps")
    span = (max(e.time_range.end for e in steps) - min(e.time_range.start for e in steps)) / 1e6
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    trace = c.out / f"trace_{res.get('name', 'run')}_{len(list(c.out.glob('trace_*')))}.json"
    prof.export_chrome_trace(str(trace))
    syncs = sum('synchroniz' in str(w.message) for w in caught) if cuda else None
    return dict(res, profiled_steps=len(steps), host_us_per_step=round(span / len(steps) * 1e6, 1),
                kernels_per_step=round(len(kernels) / len(steps), 1),
                gpu_busy=round(sum(e.device_time for e in kernels) / 1e6 / span, 3) if cuda else None,
                syncs_per_run=syncs, trace=trace.name)


def step_timer(skip: int, device: str):
    "A fastai callback timing the training batches after the first `skip` (device synchronised at both ends)."
    import torch
    from fastai.callback.core import Callback
    from fastai.torch_core import find_bs
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

    class StepTimer(Callback):
        order = 100  # after the other callbacks' before_batch (precision, mixing): time the whole step they make
        def before_fit(self): self.i, self.n, self.t0, self.secs = 0, 0, None, None
        def before_batch(self):
            if self.training and self.i == skip: sync(); self.t0 = time.perf_counter()
        def after_batch(self):
            if not self.training: return
            if self.t0 is not None: self.n += find_bs(self.learn.yb)
            self.i += 1
        def after_train(self):
            if self.t0 is not None: sync(); self.secs = time.perf_counter() - self.t0
    return StepTimer()


def throughput(c: Check, recipe: str) -> dict:
    "Training images/s of the recipe's model, batch and precision through `train`, after `tp_warm` batches."
    bs = resolved(c, recipe, []).data.batch_size
    n_batches = c.cfg['tp_warm'] + c.cfg['tp_timed']
    timer = step_timer(c.cfg['tp_warm'], c.device)
    res = ours(c, recipe, ['--epochs', '1', '--data.train_size', str(n_batches * bs),
                           '--data.valid_size', str(c.cfg['tp_valid'])], extra_cbs=[timer])
    if not timer.secs: raise RuntimeError(f'no timed batches (fewer than {n_batches} in the epoch)')
    ips = timer.n / timer.secs
    est = {n: n_gpu_estimate(ips, res['params'], bs, n, c.link_gbps) for n in (1, 2, 4, 8)}
    return dict(images_per_s=round(ips, 1), timed_images=timer.n, timed_s=round(timer.secs, 3), params=res['params'],
                batch_size=bs, precision=res['precision'], wall_s=res['wall_s'], link_gbps=c.link_gbps,
                n_gpu=[dict(n=n, images_per_s=round(v, 1), efficiency=round(e, 4)) for n, (v, e) in est.items()])


# ---- the parts ------------------------------------------------------------------------------------------------

def part_pair(c: Check, part: int, pair: str, n: int) -> None:
    "airbench{pair} and speed{pair}: warm-ups, then n runs of each, interleaved."
    ab, us = c.item(part, f'airbench{pair}', n), c.item(part, f'speed{pair}', n)
    if c.airbench: ab.stop(c.airbench)
    run_ab = lambda: airbench(c, pair)
    run_us = lambda seed, *args: lambda: ours(c, f'speed{pair}', ['--seed', str(seed), *args])
    # Part 1 also runs speed94 with torch.compile's CUDA graphs, the step's launches replayed from one capture; its
    # warm-up compiles into the Inductor cache, so each timed run's compile_s is the cache's load
    graphs = c.item(part, f'speed{pair} {COMPILE_ARGS}', n) if part == 1 else None
    if graphs and c.device == 'cpu': graphs.stop('not run (dry run: compiling takes ~30 s on a CPU, and CUDA graphs '
                                                 'need a GPU; tests/test_speed.py compiles by mode)')
    for w in range(c.cfg['warmups']):  # cuDNN autotuning, allocator, caches: not reported (seeds apart from the runs')
        c.attempt(ab, run_ab, warmup=True); c.attempt(us, run_us(10_000 + w), warmup=True, run=w)
        if graphs: c.attempt(graphs, run_us(10_000 + w, *COMPILE_ARGS.split()), warmup=True, run=w)
    for i in range(n):
        c.attempt(ab, run_ab, run=i); c.attempt(us, run_us(i), run=i)
        if graphs: c.attempt(graphs, run_us(i, *COMPILE_ARGS.split()), run=i)
    if part != 1: return
    # Where each side's step time goes: one more run of each, profiled (its time is not in the rows above)
    pab, pus = c.item(part, f'airbench{pair} (profiled)', 1), c.item(part, f'speed{pair} (profiled)', 1)
    if c.airbench: pab.stop(c.airbench)
    c.attempt(pab, lambda: profiled(c, lambda: dict(run_ab(), name=f'airbench{pair}')))
    c.attempt(pus, lambda: profiled(c, lambda: dict(run_us(20_000)(), name=f'speed{pair}')))


def part_muon(c: Check, n: int) -> None:
    it = c.item(3, 'speed94 --speed.muon true', n)
    for i in range(n): c.attempt(it, lambda: ours(c, 'speed94', ['--speed.muon', 'true', '--seed', str(i)]), run=i)


def part_throughput(c: Check) -> None:
    for name in THROUGHPUT_RECIPES: c.attempt(c.item(4, name, 1), lambda: throughput(c, name))


def part_epochs(c: Check) -> None:
    for name in recipe_names():
        it = c.item(5, name, 1)
        if c.cfg.get('part5') and name not in c.cfg['part5']:
            it.stop('not run (dry run: two recipes check the code; tests/test_recipes_learn.py trains every recipe)')
        c.attempt(it, lambda: ours(c, name, ['--epochs', '1']))


def recipe_names() -> list[str]: return sorted(p.stem for p in (ROOT / 'recipes').glob('*.py'))


def planned_items(c: Check, part: int) -> list[tuple[str, int]]:
    "What a part would run, for the rows of a part that was not selected."
    return {1: [('airbench94', c.cfg['runs94']), ('speed94', c.cfg['runs94']),
                (f'speed94 {COMPILE_ARGS}', c.cfg['runs94']), ('airbench94 (profiled)', 1), ('speed94 (profiled)', 1)],
            2: [('airbench95', c.cfg['runs95']), ('speed95', c.cfg['runs95'])],
            3: [('speed94 --speed.muon true', c.cfg['runs_muon'])],
            4: [(n, 1) for n in THROUGHPUT_RECIPES], 5: [(n, 1) for n in recipe_names()]}[part]


# ---- set-up and the report ------------------------------------------------------------------------------------

def airbench_ready(work: Path, dry: bool) -> str | None:
    "None when airbench can run here; else the reason it cannot. Installs it from .whl/ only, never a network."
    def entry_points():
        with chdir(work):  # an airbench that builds a loader on import finds the data written here
            import airbench as ab
        missing = [n for n in AIRBENCH_ENTRY_POINTS if not hasattr(ab, n)]
        return f"not run (airbench lacks {', '.join(missing)})" if missing else None
    try: bad = entry_points()
    except ImportError:
        wheels = ROOT / '.whl'
        if dry: return 'not run (airbench not installed)'
        if not list(wheels.glob('airbench-*.whl')): return 'not run (airbench not installed, no wheel in .whl/)'
        p = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index', '--find-links', str(wheels),
                            'airbench'], capture_output=True, text=True)
        if p.returncode:
            why = (p.stderr.strip().splitlines() or ['?'])[-1][:200]
            return f'not run (airbench not installed; pip from .whl/ failed: {why})'
        importlib.invalidate_caches()
        try: bad = entry_points()
        except ImportError as e: return f'not run (airbench installed but does not import: {e})'
    if bad: return bad
    return f"not run (airbench needs CUDA; dry run: {', '.join(AIRBENCH_ENTRY_POINTS)} import)" if dry else None


def driver_version() -> str:
    "The NVIDIA driver from nvidia-smi, else the CUDA driver API version torch reports, else 'none'."
    try:
        p = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'], capture_output=True,
                           text=True, timeout=20)
        if p.returncode == 0 and p.stdout.strip(): return p.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired): pass
    import torch
    if torch.cuda.is_available():
        v = torch._C._cuda_getDriverVersion()  # e.g. 13000: the driver's CUDA API level, not its release number
        return f'CUDA driver API {v // 1000}.{v % 1000 // 10} (from torch; nvidia-smi not found)'
    return 'none'


def environment(device: str, dry: bool) -> dict:
    import fastai
    import timm
    import torch
    from importlib.metadata import PackageNotFoundError, version
    from bench_models import cpu_name
    try: ab = version('airbench')
    except PackageNotFoundError: ab = None
    if device == 'cuda': gpu = torch.cuda.get_device_name()
    else: gpu = f'none: dry run on CPU ({cpu_name()}, {os.cpu_count()} logical cores)'
    return dict(date=datetime.date.today().isoformat(), gpu=gpu, driver=driver_version(), cuda=torch.version.cuda,
                torch=torch.__version__, fastai=fastai.__version__, timm=timm.__version__, airbench=ab,
                python=platform.python_version(), dry_run=dry)


def render(c: Check, env: dict, cmd: str, used: dict, total_s: float) -> str:
    "The markdown report: the machine and versions, then one row per item, run or not run."
    title = 'GPU check' + (' · DRY RUN on CPU: checks the code, measures nothing' if env['dry_run'] else '')
    head = [f"# {title} · {env['date']}", '',
            f"- GPU: {env['gpu']}; driver {env['driver']}; CUDA {env['cuda']}; torch {env['torch']}, fastai "
            f"{env['fastai']}, timm {env['timm']}, airbench {env['airbench'] or 'not installed'}; "
            f"Python {env['python']}",
            f'- data: `{c.data}`; command: `{cmd}`',
            f"- wall {total_s:.0f} s of {sum(c.budgets.values()):.0f} s budgeted; per part (s, budget / used): "
            + ', '.join(f'{k} {b:.0f}/{used.get(k, 0):.0f}' for k, b in c.budgets.items()),
            '- accuracy: test accuracy with the TTA level of the run (airbench and speed*: level 2), else plain; '
            'mean ± std over n runs, warm-up runs excluded. wall s: one run, from recipe to finished run folder '
            '(ours) or train + TTA evaluation (airbench), GPU synchronised; train s: training alone (our '
            "summary's train_seconds; airbench's train call). Each side under its own cuDNN flags (in runs.jsonl).",
            '- profiled rows (part 1): one more run each under torch.profiler, a window of optimiser steps traced '
            '(trace_*.json beside this report): host µs per step, kernels per step, GPU busy fraction of the window, '
            "syncs per run from CUDA's sync debug mode.",
            f'- images/s (part 4): training batches after the warm-up ones, GPU synchronised. N-GPU estimate: '
            f'`n_gpu_estimate` in benchmarks/gpu_check.py, at an assumed {c.link_gbps:g} GB/s link (not measured).',
            '', '| part | what | n | accuracy | wall s / run | train s / run | train images/s | note |',
            '|---|---|---:|---:|---:|---:|---:|---|']
    rows = []
    for it in c.items:
        acc = mean_std([r['accuracy'] * 100 for r in it.runs if 'accuracy' in r], '{:.2f}')
        acc = acc if acc == '–' else acc + '%'
        wall = mean_std([r['wall_s'] for r in it.runs], '{:.2f}')
        ips = mean_std([r['images_per_s'] for r in it.runs if 'images_per_s' in r], '{:,.0f}')  # airbench has none
        train = mean_std([r['train_s'] for r in it.runs if 'train_s' in r], '{:.2f}')
        rows.append(f"| {it.part} | {it.name} | {len(it.runs)} | {acc} | {wall} | {train} | {ips} | {note(it)} |")
    return '\n'.join(head + rows) + '\n'


def note(it: Item) -> str:
    "The table's note: the setting of parts 4 and 5, the N-GPU estimate, and what was not run and why."
    out, r = [], it.runs[0] if it.runs else None
    if it.part == 4 and r:
        est = r['n_gpu']
        out.append(f"batch {r['batch_size']}, {r['precision']}, {r['params'] / 1e6:.2f}M params; N=1/2/4/8: "
                   + ' / '.join(f"{e['images_per_s']:,.0f}" for e in est) + ' img/s (efficiency '
                   + ' / '.join(f"{e['efficiency']:.3f}" for e in est) + ')')
    if r and 'host_us_per_step' in r:
        busy = '–' if r['gpu_busy'] is None else f"{r['gpu_busy']:.1%}"
        out.append(f"{r['profiled_steps']} steps traced: host {r['host_us_per_step']:,.0f} µs/step, "
                   f"{r['kernels_per_step']:g} kernels/step, GPU busy {busy}, syncs/run {r['syncs_per_run']}")
    if it.part == 5 and r: out.append(f"1 epoch, TTA level {r['tta_level']}, {r['precision']}, batch {r['batch_size']}")
    if it.reason: out.append(f'{it.planned - len(it.runs)} of {it.planned} {it.reason}')
    return '; '.join(out)


def main(argv: list[str] | None = None) -> int:
    "Parse, set up (decode the data once, write airbench's copy, find airbench), run the parts, write the report."
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=str(ROOT / '.data' / 'cifar10.tgz'), help='CIFAR-10 (default .data/cifar10.tgz)')
    p.add_argument('--out', type=Path, default=None, help='output folder (default benchmarks/results/gpu_<date>/)')
    p.add_argument('--dry-run', action='store_true', help='every part, a few steps each, on CPU')
    p.add_argument('--parts', type=int, nargs='+', default=list(PARTS), choices=list(PARTS))
    p.add_argument('--link-gbps', type=float, default=LINK_GBPS, help='assumed all-reduce link bandwidth, GB/s')
    p.add_argument('--budget', type=float, default=sum(BUDGET_S.values()),
                   help='total seconds, shared out in the proportions of BUDGET_S (default 540)')
    a = p.parse_args(argv)
    t0 = time.monotonic()
    import torch
    if not a.dry_run and not torch.cuda.is_available():
        print('gpu_check.py needs a CUDA GPU; use --dry-run to check the code on CPU.', file=sys.stderr)
        return 2
    data = Path(a.data).resolve()
    if not data.exists():
        print(f'--data {data} does not exist: copy the archive to .data/cifar10.tgz or pass --data.', file=sys.stderr)
        return 2
    out = (a.out or ROOT / 'benchmarks' / 'results' / f'gpu_{datetime.date.today().isoformat()}').resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / 'runs.jsonl').unlink(missing_ok=True)
    cmd = ' '.join(['python benchmarks/gpu_check.py', *(sys.argv[1:] if argv is None else argv)])
    device = 'cpu' if a.dry_run else 'cuda'
    if a.dry_run: torch.set_num_threads(DRY_THREADS)
    budgets = {k: b * a.budget / sum(BUDGET_S.values()) for k, b in BUDGET_S.items()}
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as tmp:
        from cifar_fast.data import cifar_data
        from vs_airbench import write_airbench_data
        cifar_data(str(data), progress=False)  # decode once into the cache: every part reads the same pixels
        write_airbench_data(str(data), Path(tmp) / 'cifar10')
        c = Check(out, device, str(data), DRY if a.dry_run else GPU, Path(tmp) / 'runs', Path(tmp), budgets,
                  deadlines(t0, budgets), a.link_gbps, airbench_ready(Path(tmp), a.dry_run))
        env = environment(device, a.dry_run)
        c.line(kind='env', **env, command=cmd)
        run_parts(c, a.parts, lambda used: write_report(c, render(c, env, cmd, used, time.monotonic() - t0)),
                  used={'setup': time.monotonic() - t0})
    print('\n' + (out / 'gpu_check.md').read_text() + f'\nwrote {out}/gpu_check.md and runs.jsonl', flush=True)
    return 1 if c.failed else 0


def run_parts(c: Check, selected: list[int], report, used: dict) -> None:
    "Each part in turn (a part not selected is reported as not run); the report rewritten after each."
    steps = {1: lambda: part_pair(c, 1, '94', c.cfg['runs94']), 2: lambda: part_pair(c, 2, '95', c.cfg['runs95']),
             3: lambda: part_muon(c, c.cfg['runs_muon']), 4: lambda: part_throughput(c), 5: lambda: part_epochs(c)}
    for k, step in steps.items():
        t = time.monotonic()
        if k in selected: step()
        else:
            for name, n in planned_items(c, k): c.item(k, name, n).stop('not run (not selected: --parts)')
        used[k] = time.monotonic() - t
        for it in c.items:
            if it.part == k and it.reason:
                c.line(kind='not_run', part=k, item=it.name, reason=it.reason, runs_done=len(it.runs),
                       runs_planned=it.planned)
        report(used)


def write_report(c: Check, text: str) -> None:
    "gpu_check.md, replaced whole: a run killed later still leaves the table of the parts before."
    tmp = c.out / 'gpu_check.md.tmp'
    tmp.write_text(text)
    tmp.replace(c.out / 'gpu_check.md')


if __name__ == '__main__':
    sys.exit(main())

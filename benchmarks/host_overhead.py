"""What one training step costs the host: the real Learner of a recipe (`speed94`, `quick`) against a plain PyTorch loop
of the same model, optimiser, schedule and augmentation, on the CPU at a size where every op computes in microseconds,
so the Python path around the ops dominates as it does on a GPU (a CPU proxy of the GPU's host cost).

    python benchmarks/host_overhead.py --recipes speed94 quick --repeats 5

Both sides run in this process, one thread, fp32, NCHW, batch 2, the recipe's net at widths 16/16/16, on a synthetic
set (the images' content does not change the host path). Each side trains one epoch; the step is measured between two
consecutive starts of a training batch, so it includes the loader, every callback event and the optimiser step.
Interleaved (Learner, plain, Learner, ...), `--repeats` times. Per training step it reports:
- µs of wall time and of this thread's CPU time: median and interquartile range over every measured step of every
  repeat (uninstrumented runs; with one torch thread the CPU time is the host's work, which other processes on a
  busy machine do not inflate);
- from one instrumented run each, over `WINDOW` steps (not the epoch's first, where epoch-level reads happen):
  Python function calls (sys.setprofile 'call' events), callback invocations (fastai `Callback.__call__`) and
  handlers run, `__torch_function__` dispatches of fastai's typed tensors, aten ops (a TorchDispatchMode, views
  excluded) and would-sync ops: `aten._local_scalar_dense` (`.item()`, `bool()`, `float()` of a tensor), `.cpu()`,
  `.tolist()`, `.numpy()` and new tensors from Python data (`torch.tensor`, `aten.lift_fresh`), each of which waits for
  or copies from the host on a GPU;
- the plain loop's compute share: the self time of its aten kernels (torch.profiler) over its step time.
The counts do not depend on the machine, so tests/test_host_overhead.py asserts them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (16, 16, 16)  # the recipes' net, narrowed until a batch-2 step of the plain loop takes a few ms here
BS = 2
N_TRAIN = 80  # 40 steps an epoch at batch 2
N_VALID = 10
WINDOW = (10, 30)  # the steps counted: the 11th to the 30th start of a training batch (20 steps)
SYNC_OPS = {'_local_scalar_dense', 'lift_fresh'}
SYNC_METHODS = {'item', 'cpu', 'tolist', 'numpy'}
NEW_TENSOR_FUNCS = {'tensor', 'as_tensor'}


# ---- counting -------------------------------------------------------------------------------------------------

class _AtenCounter(TorchDispatchMode):
    "Every aten op that reaches a kernel, views excluded (they allocate nothing and launch nothing on a GPU)."
    def __init__(self, counts: Counter): super().__init__(); self.counts = counts
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view: self.counts['aten'] += 1
        name = func.overloadpacket.__name__
        if name in SYNC_OPS: self.counts[f'sync:{name}'] += 1
        return func(*args, **(kwargs or {}))


class _PythonSyncCounter(TorchFunctionMode):
    "The Python-level calls that would copy to or wait for the host on a GPU; on the CPU some reach no aten op."
    def __init__(self, counts: Counter): super().__init__(); self.counts = counts
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, '__name__', '')
        if name in SYNC_METHODS and args and isinstance(args[0], torch.Tensor): self.counts[f'sync:.{name}()'] += 1
        elif name in NEW_TENSOR_FUNCS and args and not isinstance(args[0], torch.Tensor):
            self.counts[f'sync:torch.{name}'] += 1
        elif name == 'to' and _to_host(args, kwargs or {}): self.counts['sync:.to(cpu)'] += 1
        return func(*args, **(kwargs or {}))


def _to_host(args, kwargs) -> bool:
    dev = kwargs.get('device', next((a for a in args[1:] if isinstance(a, (str, torch.device))), None))
    return dev is not None and torch.device(dev).type == 'cpu' and args[0].device.type != 'cpu'


class StepCounts:
    """Counts between `start()` and `stop()`. kind 'python': Python function calls, fastai callback invocations and
    handlers, typed-tensor `__torch_function__` dispatches (sys.setprofile alone); kind 'torch': aten ops and
    would-syncs (two torch modes, whose own Python calls would otherwise be counted)."""
    def __init__(self, kind: str):
        self.kind = kind
        from fastai.callback.core import Callback, _events
        from fastai.torch_core import TensorBase
        self.counts, self._stack = Counter(), contextlib.ExitStack()
        self._cb_call = Callback.__call__.__code__
        self._events = set(_events)
        self._tb_tf = TensorBase.__torch_function__.__func__.__code__

    def _profile(self, frame, event, arg):
        if event != 'call': return
        c, code = self.counts, frame.f_code
        c['python_calls'] += 1
        if code is self._cb_call: c['callback_calls'] += 1
        elif code is self._tb_tf: c['torch_function'] += 1
        elif code.co_name in self._events and code.co_argcount == 1 and _is_callback(frame.f_locals.get('self')):
            c['handlers'] += 1

    def start(self):
        if self.kind == 'python': sys.setprofile(self._profile)
        else:
            self._stack.enter_context(_PythonSyncCounter(self.counts))
            self._stack.enter_context(_AtenCounter(self.counts))

    def stop(self):
        sys.setprofile(None)
        self._stack.close()


def _is_callback(o) -> bool:
    from fastai.callback.core import Callback
    return isinstance(o, Callback)


def _now() -> tuple[float, float]:
    """(wall, this thread's CPU) seconds. With one torch thread the step runs on this thread alone, so its CPU time is
    the host's work, and a busy machine (other processes taking turns on the cores) inflates only the wall time."""
    return time.perf_counter(), time.thread_time()


def _durations(starts: list) -> list[tuple[float, float]]:
    "Each step's (wall, CPU) seconds, from consecutive step starts."
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(starts, starts[1:])]


# ---- the Learner side -----------------------------------------------------------------------------------------

def _probe_cls():
    from fastai.callback.core import Callback

    class StepProbe(Callback):
        "First at every event: the time at each training batch's start, and counting over the WINDOW's steps."
        order = -1000
        def __init__(self, counts: StepCounts | None): self.counts, self.starts, self.k = counts, [], 0
        def before_batch(self):
            if not self.training: return
            self.starts.append(_now())
            if self.counts is not None and self.k == WINDOW[0]: self.counts.start()
            if self.counts is not None and self.k == WINDOW[1]: self.counts.stop()
            self.k += 1
        def after_train(self):
            if self.counts is not None and WINDOW[0] < self.k <= WINDOW[1]: self.counts.stop()
    return StepProbe


def small_recipe(name: str, data_dir: Path):
    "The shipped recipe, narrowed and shrunk to the proxy's size; everything else (callbacks, schedule) as shipped."
    import dataclasses
    from cifar_fast.recipe import load_recipe
    r = load_recipe(ROOT / 'recipes' / f'{name}.py')
    data = dataclasses.replace(r.data, source=str(data_dir), batch_size=BS, val_batch_size=N_VALID,
                               train_size=N_TRAIN, valid_size=N_VALID, num_workers=0)
    return r.replace(model_kwargs={**r.model_kwargs, 'widths': WIDTHS}, data=data, epochs=1, precision='fp32',
                     channels_last=False, compile=False, threads=1, tta=0)


def learner_epoch(r, runs: Path, counts: StepCounts | None = None) -> list[float]:
    "One epoch of `r` through `cifar_fast.train` (the run folder's whole story); the durations of its training steps."
    from cifar_fast.training import train
    probe = _probe_cls()(counts)
    train(r, runs_root=runs, extra_cbs=[probe], show_progress=False)
    return _durations(probe.starts)


# ---- the plain side -------------------------------------------------------------------------------------------

def plain_epoch(r, data_dir: Path, counts: StepCounts | None = None) -> list[float]:
    """The same model, parameter groups, schedule, loss and augmentation as the Learner's, written as a plain loop over
    the loader's tensors: what airbench does per step."""
    from cifar_fast.callback.schedule import lr_schedule
    from cifar_fast.data import augment as A, cifar_data
    from cifar_fast.models import create_model
    from cifar_fast.optim import param_groups, splitter
    from cifar_fast.callback.speed import init_whitening  # noqa: F401  (the Learner's stem, set the same way below)
    from cifar_fast.callback.speed import downscale
    from fastai.torch_core import set_seed
    set_seed(r.seed, reproducible=True)
    torch.set_num_threads(1)
    cd = cifar_data(str(data_dir), r.data.train_size, r.data.valid_size, progress=False)
    x = torch.from_numpy(cd.arrays.x['train'][cd.idx['train']])  # uint8 (N, 3, 32, 32)
    y = torch.from_numpy(cd.arrays.y['train'][cd.idx['train']]).long()
    model = create_model(r.model, **r.model_kwargs)
    if r.speed.whiten:
        model.init_whitening(A.normalize(x[:N_TRAIN]), 5e-4); model.whiten.weight.requires_grad_(False)
    groups = param_groups(r, r.lr)
    lrs = groups.lrs()
    opt = torch.optim.SGD([dict(params=ps, lr=lr, weight_decay=g.wd) for ps, g, lr in
                           zip(splitter(r)(model), groups.groups, groups.lrs())], lr=groups.lr,
                          momentum=r.momentum, nesterov=r.nesterov)
    n_steps = len(x) // r.data.batch_size
    sched = lr_schedule(r.schedule, 1., r.div, r.final_div, r.pct_start, r.warmup, r.milestones, r.gamma)
    lr_factors = [sched(i / n_steps) for i in range(n_steps)]  # the schedule as plain floats, computed once
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in A.CIFAR_STATS)
    g = torch.Generator().manual_seed(r.seed)
    perm = torch.randperm(len(x), generator=g)
    shifts, flips = A.draw_shifts(len(x), r.data.translate, g), A.draw_flips(len(x), g)
    starts, bs = [], r.data.batch_size
    model.train()
    for i in range(n_steps):
        starts.append(_now())
        if counts is not None and i == WINDOW[0]: counts.start()
        if counts is not None and i == WINDOW[1]: counts.stop()
        sl = slice(i * bs, (i + 1) * bs)
        idx = perm[sl]
        xb = A.flip(A.translate(x[idx], shifts[sl], r.data.pad_mode), flips[sl])
        xb = ((xb.float().div_(255.) - mean) / std)
        if r.speed.low_res: xb = downscale(xb, r.speed.low_res)  # the proxy's one epoch is a low-res one
        loss = F.cross_entropy(model(xb), y[idx], label_smoothing=r.label_smoothing,
                               reduction=r.speed.loss_reduction)
        loss.backward()
        for pg, lr in zip(opt.param_groups, lrs): pg['lr'] = lr * lr_factors[i]
        opt.step()
        opt.zero_grad(set_to_none=True)
    starts.append(_now())
    return _durations(starts)


def plain_compute_share(r, data_dir: Path) -> float:
    "The self time of the plain loop's aten kernels over its wall time, from torch.profiler: an upper bound on compute."
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter(); plain_epoch(r, data_dir); wall = time.perf_counter() - t0
    aten = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith('aten::')) / 1e6
    return aten / wall


# ---- the report -----------------------------------------------------------------------------------------------

def synthetic_set(root: Path) -> Path:
    from cifar_fast.data import make_synthetic_cifar
    return make_synthetic_cifar(root / 'synthetic', n_train=N_TRAIN // 10, n_test=N_VALID // 10)


def per_step(counts: StepCounts) -> dict:
    n = WINDOW[1] - WINDOW[0]
    return {k: round(v / n, 2) for k, v in sorted(counts.counts.items())}


def count_steps(name: str, data_dir: Path, runs: Path) -> dict:
    "Per-step counts of the Learner and the plain loop for recipe `name` (deterministic: the test suite asserts them)."
    r = small_recipe(name, data_dir)
    learner_epoch(r, runs); plain_epoch(r, data_dir)  # warm caches (imports, registries): count a steady state
    out = dict(learner={}, plain={})
    for kind in ('python', 'torch'):
        lc, pc = StepCounts(kind), StepCounts(kind)
        learner_epoch(r, runs, lc); plain_epoch(r, data_dir, pc)
        out['learner'].update(per_step(lc)); out['plain'].update(per_step(pc))
    return out


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def measure(name: str, repeats: int, data_dir: Path, runs: Path) -> dict:
    r = small_recipe(name, data_dir)
    learner_epoch(r, runs); plain_epoch(r, data_dir)  # warm-up, not kept
    steps = dict(learner=[], plain=[])
    for _ in range(repeats):  # interleaved: drift in the machine's speed hits both alike
        steps['learner'] += learner_epoch(r, runs)[1:]  # the first step pays the epoch's set-up
        steps['plain'] += plain_epoch(r, data_dir)[1:]
    us = {k: [s[0] * 1e6 for s in v] for k, v in steps.items()}
    cpu = {k: [s[1] * 1e6 for s in v] for k, v in steps.items()}
    q, qc = {k: quartiles(v) for k, v in us.items()}, {k: quartiles(v) for k, v in cpu.items()}
    counts = count_steps(name, data_dir, runs)
    la, pa = counts['learner'].get('aten', 0), counts['plain'].get('aten', 0)
    return dict(recipe=name, repeats=repeats, steps_per_side=len(us['plain']),
                us_median={k: round(v[1], 1) for k, v in q.items()},
                us_iqr={k: [round(v[0], 1), round(v[2], 1)] for k, v in q.items()},
                time_ratio=round(q['learner'][1] / q['plain'][1], 3),
                cpu_us_median={k: round(v[1], 1) for k, v in qc.items()},
                cpu_us_iqr={k: [round(v[0], 1), round(v[2], 1)] for k, v in qc.items()},
                cpu_ratio=round(qc['learner'][1] / qc['plain'][1], 3), aten_ratio=round(la / pa, 3) if pa else None,
                plain_compute_share=round(plain_compute_share(r, data_dir), 3), counts=counts)


def main(recipes, repeats: int) -> list[dict]:
    from cifar_fast.rundir import cpu_model
    torch.set_num_threads(1)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = synthetic_set(Path(tmp))
        for name in recipes:
            res = measure(name, repeats, data_dir, Path(tmp) / 'runs')
            res.update(cpu=cpu_model(), torch=torch.__version__, threads=torch.get_num_threads(), bs=BS,
                       widths=WIDTHS)
            print(json.dumps(res), flush=True)
            out.append(res)
    return out


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--recipes', nargs='+', default=['speed94', 'quick'])
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--out', help='also write the results as JSON here')
    a = p.parse_args()
    res = main(a.recipes, a.repeats)
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))

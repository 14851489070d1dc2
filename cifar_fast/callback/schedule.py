"""Learning-rate (and momentum) schedules as fastai `ParamScheduler`s, built from fastai's annealing pieces."""
from __future__ import annotations

import struct

import numpy as np
from fastai.callback.schedule import SchedCos, SchedLin, SchedNo

from .lean import LeanParamScheduler


def combine_scheds(pcts, scheds):
    """fastai's `combine_scheds` (the same values, bit for bit) on Python floats: fastai's compares, indexes and
    divides float32 tensors and reads the result back with `.item()`, ten tensor ops and three scalar reads each time
    the schedule is read, i.e. for every batch and hyperparameter (a GPU sync apiece if the tensors lived there).
    Its float32 steps are kept: each double result is rounded to float32, which for one subtraction or division gives
    exactly float32's own result (double has more than twice float32's precision, so the double rounding is
    innocuous: Figueroa 1995). tests/test_host_overhead.py compares the two on thousands of points."""
    if sum(pcts) != 1.: raise ValueError(f'the pieces of a schedule must add up to 1, not {sum(pcts)} ({pcts})')
    edges = [float(e) for e in np.cumsum(np.array([0, *pcts], dtype=np.float32))]  # float32 sums, as torch.cumsum's
    widths = [_f32(b - a) for a, b in zip(edges, edges[1:])]
    last = len(edges) - 2
    def _inner(pos):
        p = _f32(pos)
        idx = min(max(i for i, e in enumerate(edges) if p >= e), last)
        return scheds[idx](_f32(_f32(p - edges[idx]) / widths[idx]))
    return _inner


_FLOAT32 = struct.Struct('f')


def _f32(x: float) -> float:
    "`x` rounded to the nearest float32, as a Python float."
    return _FLOAT32.unpack(_FLOAT32.pack(x))[0]


def combined_cos(pct: float, start: float, middle: float, end: float):
    "fastai's `combined_cos` (cosine start→middle over `pct`, then middle→end) on `combine_scheds` above."
    return combine_scheds([pct, 1 - pct], [SchedCos(start, middle), SchedCos(middle, end)])


def _warm(warmup: float, shape: str, start: float, peak: float, then):
    """The first `warmup` fraction of training rising linearly from `start` to `peak` (shape 'linear') or held at
    `start` ('constant'), then `then` over the rest (all of training when `warmup` is 1 or more)."""
    if shape not in ('linear', 'constant'): raise ValueError(f'unknown warm-up shape {shape!r}')
    if warmup <= 0: return then
    first = SchedLin(start, peak) if shape == 'linear' else SchedNo(start, start)
    if warmup >= 1: return first  # a run no longer than its warm-up (warmup_epochs ≥ epochs)
    return combine_scheds([warmup, 1 - warmup], [first, then])


def warmup_fraction(r) -> float:
    "The recipe's warm-up as a fraction of training: `warmup` as given, or `warmup_epochs` of `epochs` (at most all)."
    return r.warmup or min(r.warmup_epochs / r.epochs, 1.)


def lr_schedule(kind: str, lr: float, div: float = 25., final_div: float = 1e4, pct_start: float = .25,
                warmup: float = 0., milestones=(.5, .75), gamma: float = .1, warmup_shape: str = 'linear'):
    "The lr as a function of training progress in [0, 1]."
    if kind == 'one_cycle': return combined_cos(pct_start, lr / div, lr, lr / final_div)  # as fit_one_cycle
    if kind == 'flat_cos':
        return combine_scheds([pct_start, 1 - pct_start], [SchedNo(lr, lr), SchedCos(lr, lr / final_div)])
    if kind == 'triangular':  # airbench: linear up, linear down
        return combine_scheds([pct_start, 1 - pct_start], [SchedLin(lr / div, lr), SchedLin(lr, lr / final_div)])
    if kind == 'cosine': return _warm(warmup, warmup_shape, lr / div, lr, SchedCos(lr, 0.))
    if kind == 'linear_decay': return _warm(warmup, warmup_shape, lr / div, lr, SchedLin(lr, 0.))
    if kind == 'step':
        edges = [0., *milestones, 1.]
        pieces = [SchedNo(lr * gamma ** i, lr * gamma ** i) for i in range(len(edges) - 1)]
        steps = combine_scheds([b - a for a, b in zip(edges, edges[1:])], pieces)
        return _warm(warmup, warmup_shape, lr / div, lr, steps)
    raise ValueError(f'unknown schedule {kind!r}')


def schedule_callback(r, groups) -> LeanParamScheduler:
    """The recipe's schedule over its parameter groups (`cifar_fast.optim.ParamGroups`: each group's multiple of the
    lr, and its momentum where held fixed); one_cycle also cycles momentum inversely to the lr, as fastai's
    `fit_one_cycle` does."""
    sched = lr_schedule(r.schedule, groups.lr, r.div, r.final_div, r.pct_start, warmup_fraction(r), r.milestones,
                        r.gamma, r.warmup_shape)
    scheds = {'lr': groups.lr_schedule(sched)}
    if r.schedule == 'one_cycle': scheds['mom'] = groups.mom_schedule(combined_cos(r.pct_start, *r.moms))
    return LeanParamScheduler(scheds)

"""Learning-rate (and momentum) schedules as fastai `ParamScheduler`s, built from fastai's annealing pieces."""
from __future__ import annotations

from fastai.callback.schedule import ParamScheduler, SchedCos, SchedLin, SchedNo, combine_scheds, combined_cos


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


def schedule_callback(r, groups) -> ParamScheduler:
    """The recipe's schedule over its parameter groups (`cifar_fast.optim.ParamGroups`: each group's multiple of the
    lr, and its momentum where held fixed); one_cycle also cycles momentum inversely to the lr, as fastai's
    `fit_one_cycle` does."""
    sched = lr_schedule(r.schedule, groups.lr, r.div, r.final_div, r.pct_start, warmup_fraction(r), r.milestones,
                        r.gamma, r.warmup_shape)
    scheds = {'lr': groups.lr_schedule(sched)}
    if r.schedule == 'one_cycle': scheds['mom'] = groups.mom_schedule(combined_cos(r.pct_start, *r.moms))
    return ParamScheduler(scheds)

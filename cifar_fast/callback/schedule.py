"""Learning-rate (and momentum) schedules as fastai `ParamScheduler`s, built from fastai's annealing pieces."""
from __future__ import annotations

from fastai.callback.schedule import ParamScheduler, SchedCos, SchedLin, SchedNo, combine_scheds, combined_cos


def _warm(warmup: float, start: float, peak: float, then):
    "A linear warm-up from `start` to `peak` over the first `warmup` fraction, then `then`."
    return combine_scheds([warmup, 1 - warmup], [SchedLin(start, peak), then]) if warmup > 0 else then


def lr_schedule(kind: str, lr: float, div: float = 25., final_div: float = 1e4, pct_start: float = .25,
                warmup: float = 0., milestones=(.5, .75), gamma: float = .1):
    "The lr as a function of training progress in [0, 1]."
    if kind == 'one_cycle': return combined_cos(pct_start, lr / div, lr, lr / final_div)  # as fit_one_cycle
    if kind == 'flat_cos':
        return combine_scheds([pct_start, 1 - pct_start], [SchedNo(lr, lr), SchedCos(lr, lr / final_div)])
    if kind == 'triangular':  # airbench: linear up, linear down
        return combine_scheds([pct_start, 1 - pct_start], [SchedLin(lr / div, lr), SchedLin(lr, lr / final_div)])
    if kind == 'cosine': return _warm(warmup, lr / div, lr, SchedCos(lr, 0.))
    if kind == 'linear_decay': return _warm(warmup, lr / div, lr, SchedLin(lr, 0.))
    if kind == 'step':
        edges = [0., *milestones, 1.]
        pieces = [SchedNo(lr * gamma ** i, lr * gamma ** i) for i in range(len(edges) - 1)]
        return _warm(warmup, lr / div, lr, combine_scheds([b - a for a, b in zip(edges, edges[1:])], pieces))
    raise ValueError(f'unknown schedule {kind!r}')


def schedule_callback(r, groups) -> ParamScheduler:
    """The recipe's schedule over its parameter groups (`cifar_fast.optim.ParamGroups`: each group's multiple of the
    lr, and its momentum where held fixed); one_cycle also cycles momentum inversely to the lr, as fastai's
    `fit_one_cycle` does."""
    sched = lr_schedule(r.schedule, groups.lr, r.div, r.final_div, r.pct_start, r.warmup, r.milestones, r.gamma)
    scheds = {'lr': groups.lr_schedule(sched)}
    if r.schedule == 'one_cycle': scheds['mom'] = groups.mom_schedule(combined_cos(r.pct_start, *r.moms))
    return ParamScheduler(scheds)

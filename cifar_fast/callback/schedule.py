"""Learning-rate (and momentum) schedules as fastai `ParamScheduler`s, built from fastai's annealing pieces."""
from __future__ import annotations

from fastai.callback.schedule import (ParamScheduler, SchedCos, SchedLin, SchedNo, combine_scheds, combined_cos)

from ..optim import MUON_GROUP, group_scaled


def _warm(warmup: float, start: float, peak: float, then):
    "A linear warm-up from `start` to `peak` over the first `warmup` fraction, then `then`."
    return combine_scheds([warmup, 1 - warmup], [SchedLin(start, peak), then]) if warmup > 0 else then


def lr_schedule(kind: str, lr: float, div: float = 25., final_div: float = 1e4, pct_start: float = .25,
                warmup: float = 0., milestones=(.5, .75), gamma: float = .1):
    "The lr as a function of training progress in [0, 1]."
    if kind == 'one_cycle': return combined_cos(pct_start, lr / div, lr, lr / final_div)  # as fit_one_cycle
    if kind == 'flat_cos': return combine_scheds([pct_start, 1 - pct_start], [SchedNo(lr, lr), SchedCos(lr, lr / final_div)])
    if kind == 'triangular':  # airbench: linear up, linear down
        return combine_scheds([pct_start, 1 - pct_start], [SchedLin(lr / div, lr), SchedLin(lr, lr / final_div)])
    if kind == 'cosine': return _warm(warmup, lr / div, lr, SchedCos(lr, 0.))
    if kind == 'linear_decay': return _warm(warmup, lr / div, lr, SchedLin(lr, 0.))
    if kind == 'step':
        edges = [0., *milestones, 1.]
        pieces = [SchedNo(lr * gamma ** i, lr * gamma ** i) for i in range(len(edges) - 1)]
        return _warm(warmup, lr / div, lr, combine_scheds([b - a for a, b in zip(edges, edges[1:])], pieces))
    raise ValueError(f'unknown schedule {kind!r}')


def schedule_callback(r, lr: float, group_scales=None) -> ParamScheduler:
    """The recipe's schedule; one_cycle also cycles momentum inversely to the lr, as fastai's `fit_one_cycle` does.
    `group_scales` gives each parameter group its own multiple of the lr (e.g. airbench's BatchNorm-bias lr)."""
    sched = lr_schedule(r.schedule, lr, r.div, r.final_div, r.pct_start, r.warmup, r.milestones, r.gamma)
    scheds = {'lr': group_scaled(sched, group_scales) if group_scales else sched}
    if r.schedule == 'one_cycle':
        mom = combined_cos(r.pct_start, *r.moms)
        scheds['mom'] = muon_fixed_momentum(mom, r.speed.muon_momentum) if r.speed.muon else mom
    return ParamScheduler(scheds)


def muon_fixed_momentum(mom, muon_momentum: float):
    "Per-group momentum for MuonSGD's groups: `mom(pct)` for the SGD groups, Muon's own momentum held fixed."
    def f(pct):
        m = [mom(pct)] * 3
        m[MUON_GROUP] = muon_momentum
        return m
    return f

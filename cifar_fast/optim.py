"""Optimisers for the Learner: torch's, through fastai's `OptimWrapper`, and `MuonSGD`, which gives the conv filters
to `torch.optim.Muon` and everything else to Nesterov SGD (airbench94_muon's split, K. Jordan,
github.com/KellerJordan/cifar10-airbench)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from fastai.optimizer import OptimWrapper
from torch import nn

from .errors import ConfigError

# ---- fastai's wrapper around a torch optimiser, with cheap hyperparameter reads -----------------------------------

class LeanOptimWrapper(OptimWrapper):
    """fastai's `OptimWrapper`, the same values read and written more cheaply. fastai rebuilds every group's
    hyperparameters through fastcore's `is_listy` for each value whenever `hypers` is read: three times a training step
    (the schedule's write checks its length, the schedule and the Recorder each read the last group's lr back), about
    220 Python calls a step, more than the rest of fastai's step around a small net."""
    @property
    def hypers(self) -> list[dict]:
        return [_hyper_dict(pg, self.fwd_map) for pg in self.opt.param_groups]

    def hyper(self, k: str, group: int = -1):
        "One group's hyperparameter `k` under fastai's name: `hypers[group][k]` without building every group's."
        key, pg = self.bwd_map.get(k, k), self.opt.param_groups[group]
        if '__' not in key: return pg[key]
        name, i = key.split('__')
        return pg[name][int(i)]

    def set_hyper(self, k, v):
        "One value for every group, or one per group, as fastai's; slices and other inputs go to fastai's own."
        n = len(self.opt.param_groups)
        if isinstance(v, (int, float)): v = [v] * n
        elif not isinstance(v, (list, tuple)) or len(v) not in (1, n): return super().set_hyper(k, v)
        elif len(v) == 1: v = list(v) * n
        self._set_hyper(k, v)


def _hyper_dict(pg: dict, fwd_map: dict) -> dict:
    "A param group's hyperparameters under fastai's names, tuples spread as `name__i` (fastai's `detuplify_pg`)."
    out = {}
    for k, v in pg.items():
        if k == 'params': continue
        if isinstance(v, (tuple, list)): out.update({fwd_map.get(f'{k}__{i}', f'{k}__{i}'): x for i, x in enumerate(v)})
        else: out[fwd_map.get(k, k)] = v
    return out


# ---- hyperparameters decoupled from batch size and momentum -----------------------------------------------------

def decoupled_hypers(lr: float, wd: float, momentum: float, bs: int, reduction: str = 'mean') -> tuple[float, float]:
    """airbench's units -> (lr, weight_decay) for torch's Nesterov SGD. `lr` is per 1024 examples and divided by the
    Nesterov step growth 1 + 1/(1 - momentum), so the average step no longer moves with momentum or batch size;
    `wd` is the decay per 1024 examples, independent of lr. With a mean loss the lr is scaled back up by `bs`."""
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr_sum = lr / kilostep  # the lr for a summed loss
    decay_per_step = wd * bs / kilostep
    torch_lr = lr_sum * bs if reduction == 'mean' else lr_sum
    return torch_lr, decay_per_step / torch_lr  # torch's L2 term is multiplied by the lr again


# ---- a separate learning rate for BatchNorm biases ----------------------------------------------------------------

def norm_bias_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    """[BatchNorm biases, everything else]; fastai reports the lr of its last group, the main one. Frozen parameters
    stay in (torch skips params without grads): groups must not change size when a callback freezes one, since
    fastai's `export` rebuilds the optimiser and reloads its state."""
    norm_ids = {id(m.bias) for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._NormBase) and m.bias is not None}
    params = list(model.parameters())
    return [[p for p in params if id(p) in norm_ids], [p for p in params if id(p) not in norm_ids]]


def all_params_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    """One group of every parameter, frozen ones included: fastai's default `trainable_params` drops frozen ones, so
    after a callback freezes one mid-fit (the whitening bias), `export`'s optimiser rebuild no longer matches."""
    return [list(model.parameters())]


# With speed.muon the splitter makes three groups in this order (`param_groups` names them);
# MuonSGD steps the middle one.
BIAS_GROUP, MUON_GROUP, REST_GROUP = 0, 1, 2


def is_filter(p: nn.Parameter) -> bool:
    "A conv filter bank: the 4-D weights Muon orthogonalises (out × in·k·k); biases, norms and the head stay on SGD."
    return p.ndim == 4


def muon_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    """[BatchNorm biases, conv filters, everything else]. Frozen parameters stay in their group (the whitening filters:
    torch skips params without grads), so the groups never change size when a callback freezes one mid-fit."""
    biases, rest = norm_bias_splitter(model)
    filters = [p for p in rest if is_filter(p)]
    if not filters:
        raise ConfigError(f"speed.muon=True trains conv filters with Muon, but {type(model).__name__} has no 4-D conv "
                          f"weights: turn speed.muon off for this model.")
    return [biases, filters, [p for p in rest if not is_filter(p)]]


@torch.no_grad()
def normalize_filters_(w: torch.Tensor) -> torch.Tensor:
    """Rescale a filter bank to Frobenius norm √(out channels), in place (airbench94_muon, before every step). A conv
    followed by BatchNorm computes the same function at any scale, and Muon's steps have a fixed size: without this
    the weights grow and the effective learning rate shrinks as training goes on."""
    return w.mul_(math.sqrt(len(w)) / w.norm().clamp_min(1e-12))


class MuonSGD:
    """One optimiser over the splitter's groups (see `muon_splitter`): group MUON_GROUP is stepped by
    `torch.optim.Muon`, the others by `torch.optim.SGD`. fastai's `OptimWrapper` drives it like any torch optimiser:
    `param_groups` holds SGD's group dicts and, at MUON_GROUP, a dict whose params are the real 4-D filters, so
    schedules, freezing and the fp16 loss scaler see every parameter.

    Why a wrapper: torch's Muon accepts 2-D parameters only. Each filter is stepped through a 2-D shadow tensor (out,
    in·k·k) bound to it at every step: a view of the filter when it is contiguous, so Muon updates it in place; a copy
    written back afterwards when it is not (channels_last). Binding at each step also follows the filters when fastai
    moves the model to its device, and when Lookahead or a checkpoint load replaces their values."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.85, nesterov: bool = True,
                 weight_decay: float = 0., muon_momentum: float = 0.6, muon_ns_steps: int = 3,
                 muon_normalize: bool = True, **sgd_kwargs):
        groups = [dict(g) if isinstance(g, dict) else dict(params=list(g)) for g in params]
        if len(groups) != 3:
            raise ConfigError(f"MuonSGD expects the three groups of `muon_splitter` (BatchNorm biases, conv filters, "
                              f"the rest); got {len(groups)}.")
        filters = list(groups[MUON_GROUP]['params'])
        if not all(is_filter(p) for p in filters):
            raise ConfigError("MuonSGD: every parameter of the conv-filter group must be a 4-D conv weight.")
        self.filters = filters
        self.shadows = [p.detach().reshape(len(p), -1) for p in filters]
        self.normalize = muon_normalize
        sgd_groups = [g for i, g in enumerate(groups) if i != MUON_GROUP]
        self.sgd = torch.optim.SGD(sgd_groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                   **sgd_kwargs)
        self.muon = torch.optim.Muon([dict(groups[MUON_GROUP], params=self.shadows)], lr=lr, momentum=muon_momentum,
                                     nesterov=True, weight_decay=0., ns_steps=muon_ns_steps)
        # The dict fastai sets hyperparameters on; copied into Muon's own group (which holds the shadows) at each step.
        self.muon_group = {**self.muon.param_groups[0], 'params': filters}

    @property
    def param_groups(self) -> list[dict]:
        "Read live: torch's `load_state_dict` replaces SGD's group dicts."
        g = self.sgd.param_groups
        return g[:MUON_GROUP] + [self.muon_group] + g[MUON_GROUP:]

    @property
    def state(self): return {**self.sgd.state, **self.muon.state}

    def _bind(self):
        "Point each shadow at its filter's current values and gradient (a view when contiguous, else a copy)."
        for p, s in zip(self.filters, self.shadows):
            s.data = p.detach().reshape(len(p), -1)
            s.grad = None if p.grad is None else p.grad.reshape(len(p), -1)
            st = self.muon.state.get(s)
            if st and st['momentum_buffer'].device != s.device:  # the model moved after a checkpoint load
                st['momentum_buffer'] = st['momentum_buffer'].to(s.device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.sgd.step(closure)
        self.muon.param_groups[0].update(self._hypers())
        self._bind()
        if self.normalize:
            for s in self.shadows:
                if s.grad is not None: normalize_filters_(s)
        self.muon.step()
        for p, s in zip(self.filters, self.shadows):
            if s.grad is not None and not p.is_contiguous(): p.copy_(s.view(p.shape))
            s.grad = None
        return loss

    def zero_grad(self, set_to_none: bool = True):
        self.sgd.zero_grad(set_to_none)
        for p in self.filters:
            if p.grad is None: continue
            if set_to_none: p.grad = None
            else: p.grad.zero_()

    def state_dict(self) -> dict:
        return dict(sgd=self.sgd.state_dict(), muon=self.muon.state_dict(), muon_group=self._hypers())

    def load_state_dict(self, sd: dict):
        if set(sd) != {'sgd', 'muon', 'muon_group'}:
            raise ConfigError("this optimiser state is not MuonSGD's (it was saved with speed.muon off?): "
                              "resume the run with the recipe it was started with.")
        self.sgd.load_state_dict(sd['sgd'])
        self.muon.load_state_dict(sd['muon'])
        self.muon_group.update(sd['muon_group'])

    def _hypers(self) -> dict: return {k: v for k, v in self.muon_group.items() if k != 'params'}

    def __repr__(self): return f'MuonSGD(sgd={self.sgd!r}, muon={self.muon!r})'


def opt_func(r):
    "The recipe's optimiser, wrapped for fastai (fastai's own SGD has no Nesterov)."
    if r.speed.muon:
        s = r.speed
        return partial(LeanOptimWrapper, opt=partial(MuonSGD, momentum=r.momentum, nesterov=r.nesterov,
                                                 muon_momentum=s.muon_momentum, muon_ns_steps=s.muon_ns_steps,
                                                 muon_normalize=s.muon_normalize))
    if r.opt == 'sgd': cls, kw = torch.optim.SGD, dict(momentum=r.momentum, nesterov=r.nesterov)
    else: cls, kw = (torch.optim.Adam if r.opt == 'adam' else torch.optim.AdamW), dict(betas=(r.momentum, 0.99))
    if r.sam:  # pytorch-optimizer's SAM around the torch optimiser; callback.sam runs its two passes per batch
        from pytorch_optimizer import SAM
        return partial(LeanOptimWrapper,
                       opt=partial(SAM, base_optimizer=cls, rho=r.sam, adaptive=r.sam_adaptive, **kw))
    return partial(LeanOptimWrapper, opt=partial(cls, **kw))


def splitter(r):
    "The recipe's parameter groups: Muon's three, BatchNorm biases apart when they get their own lr, else one group."
    if r.speed.muon: return muon_splitter
    return norm_bias_splitter if r.speed.bias_lr_scale != 1 else all_params_splitter


@dataclass(frozen=True)
class ParamGroup:
    """One parameter group's hyperparameters: its lr as a multiple of the schedule's (`lr_scale`), its weight decay
    in torch's units, and its momentum when held fixed (Muon's), else None (the schedule's, e.g. one_cycle's)."""
    name: str
    lr_scale: float
    wd: float
    momentum: float | None = None


@dataclass(frozen=True)
class ParamGroups:
    """The optimiser's parameter groups, built once per run (`param_groups`), in the order the recipe's `splitter`
    returns them: the one value of every hyperparameter that the optimiser (`fit_hypers`) and the schedule
    (callback.schedule) both read. `lr` is the schedule's peak lr in torch's units (the main group's)."""
    lr: float
    groups: tuple[ParamGroup, ...]

    @property
    def names(self) -> list[str]: return [g.name for g in self.groups]

    def __getitem__(self, name: str) -> ParamGroup: return self.groups[self.names.index(name)]

    def lrs(self) -> list[float]: return [self.lr * g.lr_scale for g in self.groups]

    def fit_hypers(self) -> tuple:
        "(lr, wd) for fastai's `fit`: plain numbers for one group, one value per group otherwise."
        if len(self.groups) == 1: return self.lr, self.groups[0].wd
        return self.lrs(), [g.wd for g in self.groups]

    def lr_schedule(self, sched):
        "`sched(pct)` for one group; for several, one value per group: `sched(pct) * lr_scale`."
        if len(self.groups) == 1: return sched
        scales = [g.lr_scale for g in self.groups]
        def f(pct):
            lr = sched(pct)  # read once a batch, whatever the number of groups
            return [lr * s for s in scales]
        return f

    def mom_schedule(self, mom):
        "`mom(pct)` for every group that follows the schedule; a group's fixed momentum (Muon's) held."
        if all(g.momentum is None for g in self.groups): return mom
        def f(pct):
            m = mom(pct)
            return [m if g.momentum is None else g.momentum for g in self.groups]
        return f


def param_groups(r, lr: float) -> ParamGroups:
    """The recipe's groups for a peak lr `lr`: airbench's decoupled units converted to torch's (speed.decoupled); the
    BatchNorm biases at `speed.bias_lr_scale` × the lr with their decay scaled down to match, so their L2 step stays
    the same; with speed.muon the conv filters at `speed.muon_lr` as given (Muon normalises its step, so no batch-size
    conversion applies) with `speed.muon_wd` and Muon's own momentum."""
    wd = r.wd
    if r.speed.decoupled: lr, wd = decoupled_hypers(lr, r.wd, r.momentum, r.data.batch_size, r.speed.loss_reduction)
    s = r.speed.bias_lr_scale
    if r.speed.muon:
        return ParamGroups(lr, (ParamGroup('norm_bias', s, wd / s),
                                ParamGroup('muon', r.speed.muon_lr / lr, r.speed.muon_wd, r.speed.muon_momentum),
                                ParamGroup('rest', 1., wd)))
    if s == 1: return ParamGroups(lr, (ParamGroup('all', 1., wd),))
    return ParamGroups(lr, (ParamGroup('norm_bias', s, wd / s), ParamGroup('rest', 1., wd)))

"""Optimisers for the Learner: torch's, through fastai's `OptimWrapper`, and `MuonSGD`, which gives the conv filters
to `torch.optim.Muon` and everything else to Nesterov SGD (airbench94_muon's split, K. Jordan,
github.com/KellerJordan/cifar10-airbench)."""
from __future__ import annotations

import math
from functools import partial

import torch
from fastai.optimizer import OptimWrapper
from torch import nn

from .callback.speed import norm_bias_splitter
from .errors import ConfigError

# With speed.muon the splitter makes three groups in this order; the schedule and hyperparameters index them.
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
    """One optimiser over the splitter's groups (see `muon_splitter`): group MUON_GROUP is stepped by `torch.optim.Muon`,
    the others by `torch.optim.SGD`. fastai's `OptimWrapper` drives it like any torch optimiser: `param_groups` holds
    SGD's group dicts and, at MUON_GROUP, a dict whose params are the real 4-D filters, so schedules, freezing and
    the fp16 loss scaler see every parameter.

    Why a wrapper: torch's Muon accepts 2-D parameters only. Each filter is stepped through a 2-D shadow tensor (out,
    in·k·k) bound to it at every step: a view of the filter when it is contiguous, so Muon updates it in place; a copy
    written back afterwards when it is not (channels_last). Binding at each step also follows the filters when fastai
    moves the model to its device, and when Lookahead or a checkpoint load replaces their values."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.85, nesterov: bool = True, weight_decay: float = 0.,
                 muon_momentum: float = 0.6, muon_ns_steps: int = 3, muon_normalize: bool = True, **sgd_kwargs):
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
            raise ConfigError("this optimiser state is not MuonSGD's (it was saved with speed.muon off?): resume the run "
                              "with the recipe it was started with.")
        self.sgd.load_state_dict(sd['sgd'])
        self.muon.load_state_dict(sd['muon'])
        self.muon_group.update(sd['muon_group'])

    def _hypers(self) -> dict: return {k: v for k, v in self.muon_group.items() if k != 'params'}

    def __repr__(self): return f'MuonSGD(sgd={self.sgd!r}, muon={self.muon!r})'


def opt_func(r):
    "The recipe's optimiser, wrapped for fastai (fastai's own SGD has no Nesterov)."
    if r.speed.muon:
        s = r.speed
        return partial(OptimWrapper, opt=partial(MuonSGD, momentum=r.momentum, nesterov=r.nesterov,
                                                 muon_momentum=s.muon_momentum, muon_ns_steps=s.muon_ns_steps,
                                                 muon_normalize=s.muon_normalize))
    if r.opt == 'sgd': return partial(OptimWrapper, opt=partial(torch.optim.SGD, momentum=r.momentum, nesterov=r.nesterov))
    cls = torch.optim.Adam if r.opt == 'adam' else torch.optim.AdamW
    return partial(OptimWrapper, opt=partial(cls, betas=(r.momentum, 0.99)))

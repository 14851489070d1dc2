"""Sharpness-aware minimisation (SAM, Foret et al. 2021, arXiv:2010.01412; adaptive SAM, Kwon et al. 2021,
arXiv:2102.11600) in the fastai Learner. The optimiser is pytorch-optimizer's `SAM` around the recipe's torch
optimiser (`optim.opt_func`); this callback gives it what fastai's loop cannot: a second forward/backward pass of the
same batch at the perturbed weights, between fastai's backward and its optimiser step.

fastai calls `opt.step()` without a closure, and SAM needs one; so in `before_step` the callback runs SAM's own
`step(closure)` (perturb, recompute the gradient, restore, step the base optimiser) and cancels fastai's step.
`after_step` callbacks (the EMA of the weights) still run, as fastai runs them after a cancelled step."""
from __future__ import annotations

import contextlib

from fastai.callback.core import Callback, CancelStepException
from fastai.callback.fp16 import MixedPrecision
from torch import nn

from ..errors import ConfigError


class SAMStep(Callback):
    "Runs the SAM optimiser's two-pass step on each batch; BatchNorm statistics are updated by the first pass only."
    # after MixedPrecision's before_step (which, without a loss scaler, changes nothing)
    order = MixedPrecision.order + 1

    def before_fit(self):
        self.norms = [m for m in self.learn.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        mp = next((cb for cb in self.learn.cbs if isinstance(cb, MixedPrecision)), None)
        scaler = getattr(self.learn, 'scaler', None)  # for a Learner built directly: a run's preflight refused fp16
        check_sam_precision(mp is not None and scaler is not None and scaler.is_enabled(),
                            " (the Learner's MixedPrecision has a loss scaler)")
        self.autocast = mp.autocast if mp is not None else contextlib.nullcontext()

    def before_step(self):
        self.learn.opt.opt.step(self._second_pass)
        raise CancelStepException

    def _second_pass(self):
        "The loss and gradients of the same batch at SAM's perturbed weights (SAM zeroed the first pass's)."
        momenta = [m.momentum for m in self.norms]
        for m in self.norms: m.momentum = 0.  # running ← 1·running + 0·batch: the second pass must not count it again
        try:
            with self.autocast: loss = self.learn.loss_func(self.learn.model(*self.learn.xb), *self.learn.yb)
            loss.backward()
        finally:
            for m, mom in zip(self.norms, momenta): m.momentum = mom
        return loss.detach()


def check_sam_precision(fp16: bool, where: str = '') -> None:
    """Refuse SAM with fp16: its second backward pass does not work with fp16's loss scaler. `fp16` is the caller's
    evidence: before a run (preflight), an fp16 precision on any device, so that a recipe refused on a GPU is refused
    on a CPU too; in a Learner built directly, an enabled loss scaler. `where` says which, for the message."""
    if fp16:
        raise ConfigError(f"recipe field sam with fp16{where}: SAM's second backward pass does not work with fp16's "
                          f"loss scaler. Use --precision bf16 or fp32.")


def sam_callbacks(rho: float) -> list:
    "The callbacks SAM needs (none when ρ = 0, SAM off)."
    return [SAMStep()] if rho > 0 else []

"""One protocol for callbacks that swap Learner state in and out (the EMA weights for validation, the Recorder's
device meters, MixUp's loss function). fastai calls `after_*` only on a normal or cancelled exit: a real exception
skips them. So each such callback says how to put its state back, `restore(learn)` (idempotent, callable after
fastai has detached the callback), and the fit's `finally` calls `restore_all` on every way out."""
from __future__ import annotations

from fastai.callback.mixup import CutMix, MixUp


class SwapsState:
    "Mixin: the callback swaps Learner state, and `restore(learn)` puts it back (idempotent)."
    def restore(self, learn) -> None: raise NotImplementedError


def restore_all(learn, cbs=()) -> None:
    "Put back whatever the Learner's callbacks and the fit's `cbs` have swapped in."
    for cb in {id(c): c for c in [*learn.cbs, *cbs]}.values():
        if isinstance(cb, SwapsState): cb.restore(learn)


class _MixLoss(SwapsState):
    "fastai's MixHandler swaps the Learner's loss for the mixed one in before_train and back only in after_train."
    def restore(self, learn) -> None:
        if getattr(self, 'stack_y', False) and getattr(self, 'old_lf', None) is not None: learn.loss_func = self.old_lf


class RestoringMixUp(_MixLoss, MixUp): "fastai's MixUp, restored on every way out."
class RestoringCutMix(_MixLoss, CutMix): "fastai's CutMix, restored on every way out."

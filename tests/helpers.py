"""Pieces several test files share: interrupting a run at a chosen batch, and checking that resuming it is exact."""
import os
import signal

import torch
from fastai.callback.core import Callback

from cifar_fast.training import train


class SignalAt(Callback):
    "Send ourselves `sig` after batch `it` of epoch `epoch`, as a user's Ctrl-C or a scheduler's SIGTERM would."
    def __init__(self, epoch: int, it: int, sig=signal.SIGINT): self.at, self.sig = (epoch, it), sig
    def after_batch(self):
        if self.training and (self.epoch, self.iter) == self.at: os.kill(os.getpid(), self.sig)


def last_weights(run_dir):
    return torch.load(run_dir / 'model.pth', weights_only=True)['last']


def assert_resume_matches(recipe, tmp_path, epoch: int, it: int):
    "Train `recipe` whole, and again cut at (epoch, it) then resumed: the final weights must be identical. The whole run's result."
    full = train(recipe, runs_root=tmp_path / 'full')
    cut = train(recipe, runs_root=tmp_path / 'cut', extra_cbs=[SignalAt(epoch, it)]).run_dir
    train(None, resume=cut)
    a, b = last_weights(full.run_dir), last_weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a), 'the resumed run drifted from the uninterrupted one'
    return full

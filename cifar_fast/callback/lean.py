"""fastai's per-batch bookkeeping with the same records at a fraction of the host cost: what a training step does
besides the model's own work, on a GPU, is Python the GPU waits for (benchmarks/host_overhead.py measures it)."""
from __future__ import annotations

from fastai.callback.schedule import ParamScheduler
from fastai.learner import Recorder


def last_hyper(opt, k: str):
    "The last parameter group's hyperparameter `k` (fastai's name), as `opt.hypers[-1][k]` reads it."
    return opt.hyper(k) if hasattr(type(opt), 'hyper') else opt.hypers[-1][k]


class LeanRecorder(Recorder):
    """fastai's Recorder, the same records: a training batch's smoothed loss is computed once (fastai computes it twice,
    a tensor op each) and its lr read from the last group alone (fastai rebuilds every group's hyperparameters)."""
    @property
    def name(self) -> str: return 'recorder'  # what fastai and every callback know it as: `learn.recorder`

    def after_batch(self):
        learn = self.learn
        if len(learn.yb) == 0: return
        for met in (self._train_mets if learn.training else self._valid_mets): met.accumulate(learn)
        if not learn.training: return
        self.lrs.append(last_hyper(learn.opt, 'lr'))
        learn.smooth_loss = v = self.smooth_loss.value
        self.losses.append(v)


class LeanParamScheduler(ParamScheduler):
    "fastai's ParamScheduler, recording each batch's values from the last group alone (see `LeanRecorder`)."
    def after_batch(self):
        opt = self.learn.opt
        for p in self.scheds: self.hps[p].append(last_hyper(opt, p))

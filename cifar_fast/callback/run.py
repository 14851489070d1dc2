"""Fit-time callbacks (passed to `fit`, so never active in lr_find or get_preds) that keep a run folder true to
the training: per-epoch metrics, the best weights, graceful interruption and divergence detection (the resumable
checkpoint: callback/checkpoint.py). fastai's CSVLogger has no lr or numeric seconds and only appends, and
SaveModelCallback keeps no RNG, schedule or metric state, so an interrupted run could not resume identically."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.tracker import TrackerCallback
from fastai.learner import Recorder
from fastai.torch_core import rank_distrib

from ..distributed import any_rank
from ..rundir import BackgroundWrites, torch_save, write_metrics
from .restore import SwapsState


# ---- callbacks ------------------------------------------------------------------------------------------------

class RunRecorder(Callback):
    """One metrics row per completed epoch (epoch, losses, accuracy, lr, seconds) into metrics.csv and the console log.
    Epochs are counted from 1 here, in summary.json, on the console and in W&B: row 3 is the third epoch."""
    order = Recorder.order + 1  # read what the Recorder just logged

    def __init__(self, run_dir: Path, rows: list | None = None, log=None):
        self.run_dir, self.rows, self.log_fn = Path(run_dir), list(rows or []), log
        self.train_seconds = [r.get('train_seconds', 0.) for r in self.rows]

    def before_epoch(self): self.t0, self.skipped = time.perf_counter(), False
    def before_train(self): self.t_train = time.perf_counter()
    def after_train(self): self.dt_train = time.perf_counter() - self.t_train
    def after_cancel_epoch(self): self.skipped = True  # fastai's SkipToEpoch, when resuming

    def after_epoch(self):
        if self.skipped: return
        names = self.recorder.metric_names[1:len(self.learn.final_record) + 1]
        rec = dict(zip(names, (float(v) for v in self.learn.final_record)))
        row = dict(epoch=int(self.epoch) + 1, train_loss=rec.get('train_loss', float('nan')),
                   valid_loss=rec.get('valid_loss', float('nan')), accuracy=rec.get('accuracy', float('nan')),
                   lr=float(self.opt.hypers[-1]['lr']), seconds=round(time.perf_counter() - self.t0, 3),
                   train_seconds=round(self.dt_train, 3))
        self.rows.append(row)
        if rank_distrib() == 0:
            write_metrics(self.run_dir / 'metrics.csv', self.rows)
            if self.log_fn: self.log_fn(row, self.n_epoch)


class BestWeights(SwapsState, TrackerCallback):
    """The weights of the epoch with the best test accuracy, kept in memory for the end of the run and written
    atomically to `path` so that a resumed run still has them. fastai's SaveModelCallback writes in place, and at the
    end of the fit reads back the file it has just written."""
    # Before EarlyStoppingCallback (60) can cancel the fit on this epoch, and before WeightEMA (65) swaps the raw
    # weights back: keep what was validated.
    order = TrackerCallback.order - 1

    def __init__(self, path: Path, model, monitor: str = 'accuracy', resume: bool = False, background: bool = False):
        super().__init__(monitor=monitor, reset_on_fit=False)
        self.path, self.raw_model, self.weights = Path(path), model, None
        self.writes = BackgroundWrites(background)  # in the background on a GPU, as the Checkpointer's
        if resume and self.path.is_file():  # saved by an earlier version from a compiled model: strip its prefix
            sd = torch.load(self.path, weights_only=True, map_location='cpu')
            self.weights = {k.removeprefix('_orig_mod.'): v for k, v in sd.items()}

    def before_epoch(self): self.skipped = False
    def after_cancel_epoch(self): self.skipped = True  # fastai's SkipToEpoch, when resuming: nothing was validated

    def after_epoch(self):
        if self.skipped: return
        super().after_epoch()
        if not self.new_best: return
        self.weights = {k: v.detach().clone() for k, v in self.raw_model.state_dict().items()}
        if rank_distrib() == 0:
            self.writes.wait()
            self.writes.submit(torch_save, self.weights, self.path)  # a copy: the next best replaces, never changes it

    def after_fit(self): self.writes.wait()

    def restore(self, learn):
        "On an exception (which skips after_fit): the best weights being written are finished."
        try: self.writes.wait()
        except OSError: pass  # the exception under way says what went wrong


class GracefulStop(Callback):
    """Acts on a stop signal caught by the run's `StopSignals` (cifar_fast.stop): at the end of the current batch it
    cancels the fit the fastai way, every rank at the same batch, so each callback's `after_cancel_fit` restores what
    it swapped; the last completed epoch's checkpoint stays."""
    order = 0  # first: the stop takes effect before any other callback's after_batch work on the last batch

    def __init__(self, signals, every: int = 1): self.signals, self.every = signals, every

    def before_fit(self): self.requested = False

    def after_batch(self):
        # Distributed, every rank must stop at the same batch: the flag is agreed every `every` batches. A rank may
        # stop for another's signal: `requested` is the agreement, `signals.signum` this process's own signal, if any.
        if self.iter % self.every == 0 and any_rank(self.signals.requested):
            self.requested = True
            raise CancelFitException


# A training batch's loss above this many times a uniform guess's (ln C for C classes: 230 for CIFAR-10) has exploded:
# a correct class scored ~230 logits below the best. Healthy CIFAR runs stay under 1 × ln C after the first batches;
# `quick --lr 1e6` (the run tests/test_faults.py repeats) reached 1e9, so the bound separates the two by orders of
# magnitude.
EXPLODED = 100


class StopOnNaN(Callback):
    """Cancel the fit when training diverges, recording where: a training loss that is not finite or has exploded
    (above EXPLODED × ln(classes) per image), or a validation loss that is not finite. The checkpoint of the last good
    epoch is kept. Checked every `every` batches, agreed across ranks."""
    order = Recorder.order - 1

    def __init__(self, every: int = 1): self.every, self.where = every, None

    def after_batch(self):
        if not self.training or self.iter % self.every: return
        # One read to the host, the only sync of the check (on a GPU each read waits for the step): the worst value
        # in Python. abs().max() keeps a NaN (torch's max propagates it) and turns -inf into inf.
        loss = self.loss.detach()
        worst = float(loss) if loss.numel() == 1 else float(loss.abs().max())
        if getattr(self.learn.loss_func, 'reduction', 'mean') == 'sum': worst /= len(self.yb[0])  # per image
        limit = EXPLODED * math.log(max(self.pred.shape[-1], 2))
        if any_rank(not math.isfinite(worst) or worst > limit):
            self._stop('loss', batch=int(self.iter), limit=limit)

    def after_validate(self):
        "The Recorder's validation loss is complete here (it is read into the epoch's record just after)."
        if self.training or not hasattr(self.learn, 'recorder') or getattr(self.learn, 'lr_finder', False): return
        v = self.learn.recorder.loss.value
        if v is not None and any_rank(not bool(torch.isfinite(torch.as_tensor(v)).all())):
            self._stop('validation loss', batch=None)

    def _stop(self, what: str, batch, limit=None):
        value = self.loss.detach().float().mean() if what == 'loss' else self.learn.recorder.loss.value
        self.where = dict(what=what, epoch=int(self.epoch) + 1, batch=batch, loss=float(value),  # epochs from 1
                          limit=None if limit is None else round(limit, 1))
        raise CancelFitException

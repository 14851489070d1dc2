"""Fit-time callbacks (passed to `fit`, so never active in lr_find or get_preds) that keep a run folder true to
the training: per-epoch metrics, resumable checkpoints, graceful
interruption and divergence detection. fastai's CSVLogger has no lr or numeric seconds and only appends, and
SaveModelCallback keeps no RNG, schedule or metric state, so an interrupted run could not resume identically."""
from __future__ import annotations

import math
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.tracker import TrackerCallback
from fastai.learner import Recorder, SkipToEpoch
from fastai.torch_core import rank_distrib

from ..distributed import any_rank
from ..rundir import torch_save, write_metrics


# ---- RNG state as plain lists and tensors, so checkpoints load with torch.load(weights_only=True) ----------------

def _py_state(st): return [st[0], list(st[1]), st[2]]
def _py_unstate(st): return (st[0], tuple(st[1]), st[2])


def rng_snapshot(dls=None) -> dict:
    "Every RNG a fastai run draws from: python, numpy, torch (CPU and CUDA), and each DataLoader's own."
    np_st = np.random.get_state()
    snap = dict(python=_py_state(random.getstate()), torch=torch.get_rng_state(),
                numpy=[np_st[0], torch.from_numpy(np_st[1].astype(np.int64)), *np_st[2:]])
    if torch.cuda.is_available(): snap['cuda'] = torch.cuda.get_rng_state_all()
    if dls is not None:
        snap['dls'] = [dict(rng=_py_state(dl.rng.getstate()), epoch=getattr(dl, 'epoch', None),
                            flip_base=getattr(dl, 'flip_base', None)) for dl in dls.loaders]
    return snap


def rng_restore(snap: dict, dls=None):
    "Put back what `rng_snapshot` took."
    random.setstate(_py_unstate(snap['python']))
    n = snap['numpy']
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    torch.set_rng_state(snap['torch'])
    if 'cuda' in snap and torch.cuda.is_available(): torch.cuda.set_rng_state_all(snap['cuda'])
    if dls is not None and 'dls' in snap:
        for dl, st in zip(dls.loaders, snap['dls']):
            dl.rng.setstate(_py_unstate(st['rng']))
            if st['epoch'] is not None: dl.epoch = st['epoch']
            if st['flip_base'] is not None: dl.flip_base = st['flip_base']


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


def prev_checkpoint(path: Path) -> Path: return Path(path).with_name('prev.pth')


class Checkpointer(Callback):
    """After each completed epoch, everything needed to continue exactly: weights, optimiser, epoch, RNGs, the
    Recorder's smoothed loss, the trackers' best/wait and the metric rows; and puts it back on resume."""
    order = SkipToEpoch.order + 1  # after the trackers (60), whose state it saves, and fastai's SkipToEpoch (70)

    def __init__(self, path: Path, model, recorder_cb: RunRecorder, state: dict | None = None, extras: dict | None = None):
        "`extras`: name -> object with state_dict/load_state_dict (e.g. the weight average) saved and restored too."
        self.path, self.raw_model, self.run_rec, self.state = Path(path), model, recorder_cb, state
        self.extras, self.restored = extras or {}, state is None

    def before_fit(self):
        if self.state is None: return
        for k, obj in self.extras.items(): obj.load_state_dict(self.state['extra'][k])
        sl = self.recorder.smooth_loss
        sl.val, sl.count = self.state['smooth_loss']
        for cb, st in zip(self._trackers(), self.state['trackers']):
            for k, v in st.items(): setattr(cb, k, v)

    def before_epoch(self):
        if not self.restored:  # first epoch actually run after a resume
            rng_restore(self.state['rng'], self.dls)
            self.restored = True

    def after_cancel_epoch(self): self.skipped = True
    def after_epoch(self):
        if getattr(self, 'skipped', False): self.skipped = False; return
        if rank_distrib() != 0: return
        sl = self.recorder.smooth_loss
        scaler = getattr(self.learn, 'scaler', None)
        state = dict(epoch=int(self.epoch), n_epoch=int(self.n_epoch), model=self.raw_model.state_dict(),
                     opt=self.opt.state_dict(), rng=rng_snapshot(self.dls), rows=self.run_rec.rows,
                     smooth_loss=[torch.as_tensor(sl.val).as_subclass(torch.Tensor).clone(), sl.count],
                     scaler=scaler.state_dict() if scaler is not None else None,
                     trackers=[{k: getattr(cb, k) for k in ('best', 'wait') if hasattr(cb, k)} for cb in self._trackers()],
                     extra={k: obj.state_dict() for k, obj in self.extras.items()})
        # The previous checkpoint stays as prev.pth: if last.pth is ever found damaged (a crash of the machine), the
        # run resumes one epoch earlier instead of not at all.
        if self.path.is_file(): self.path.replace(prev_checkpoint(self.path))
        torch_save(state, self.path)

    def _trackers(self): return [cb for cb in self.learn.cbs if isinstance(cb, TrackerCallback)]


class BestWeights(TrackerCallback):
    """The weights of the epoch with the best test accuracy, kept in memory for the end of the run and written
    atomically to `path` so that a resumed run still has them. fastai's SaveModelCallback writes in place, and at the
    end of the fit reads back the file it has just written."""
    # Before EarlyStoppingCallback (60) can cancel the fit on this epoch, and before WeightEMA (65) swaps the raw
    # weights back: keep what was validated.
    order = TrackerCallback.order - 1

    def __init__(self, path: Path, model, monitor: str = 'accuracy', resume: bool = False):
        super().__init__(monitor=monitor, reset_on_fit=False)
        self.path, self.raw_model, self.weights = Path(path), model, None
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
        if rank_distrib() == 0: torch_save(self.weights, self.path)


class GracefulStop(Callback):
    """First Ctrl-C or SIGTERM: finish the current batch and cancel the fit the fastai way, so every callback's
    `after_cancel_fit` restores what it swapped; the last completed epoch's checkpoint stays. A second Ctrl-C stops
    at once."""
    order = 0  # first: the stop takes effect before any other callback's after_batch work on the last batch

    def __init__(self, every: int = 1): self.every, self.requested, self.signal_name, self._old = every, False, None, {}

    def _handler(self, signum, frame):
        if self.requested: raise KeyboardInterrupt
        self.requested, self.signal_name = True, signal.Signals(signum).name

    def before_fit(self):
        if threading.current_thread() is not threading.main_thread(): return
        for s in (signal.SIGINT, signal.SIGTERM): self._old[s] = signal.signal(s, self._handler)

    def after_batch(self):
        # Distributed, every rank must stop at the same batch: the flag is agreed every `every` batches.
        if self.iter % self.every == 0 and any_rank(self.requested):
            self.requested = True
            raise CancelFitException

    def restore(self):
        "Put back the previous handlers (called by the trainer in a `finally`)."
        for s, h in self._old.items(): signal.signal(s, h)
        self._old = {}


# A training batch's loss above this many times a uniform guess's (ln C for C classes: 230 for CIFAR-10) has exploded:
# a correct class scored ~230 logits below the best. Healthy CIFAR runs stay under 1 × ln C after the first batches;
# `quick --lr 1e6` reached 1e9 (issue 16's report), so the bound separates the two by orders of magnitude.
EXPLODED = 100


class StopOnNaN(Callback):
    """Cancel the fit when training diverges, recording where: a training loss that is not finite or has exploded
    (above EXPLODED × ln(classes) per image), or a validation loss that is not finite. The checkpoint of the last good
    epoch is kept. Checked every `every` batches, agreed across ranks."""
    order = Recorder.order - 1

    def __init__(self, every: int = 1): self.every, self.where = every, None

    def after_batch(self):
        if not self.training or self.iter % self.every: return
        loss = self.loss.detach().float()
        if getattr(self.learn.loss_func, 'reduction', 'mean') == 'sum': loss = loss / len(self.yb[0])  # per image
        limit = EXPLODED * math.log(max(self.pred.shape[-1], 2))
        if any_rank(not bool(torch.isfinite(loss).all()) or bool((loss > limit).any())):
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

"""The resumable checkpoint (RUN_DIR/checkpoints/last.pth), both directions in one place: `Checkpointer.capture`
writes every key of `KEYS` after each completed epoch and the restore steps read every one back, each at the moment
fastai lets it be put back. tests/test_checkpoint.py fails when a key is written and never read.

Everything is plain tensors, lists and dicts, so `torch.load(weights_only=True)` reads it: no pickled objects."""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.tracker import TrackerCallback
from fastai.learner import SkipToEpoch
from fastai.torch_core import rank_distrib

from ..errors import ConfigError
from ..rundir import BackgroundWrites, detached, torch_save
from .restore import SwapsState

# key -> who reads it back on resume, and when
KEYS = {
    'epoch': 'restore_before_fit: the fit starts at the next epoch',
    'model': 'restore_before_fit: the raw model, before any wrapper (DDP) is built around it',
    'opt': 'restore_before_fit: the optimiser, created for these parameters first',
    'scaler': "before_fit: the fp16 loss scaler, once the precision callback has made this run's",
    'smooth_loss': "before_fit: the Recorder's smoothed loss",
    'trackers': "before_fit: best/wait of each tracker (best weights, early stopping)",
    'extra': 'before_fit: state of objects that carry their own (the weight average)',
    'rng': 'before_epoch of the first epoch that runs: every RNG, as the cut left it',
    'rows': 'RunRecorder: the metrics of the completed epochs (resume_rows)',
    'run': 'training: the recipe, device, precision and time segments that the resumed run checks and continues',
}


# ---- RNG state as plain lists and tensors ---------------------------------------------------------------------

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


# ---- reading a checkpoint -------------------------------------------------------------------------------------

def prev_checkpoint(path: Path) -> Path: return Path(path).with_name('prev.pth')


def load_checkpoint(ck: Path) -> dict:
    "last.pth, or, if it is missing or damaged, the one before it (prev.pth) with a warning; else a clear refusal."
    prev, damaged = prev_checkpoint(ck), None
    for path in (ck, prev):
        if not path.is_file(): continue
        try: state = torch.load(path, weights_only=True, map_location='cpu')
        except Exception as e:
            damaged = damaged or f"{path} is damaged ({type(e).__name__}: {str(e)[:120]})"
            continue
        if path == prev:
            warnings.warn(f"{damaged or f'{ck} is missing'}; resuming from the checkpoint before it, {prev} "
                          f"(epoch {state['epoch'] + 1}).", stacklevel=3)
        return state
    if damaged: raise ConfigError(f"{damaged}, and there is no earlier checkpoint: this run cannot be resumed; "
                                  f"start it again (cifar-fast train RECIPE).")
    raise ConfigError(f"run {ck.parent.parent} has no checkpoint yet (no epoch completed); start it again.")


def resume_rows(state: dict | None) -> list | None: return None if state is None else state['rows']


def restore_before_fit(state: dict, learn) -> int:
    """Weights and optimiser of a resumed run, before the fit (and before DDP wraps the model); the epoch to start at.
    A checkpoint of another architecture is a clear refusal, not a load_state_dict traceback."""
    try: learn.raw_model.load_state_dict(state['model'])
    except RuntimeError as e:
        raise ConfigError(f"the checkpoint's weights do not fit this run's model ({str(e).splitlines()[0][:160]}): the "
                          f"model or its options changed since the checkpoint was written. Resume with the code and "
                          f"recipe the run started with, or start a new run.") from None
    learn.create_opt()
    learn.opt.load_state_dict(state['opt'])
    return state['epoch'] + 1


# ---- writing one, and the in-fit restores ---------------------------------------------------------------------

class Checkpointer(SwapsState, Callback):
    """After each completed epoch, everything needed to continue exactly (`KEYS`), written atomically, the previous one
    kept as prev.pth; on resume, puts back what can only be put back inside the fit. With `background` (a GPU run)
    the write happens while the next epoch trains (serialising and fsync took ~40 ms of a 0.3 s epoch on the GPU run
    profiled), from a copy taken at the epoch's end; the fit waits for it before the next checkpoint and on every way
    out (`restore`). The price: a kill -9 during that write resumes from the epoch before. On a CPU, where an epoch
    takes minutes, the write stays in the loop and the last completed epoch is always on disk."""
    order = SkipToEpoch.order + 1  # after the trackers (60), whose state it saves, and fastai's SkipToEpoch (70)

    def __init__(self, path: Path, model, recorder_cb, state: dict | None = None, extras: dict | None = None,
                 run_info=None, background: bool = False):
        """`extras`: name -> object with state_dict/load_state_dict (e.g. the weight average) saved and restored too.
        `run_info`: a callable giving the 'run' entry (recipe, device, precision, segments) at each checkpoint."""
        self.path, self.raw_model, self.run_rec, self.state = Path(path), model, recorder_cb, state
        self.extras, self.restored, self.run_info, self.skipped = extras or {}, state is None, run_info, False
        self.writes = BackgroundWrites(background)

    def capture(self) -> dict:
        "The checkpoint's contents now, at the end of a completed epoch."
        sl = self.recorder.smooth_loss
        scaler = getattr(self.learn, 'scaler', None)
        return dict(epoch=int(self.epoch), model=self.raw_model.state_dict(), opt=self.opt.state_dict(),
                    scaler=scaler.state_dict() if scaler is not None else None,
                    smooth_loss=[torch.as_tensor(sl.val).as_subclass(torch.Tensor).clone(), sl.count],
                    trackers=[{k: getattr(cb, k) for k in ('best', 'wait') if hasattr(cb, k)}
                              for cb in self._trackers()],
                    extra={k: obj.state_dict() for k, obj in self.extras.items()},
                    rng=rng_snapshot(self.dls), rows=self.run_rec.rows,
                    run=self.run_info() if self.run_info else {})

    def before_fit(self):
        if self.state is None: return
        st = self.state
        scaler, saved_scaler = getattr(self.learn, 'scaler', None), st['scaler']  # empty unless fp16 on CUDA
        if scaler is not None and scaler.is_enabled() and saved_scaler: scaler.load_state_dict(saved_scaler)
        sl = self.recorder.smooth_loss
        sl.val, sl.count = st['smooth_loss']
        for cb, saved in zip(self._trackers(), st['trackers']):
            for k, v in saved.items(): setattr(cb, k, v)
        extra = st['extra']
        for k, obj in self.extras.items(): obj.load_state_dict(extra[k])

    def before_epoch(self):
        if not self.restored:  # first epoch actually run after a resume (SkipToEpoch cancels the ones before it)
            rng_restore(self.state['rng'], self.dls)
            self.restored = True

    def after_cancel_epoch(self): self.skipped = True

    def after_epoch(self):
        if self.skipped: self.skipped = False; return
        if rank_distrib() != 0: return
        state = detached(self.capture()) if self.writes.background else self.capture()
        self.writes.wait()  # the previous epoch's first: prev.pth is always the checkpoint before last.pth
        self.writes.submit(self._write, state)

    def _write(self, state: dict):
        # The previous checkpoint stays as prev.pth: if last.pth is ever found damaged (a crash of the machine), the
        # run resumes one epoch earlier instead of not at all.
        if self.path.is_file(): self.path.replace(prev_checkpoint(self.path))
        torch_save(state, self.path)

    def after_fit(self): self.writes.wait()  # after a normal end and after a cancel (a stop signal) alike

    def restore(self, learn):
        "On an exception (which skips after_fit): the checkpoint being written is finished, not left half-done."
        try: self.writes.wait()
        except OSError: pass  # the exception under way says what went wrong; a full disk would fail the next write

    def _trackers(self): return [cb for cb in self.learn.cbs if isinstance(cb, TrackerCallback)]

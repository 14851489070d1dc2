"""The recipe's fastai Learner: model, loss, optimiser and parameter groups, the Learner-level callbacks (mixing,
precision, speed techniques), and the two things done with it before a fit: lr_find and torch.compile's warm-up;
and `lr_find` on a recipe alone (`cifar-fast lr-find`), into a folder of its own.
`training` builds runs on it; notebooks can use it directly."""
from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn
from fastai.callback.core import event
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import minimum, slide, steep, valley
from fastai.learner import CastToTensor, Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import default_device, to_device

from .callback.checkpoint import rng_restore, rng_snapshot
from .callback.lean import LeanRecorder
from .callback.mixup import mix_callbacks
from .callback.precision import precision_callbacks
from .callback.sam import sam_callbacks
from .callback.speed import DeviceAccuracy, LazySync, WhiteningBias, init_whitening
from .console import interactive
from .data import cache_dir, recipe_dls
from .data.fast import FastDL
from .distributed import dist_info
from .errors import ConfigError
from .machine import Choices, apply_threads, choose, seed_run
from .models import create_model, validate_model
from .optim import opt_func, splitter
from .plots import plot_lr_find
from .recipe import LR_SUGGESTIONS, Recipe, recipe_hash, to_dict
from .rundir import new_run_dir, write_json

SUGGEST_FUNCS = dict(valley=valley, slide=slide, minimum=minimum, steep=steep)


class PlainCrossEntropyLossFlat(CrossEntropyLossFlat):
    """fastai's `CrossEntropyLossFlat` (integer targets, so MixUp/CutMix mix the loss, not the labels) returning a plain
    tensor: fastai's wraps the prediction as a `TensorBase`, which sends every op on the loss (its reduction, the
    backward, the Recorder's reads) through Python `__torch_function__`, 14 dispatches a training step."""
    def _contiguous(self, x): return x.transpose(self.axis, -1).contiguous() if isinstance(x, torch.Tensor) else x


def loss_func(r: Recipe):
    "Cross-entropy with integer targets and optional smoothing, summed or averaged over the batch."
    return PlainCrossEntropyLossFlat(label_smoothing=r.label_smoothing, reduction=r.speed.loss_reduction)


def learner_callbacks(r: Recipe, choices: Choices) -> list:
    "Callbacks that belong to the Learner (active in fit and lr_find alike): mixing, precision, speed techniques."
    # channels_last needs no callback (fastai's ChannelsLast would only convert the model again): build_learner
    # converts the model once, before any compile, and the data layer makes the batches in that layout.
    cbs = mix_callbacks(r.mixup, r.cutmix, r.mix_switch) + precision_callbacks(choices.precision) + sam_callbacks(r.sam)
    if r.speed.whiten: cbs.append(WhiteningBias(r.speed.whiten_bias_epochs))
    if r.speed.sync_every > 1: cbs.append(LazySync(r.speed.sync_every))
    return cbs


def build_learner(r: Recipe, dls, path: Path, choices: Choices):
    """A fastai Learner for the recipe; `path` is the run folder, so nothing is written inside the dataset. `choices`
    are the recipe's machine settings as resolved for this run (`machine.choose`)."""
    if torch.device(dls.device).type == 'cpu':
        # Denormal floats (tiny gradients once a class is learnt) made CPU epochs 30× slower here (resnet20 on the
        # synthetic set: 21 s vs 0.65 s per epoch on a 2-core EPYC); flushing them to zero costs nothing in accuracy.
        torch.set_flush_denormal(True)
    model = create_model(r.model, **r.model_kwargs)
    if r.speed.whiten:  # from the data, once; a resumed run loads the same weights from its checkpoint
        init_whitening(model.to(dls.device), dls)
    if choices.channels_last:  # before compiling: the compiled graph is specialised to the weights' layout
        model = model.to(memory_format=torch.channels_last)
    if choices.compile:
        compile_cache_dir()
        model = torch.compile(model, mode=None if choices.compile is True else choices.compile)  # None: its default
    return CifarLearner(dls, model, loss_func=loss_func(r), opt_func=opt_func(r), wd=r.wd, path=path,
                        model_dir='checkpoints', metrics=DeviceAccuracy() if r.speed.sync_every > 1 else accuracy,
                        splitter=splitter(r), cbs=learner_callbacks(r, choices))


class CifarLearner(Learner):
    """fastai's Learner, saying which module is the model itself: `model` is what trains (compiled when compile is on,
    wrapped in DDP during a distributed fit), `raw_model` the module inside, whose state dicts have no `_orig_mod.`
    prefix and which export writes. Its events reach only the callbacks that handle them (`_handlers`), and its
    per-batch bookkeeping is fastai's at less host cost (callback.lean): the same records, fewer ops around it."""
    def __init__(self, dls, model, **kwargs):
        super().__init__(dls, model, **kwargs)
        rec = self.recorder
        self.remove_cb(rec)
        self.add_cb(LeanRecorder(rec.add_time, rec.train_metrics, rec.valid_metrics, rec.smooth_loss.beta))
        # The fast engine's batches are plain tensors already: fastai's cast back to them is pure overhead there
        if all(isinstance(dl, FastDL) for dl in dls.loaders): self.remove_cb(CastToTensor)

    def __call__(self, event_name):
        if isinstance(event_name, str): self._call_one(event_name)
        else:  # fastai also takes a list of event names
            for e in event_name: self._call_one(e)

    def _call_one(self, event_name):
        for cb in self._handlers(event_name): cb(event_name)

    def _set_device(self, b):
        """The batch on the model's device, as fastai's (whose two branches both come to that), without its per-batch
        `default_device()`, about 20 µs of asking CUDA, nor a copy when the batch is there already (the fast engine
        makes its batches there)."""
        dev = next(self.model.parameters()).device
        if isinstance(b, tuple) and all(isinstance(t, torch.Tensor) and t.device == dev for t in b): return b
        return to_device(b, dev)

    def __getstate__(self):
        "Pickled (`export`) without the handler table: a cache, holding the last fit's callbacks."
        return {k: v for k, v in super().__getstate__().items() if k not in ('_handler_key', '_handler_table')}

    def _handlers(self, event_name: str) -> list:
        """The callbacks, in fastai's order, that define `event_name` (every one for after_fit, which resets each
        callback's `run`): the same calls as fastai's, which asks every callback for every event and has each one
        without a handler look the name up through fastcore's GetAttr into the Learner and the model, raising and
        catching an AttributeError, about 90 times a training step. Built again whenever the callbacks change."""
        key = tuple(map(id, self.cbs))
        d = self.__dict__
        if d.get('_handler_key') != key: d['_handler_key'], d['_handler_table'] = key, {}
        table = d['_handler_table']
        if event_name not in table:
            if not hasattr(event, event_name): raise Exception(f'missing {event_name}')  # as fastai's _call_one
            table[event_name] = [cb for cb in self.cbs.sorted('order')
                                 if event_name == 'after_fit' or _handles(cb, event_name)]
        return table[event_name]

    @property
    def raw_model(self) -> nn.Module:
        m = self.model
        while True:
            if isinstance(m, nn.parallel.DistributedDataParallel): m = m.module
            elif isinstance(getattr(m, '_orig_mod', None), nn.Module): m = m._orig_mod
            else: return m


def _handles(cb, event_name: str) -> bool:
    "Does callback `cb` define a handler for `event_name` (in its class or set on the instance)?"
    return callable(getattr(type(cb), event_name, None)) or event_name in vars(cb)


def compile_cache_dir() -> Path:
    """torch.compile's on-disk caches (Inductor's FX-graph and kernel caches, on by default in torch) under cifar_fast's
    cache folder instead of torch's default in /tmp, which a reboot empties: a rerun of a recipe on this machine loads
    compiled code instead of compiling again. $TORCHINDUCTOR_CACHE_DIR, when set, wins."""
    return Path(os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR', str(cache_dir() / 'inductor')))


def quiet_progress(learn, show_progress: bool):
    """fastai's bars in a terminal or notebook; outside one they write megabytes of redraws to the log, and the
    Recorder's fallback logger prints raw lists: there the run's own `log` reports each epoch instead."""
    if show_progress: return
    if any(isinstance(cb, ProgressCallback) for cb in learn.cbs): learn.remove_cb(ProgressCallback)
    learn.logger = _no_log


def _no_log(*args): pass


def run_lr_find(learn, suggest=LR_SUGGESTIONS, num_it: int = 100) -> dict:
    """fastai's `lr_find` with all four suggestions; afterwards weights, optimiser and every RNG are exactly as
    before (fastai restores weights but advances the RNGs, #3013, and an interrupt would skip its restore)."""
    snap, weights = rng_snapshot(learn.dls), copy.deepcopy(learn.model.state_dict())
    opt, model_dir = learn.opt, Path(learn.path) / learn.model_dir
    before = set(model_dir.glob('tmp*')) if model_dir.is_dir() else set()
    try:
        with learn.no_logging():
            res = learn.lr_find(suggest_funcs=[SUGGEST_FUNCS[s] for s in suggest], show_plot=False, num_it=num_it)
        curve = dict(lrs=[float(x) for x in learn.recorder.lrs], losses=[float(x) for x in learn.recorder.losses])
    finally:
        learn.model.load_state_dict(weights)
        learn.opt = opt
        rng_restore(snap, learn.dls)
        # fastai's LRFinder keeps the weights in a temporary folder under model_dir that only its after_fit removes,
        # which an interruption skips.
        for d in (set(model_dir.glob('tmp*')) - before) if model_dir.is_dir() else ():
            shutil.rmtree(d, ignore_errors=True)
    return dict(suggestions={k: float(v) for k, v in res._asdict().items()}, **curve)


def compile_warmup(learn) -> float:
    "Trigger torch.compile on one batch (train and eval) and time it; weights, grads and RNGs restored after."
    snap, weights = rng_snapshot(learn.dls), copy.deepcopy(learn.model.state_dict())
    t0 = time.perf_counter()
    try:
        xb, yb = learn.dls.train.one_batch()
        learn.model.train(); learn.loss_func(learn.model(xb), yb).backward()
        learn.model.eval()
        with torch.no_grad(): learn.model(xb)
    finally:
        learn.model.load_state_dict(weights); learn.model.zero_grad(set_to_none=True)
        rng_restore(snap, learn.dls)
    return time.perf_counter() - t0


def lr_find(r: Recipe, out_dir: str | Path | None = None, device=None, runs_root='runs', show_progress=None) -> dict:
    "`lr_find` on exactly the recipe's setup; writes lr_find.png and lr_find.json into a new folder; weights untouched."
    if dist_info().distributed: raise ConfigError("lr_find runs in one process: run it without torchrun/accelerate.")
    validate_model(r.model, r.model_kwargs)
    out_dir = Path(out_dir) if out_dir else new_run_dir(f'{r.name}-lr_find', Path(runs_root))
    device = torch.device(device or default_device())
    choices = choose(r, device)
    apply_threads(choices.threads)
    seed_run(r.seed, r.deterministic)
    show_progress = interactive() if show_progress is None else show_progress
    dls = recipe_dls(r, device, progress=show_progress, channels_last=choices.channels_last)
    learn = build_learner(r, dls, out_dir, choices)
    quiet_progress(learn, show_progress)
    found = run_lr_find(learn)
    write_json(out_dir / 'recipe.json', dict(recipe=to_dict(r), hash=recipe_hash(r)))
    write_json(out_dir / 'lr_find.json', found)
    plot_lr_find(found, out_dir / 'lr_find.png')
    return dict(found, out_dir=out_dir, learn=learn)

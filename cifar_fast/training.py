"""recipe -> (dls, model) -> Learner + callbacks -> fit -> run folder. The CLI, recipe scripts and notebooks all
come through `train` and `lr_find` here."""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import minimum, slide, steep, valley
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import default_device, set_seed

from .callback.mixup import mix_callbacks
from .callback.precision import precision_callbacks, resolve_precision
from .callback.run import Checkpointer, GracefulStop, RunRecorder, StopOnNaN, rng_restore, rng_snapshot
from .callback.schedule import schedule_callback
from .callback.speed import (DeviceAccuracy, LazySync, Lookahead, WeightEMA, WhiteningBias, all_params_splitter, decoupled_hypers,
                             init_whitening, norm_bias_splitter)
from .data import Augment, cache_dir, cifar_dls
from .errors import CifarFastError, ConfigError
from .models import create_model
from .optim import muon_splitter, opt_func
from .recipe import LR_SUGGESTIONS, Recipe, from_dict, recipe_hash, to_dict
from .console import RunConsole
from .distributed import DistInfo, barrier, broadcast_object, dist_info, distrib_ctx, init_process_group, peer_failure
from .rundir import (atomic_write_bytes, environment, new_run_dir, read_json, run_state, set_status, torch_save, write_json)

SUGGEST_FUNCS = dict(valley=valley, slide=slide, minimum=minimum, steep=steep)


# ---- building blocks ------------------------------------------------------------------------------------------

def build_dls(r: Recipe, device=None, rank: int = 0, world_size: int = 1, progress: bool = True):
    "The recipe's DataLoaders. Build them after seeding: each fastai DataLoader draws its RNG when created."
    d = r.data
    aug = Augment(translate=d.translate, pad_mode=d.pad_mode, flip=d.flip, alt_flip=d.alt_flip, cutout=d.cutout)
    # The recipe's batch size is the global batch: each of `world_size` processes takes its share. The fast engine
    # shards itself by rank; DataBlock loaders are sharded by fastai's DistributedDL (see distributed.py).
    if d.engine == 'datablock': rank, world = 0, 1
    else: world = world_size
    return cifar_dls(d.source, engine=d.engine, bs=d.batch_size // world_size, val_bs=d.val_batch_size,
                     train_size=d.train_size, valid_size=d.valid_size, aug=aug, policy=d.policy,
                     num_workers=d.num_workers, skip_bad=d.skip_bad, device=device, rank=rank,
                     world_size=world, channels_last=r.channels_last, progress=progress)


def loss_func(r: Recipe):
    "Cross-entropy with integer targets (so MixUp/CutMix mix the loss, not the labels) and optional smoothing."
    return CrossEntropyLossFlat(label_smoothing=r.label_smoothing, reduction=r.speed.loss_reduction)


def hypers(r: Recipe, lr: float) -> tuple:
    """(lr, wd, per-group lr scales) for fit: airbench's decoupled units converted to torch's, and, with a BatchNorm
    bias lr scale or Muon, one value per parameter group with the bias decay scaled down to match. The Muon group's
    lr is `speed.muon_lr` as given (Muon normalises its step, so no batch-size conversion applies)."""
    wd = r.wd
    if r.speed.decoupled: lr, wd = decoupled_hypers(lr, r.wd, r.momentum, r.data.batch_size, r.speed.loss_reduction)
    s = r.speed.bias_lr_scale
    if r.speed.muon:
        scales, wds = [s, r.speed.muon_lr / lr, 1.], [wd / s, r.speed.muon_wd, wd]
        return [lr * k for k in scales], wds, tuple(scales)
    if s == 1: return lr, wd, None
    return [lr * s, lr], [wd / s, wd], (s, 1.)


def learner_callbacks(r: Recipe, precision: str) -> list:
    "Callbacks that belong to the Learner (active in fit and lr_find alike): mixing, precision, speed techniques."
    cbs = mix_callbacks(r.mixup, r.cutmix, r.mix_switch) + precision_callbacks(precision)
    if r.channels_last:
        from fastai.callback.channelslast import ChannelsLast
        cbs.append(ChannelsLast())
    if r.speed.whiten: cbs.append(WhiteningBias(r.speed.whiten_bias_epochs))
    if r.speed.sync_every > 1: cbs.append(LazySync(r.speed.sync_every))
    return cbs


def build_learner(r: Recipe, dls, path: Path, precision: str):
    "A fastai Learner for the recipe; `path` is the run folder, so nothing is written inside the dataset."
    if torch.device(dls.device).type == 'cpu':
        # Denormal floats (tiny gradients once a class is learnt) made CPU epochs 30× slower here (resnet20 on the
        # synthetic set: 21 s vs 0.65 s per epoch on a 2-core EPYC); flushing them to zero costs nothing in accuracy.
        torch.set_flush_denormal(True)
    model = create_model(r.model, **r.model_kwargs)
    if r.speed.whiten:  # from the data, once; a resumed run loads the same weights from its checkpoint
        init_whitening(model.to(dls.device), dls)
    raw = model
    if r.compile:
        compile_cache_dir()
        model = torch.compile(model)
    if r.speed.muon: splitter = muon_splitter
    else: splitter = norm_bias_splitter if r.speed.bias_lr_scale != 1 else all_params_splitter
    learn = Learner(dls, model, loss_func=loss_func(r), opt_func=opt_func(r), wd=r.wd, path=path, model_dir='checkpoints',
                    metrics=DeviceAccuracy() if r.speed.sync_every > 1 else accuracy,  # same values, fewer syncs
                    splitter=splitter, cbs=learner_callbacks(r, precision))
    learn.raw_model = raw  # uncompiled module: for state dicts without `_orig_mod.` and for export
    return learn


def compile_cache_dir() -> Path:
    """torch.compile's on-disk caches (Inductor's FX-graph and kernel caches, on by default in torch) under cifar_fast's
    cache folder instead of torch's default in /tmp, which a reboot empties: a rerun of a recipe on this machine loads
    compiled code instead of compiling again. $TORCHINDUCTOR_CACHE_DIR, when set, wins."""
    return Path(os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR', str(cache_dir() / 'inductor')))


def _quiet_progress(learn, show_progress: bool):
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
    opt = learn.opt
    try:
        with learn.no_logging():
            res = learn.lr_find(suggest_funcs=[SUGGEST_FUNCS[s] for s in suggest], show_plot=False, num_it=num_it)
        curve = dict(lrs=[float(x) for x in learn.recorder.lrs], losses=[float(x) for x in learn.recorder.losses])
    finally:
        learn.model.load_state_dict(weights)
        learn.opt = opt
        rng_restore(snap, learn.dls)
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


# ---- the run --------------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    "What `train` returns: the run folder, the summary written there, and the Learner (best/last weights loaded)."
    run_dir: Path
    summary: dict
    learn: object = field(repr=False, default=None)


def train(r: Recipe, run_dir: str | Path | None = None, resume: str | Path | None = None, device=None,
          show_progress: bool | None = None, log=None, runs_root: str | Path = 'runs', extra_cbs=(),
          source_file: str | Path | None = None) -> RunResult:
    """Train `r` into a run folder (new under `runs_root`, or `resume` an interrupted one from its last completed
    epoch). Events go to run_dir/console.log and, with `log=RunConsole(terminal=…)`, to a terminal. The recipe's
    `source_file`, when given, is saved beside the results as recipe.py."""
    log = log if isinstance(log, RunConsole) else RunConsole()  # console.log is written either way
    try: return _train(r, run_dir, resume, device, show_progress, log, runs_root, extra_cbs, source_file)
    finally: log.close()


def _open_run(r: Recipe | None, run_dir, resume, runs_root, info: DistInfo):
    "(recipe, run folder, checkpoint state or None): a resumed run's own recipe and state, or a new folder (rank 0 makes it)."
    if resume is None:
        if info.is_main:
            run_dir = Path(run_dir) if run_dir else new_run_dir(r.name, Path(runs_root))
            run_dir.mkdir(parents=True, exist_ok=True)
        return r, Path(broadcast_object(str(run_dir) if info.is_main else None, info)), None
    run_dir = Path(resume)
    if run_state(run_dir) == 'complete': raise ConfigError(f"run {run_dir} is already complete; nothing to resume.")
    ck = run_dir / 'checkpoints' / 'last.pth'
    if not ck.is_file(): raise ConfigError(f"run {run_dir} has no checkpoint yet (no epoch completed); start it again.")
    return from_dict(read_json(run_dir / 'recipe.json')['recipe']), run_dir, torch.load(ck, weights_only=True, map_location='cpu')


def _train(r, run_dir, resume, device, show_progress, log, runs_root, extra_cbs, source_file) -> RunResult:
    from .plots import plot_curves, plot_lr_find
    info = dist_info()
    device = info.device(device) if info.distributed else torch.device(device or default_device())
    if info.distributed and r is not None and isinstance(r.lr, str) and resume is None:
        raise ConfigError(f"lr={r.lr!r} runs lr_find, which runs in one process: run `cifar-fast lr-find RECIPE` first, "
                          f"then train with --lr <number>.")
    if info.distributed and r is not None and r.data.batch_size % info.world_size:
        raise ConfigError(f"data.batch_size={r.data.batch_size} is the global batch: it must divide evenly over the "
                          f"{info.world_size} processes.")
    init_process_group(info, device)
    r, run_dir, state = _open_run(r, run_dir, resume, runs_root, info)
    main = info.is_main
    status = partial(set_status, run_dir) if main else (lambda *a, **k: None)  # rank 0 alone writes the run folder
    precision = resolve_precision(r.precision, device)
    show_progress = (_interactive() if show_progress is None else show_progress) and main
    t_start = time.perf_counter()

    # 1. data and model, after seeding (every rank the same seed: the same permutation, each its own shard)
    set_seed(r.seed, reproducible=True)
    dls = build_dls(r, device, info.rank, info.world_size, progress=show_progress)
    learn = build_learner(r, dls, run_dir, precision)
    _quiet_progress(learn, show_progress)
    n_params = sum(p.numel() for p in learn.raw_model.parameters())
    if state is None and main:
        write_json(run_dir / 'recipe.json', dict(recipe=to_dict(r), hash=recipe_hash(r)))
        if source_file: atomic_write_bytes(run_dir / 'recipe.py', Path(source_file).read_bytes())
        write_json(run_dir / 'env.json', environment(device, precision, r.seed, dict(
            data_source=str(getattr(dls, 'cifar_source', None)), classes=list(dls.vocab), n_train=len(dls.train.dataset),
            n_valid=len(dls.valid.dataset), params=n_params, world_size=info.world_size,
            wandb_sweep_id=os.environ.get('WANDB_SWEEP_ID'),
            compile_cache=str(compile_cache_dir()) if r.compile else None)))
    status('running', pid=os.getpid(), world_size=info.world_size)
    if main: log.open(run_dir)
    else: log = RunConsole()  # other ranks print nothing
    log('start', dict(run_dir=run_dir, recipe=r, precision=precision, device=device, params=n_params,
                      resumed_from=None if state is None else state['epoch'] + 1))

    # 2. the learning rate: given, found by lr_find, or (resuming) the one found before the cut
    lr = r.lr
    if isinstance(lr, str) and state is not None: lr = read_json(run_dir / 'lr_find.json')['lr']
    elif isinstance(lr, str):
        found = run_lr_find(learn)
        lr = found['suggestions'][r.lr]
        write_json(run_dir / 'lr_find.json', dict(found, chosen=r.lr, lr=lr))
        plot_lr_find(found, run_dir / 'lr_find.png', chosen=r.lr)
        log('lr_find', dict(found['suggestions'], chosen=r.lr, lr=lr))
    compile_seconds = compile_warmup(learn) if r.compile else 0.

    # 3. fit-time callbacks, then fit (resumed: weights, optimiser and position from the checkpoint)
    rec = RunRecorder(run_dir, rows=state['rows'] if state else None, log=lambda row, n: log('epoch', dict(row, n_epoch=n)))
    check_every = 10 if info.distributed else 1  # stopping is agreed across ranks, which costs a collective
    stop, nan = GracefulStop(every=check_every), StopOnNaN(every=max(r.speed.sync_every, check_every))
    lr, wd, group_scales = hypers(r, lr)
    ema = WeightEMA(r.speed.ema, r.speed.ema_warmup) if r.speed.ema else None
    cbs = [schedule_callback(r, lr[-1] if group_scales else lr, group_scales), rec,
           Checkpointer(run_dir / 'checkpoints' / 'last.pth', learn.raw_model, rec, state, extras=dict(ema=ema) if ema else None),
           stop, nan, *extra_cbs]
    if ema: cbs.append(ema)
    if r.speed.lookahead: cbs.append(Lookahead(r.speed.lookahead_start, r.speed.lookahead_every))
    wb = _wandb_callback(r, run_dir, n_params, log)
    if wb is not None: cbs.append(wb)
    if r.checkpoint == 'best': cbs.append(SaveModelCallback(monitor='accuracy', fname='best', reset_on_fit=False))
    if r.patience: cbs.append(EarlyStoppingCallback(monitor='accuracy', patience=r.patience, reset_on_fit=False))
    start_epoch = 0
    if state is not None:
        learn.raw_model.load_state_dict(state['model'])
        learn.create_opt(); learn.opt.load_state_dict(state['opt'])
        start_epoch = state['epoch'] + 1
    base_loss, outcome = learn.loss_func, 'failed'
    resume_hint = f'cifar-fast train --resume {run_dir}'
    try:
        try:
            with distrib_ctx(learn, info, sync_bn=r.sync_bn):
                learn.fit(r.epochs, lr=lr, wd=wd, cbs=cbs, reset_opt=state is None, start_epoch=start_epoch)
        except KeyboardInterrupt:
            outcome = 'interrupted'
            status('interrupted', epoch=len(rec.rows), resume=resume_hint)
            raise
        except BaseException as e:
            if info.distributed and peer_failure(e):
                msg = (f"another process of this {info.world_size}-process job died or stopped answering "
                       f"({str(e).splitlines()[-1].strip()[:200]}); its logs say why. The checkpoint of the last completed "
                       f"epoch is kept: relaunch with the same launcher and `train --resume {run_dir}`.")
                status('failed', epoch=len(rec.rows), error=msg)
                raise DistributedJobFailed(msg) from e
            status('failed', epoch=len(rec.rows), error=f'{type(e).__name__}: {e}')
            raise
        finally:
            learn.loss_func = base_loss  # MixUp/CutMix swap it and restore it only on a normal or cancelled exit
            stop.restore()

        # 4. how it ended: diverged, interrupted, or complete (evaluate and write the results, rank 0)
        if nan.where is not None:
            outcome = 'diverged'
            kept = (f'the last good checkpoint (epoch {len(rec.rows) - 1}) is kept' if rec.rows
                    else 'no epoch had completed, so there is no checkpoint')
            msg = (f"loss became {nan.where['loss']} at epoch {nan.where['epoch']}, batch {nan.where['batch']}: "
                   f"training stopped; {kept}. Lower the learning rate (try `cifar-fast lr-find`).")
            status('diverged', epoch=len(rec.rows), message=msg)
            raise TrainingDiverged(msg)
        if stop.requested:
            outcome = 'interrupted'
            status('interrupted', epoch=len(rec.rows), signal=stop.signal_name, resume=resume_hint)
            return RunResult(run_dir, dict(state='interrupted', epochs_completed=len(rec.rows)), learn)
        summary = dict(state='worker', rank=info.rank)
        if main:
            summary = finish_run(learn, r, rec, run_dir, n_params, time.perf_counter() - t_start, compile_seconds,
                                 precision, plot_curves, log)
            if wb is not None: wb.log_final(learn, summary, run_dir)
        barrier()  # no rank leaves before rank 0 has written the results
        outcome = 'complete'
        return RunResult(run_dir, summary, learn)
    finally:
        if wb is not None: wb.close(outcome)


def _wandb_callback(r: Recipe, run_dir: Path, n_params: int, log):
    "The W&B logger when the recipe enables it, on rank 0 only (see cifar_fast.callback.wandb)."
    from fastai.torch_core import rank_distrib
    if not r.wandb.enabled or r.wandb.mode == 'disabled' or rank_distrib() != 0: return None
    from .callback.wandb import WandbCallback
    return WandbCallback(r, run_dir, n_params=n_params, log=log)


class DistributedJobFailed(CifarFastError):
    "A peer process of a distributed job died."


class TrainingDiverged(CifarFastError):
    "The loss became NaN or infinite."


def finish_run(learn, r: Recipe, rec: RunRecorder, run_dir: Path, n_params: int, wall: float, compile_seconds: float,
               precision: str, plot_curves, log) -> dict:
    "Evaluate, then write model.pth, export.pkl, curves.png and, last, summary.json."
    from .inference import predict_loader
    rows = rec.rows
    best_i = max(range(len(rows)), key=lambda i: rows[i]['accuracy'])
    # The Checkpointer's last.pth holds the last completed epoch; with checkpoint='best', SaveModelCallback has
    # already loaded its best.pth into the model (saved from the possibly compiled module: strip `_orig_mod.`).
    ck = torch.load(run_dir / 'checkpoints' / 'last.pth', weights_only=True)
    last = ck['extra']['ema'] if r.speed.ema else ck['model']  # with speed.ema, the average is what was validated
    best = last
    if (run_dir / 'checkpoints' / 'best.pth').is_file():
        sd = torch.load(run_dir / 'checkpoints' / 'best.pth', weights_only=True)
        best = {k.removeprefix('_orig_mod.'): v for k, v in sd.items()}
    learn.raw_model.load_state_dict(best if r.checkpoint == 'best' else last)
    # Our own loop, as `cifar-fast evaluate` runs it: fastai's get_preds all-gathers across ranks whenever
    # WORLD_SIZE > 1, which would hang here, where rank 0 alone evaluates.
    t0 = time.perf_counter()
    preds, targs, _ = predict_loader(learn.raw_model, learn.dls.valid)
    eval_acc = float((preds.argmax(1) == targs).float().mean())
    eval_seconds = time.perf_counter() - t0
    tta_acc = None
    if r.tta:
        tp, tt, _ = predict_loader(learn.raw_model, learn.dls.valid, r.tta)
        tta_acc = float((tp.argmax(1) == tt).float().mean())
    torch_save(dict(best=best, last=last, best_epoch=rows[best_i]['epoch'], selected=r.checkpoint), run_dir / 'model.pth')
    _export(learn, run_dir / 'export.pkl')
    plot_curves(rows, run_dir / 'curves.png', title=f'{r.name} ({r.model})')
    n_train = len(learn.dls.train.dataset)  # the whole training set per epoch, whichever rank's share this is
    train_secs = sum(x['train_seconds'] for x in rows)
    summary = dict(recipe=r.name, model=r.model, hash=recipe_hash(r), params=n_params, epochs=len(rows),
                   epochs_planned=r.epochs, test_accuracy=eval_acc, test_accuracy_tta=tta_acc, tta_level=r.tta,
                   last_epoch_accuracy=rows[-1]['accuracy'], best_epoch=rows[best_i]['epoch'],
                   best_epoch_accuracy=rows[best_i]['accuracy'], checkpoint=r.checkpoint, seed=r.seed,
                   wall_seconds=round(wall, 2), train_seconds=round(train_secs, 2), compile_seconds=round(compile_seconds, 2),
                   eval_seconds=round(eval_seconds, 2), train_images_per_sec=round(n_train * len(rows) / max(train_secs, 1e-9), 1),
                   precision=precision, n_test=len(targs), stopped_early=len(rows) < r.epochs)
    write_json(run_dir / 'summary.json', summary)  # last: its presence marks a complete run
    set_status(run_dir, 'complete', epoch=len(rows))
    log('end', dict(summary, run_dir=run_dir))
    return summary


def _export(learn, path: Path):
    "learn.export() of the uncompiled model: a compiled one recompiles on load and on every new input shape."
    model = learn.model
    try:
        learn.model = learn.raw_model
        learn.export(path.name)
    finally: learn.model = model


def lr_find(r: Recipe, out_dir: str | Path | None = None, device=None, runs_root='runs', show_progress=None) -> dict:
    "`lr_find` on exactly the recipe's setup; writes lr_find.png and lr_find.json into a new folder; weights untouched."
    from .plots import plot_lr_find
    out_dir = Path(out_dir) if out_dir else new_run_dir(f'{r.name}-lr_find', Path(runs_root))
    device = torch.device(device or default_device())
    precision = resolve_precision(r.precision, device)
    set_seed(r.seed, reproducible=True)
    show_progress = _interactive() if show_progress is None else show_progress
    if dist_info().distributed: raise ConfigError("lr_find runs in one process: run it without torchrun/accelerate.")
    learn = build_learner(r, build_dls(r, device, progress=show_progress), out_dir, precision)
    _quiet_progress(learn, show_progress)
    found = run_lr_find(learn)
    write_json(out_dir / 'recipe.json', dict(recipe=to_dict(r), hash=recipe_hash(r)))
    write_json(out_dir / 'lr_find.json', found)
    plot_lr_find(found, out_dir / 'lr_find.png')
    return dict(found, out_dir=out_dir, learn=learn)


def _interactive() -> bool:
    import sys
    try:
        from IPython import get_ipython
        if get_ipython() is not None: return True
    except ImportError: pass
    return sys.stdout.isatty()



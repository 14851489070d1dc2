"""What a run writes into its folder, at its start (recipe.json, env.json, data.json) and at its end (model.pth,
export.pkl, curves.png, interpret/ and, last, summary.json), from one prediction of the test split. The story that
calls these is cifar_fast.training."""
from __future__ import annotations

import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .data import CIFAR_STATS
from .drawing import Drawer
from .errors import TrainingDiverged
from .learner import compile_cache_dir
from .machine import cpu_has_native_bf16
from .plots import plot_curves
from .predfile import save_predictions
from .predictions import RunInterpretation, accuracy, interpret_predictions, predict_levels
from .recipe import Recipe, recipe_hash, to_dict
from .rundir import atomic_write_bytes, environment, torch_save, write_json

if TYPE_CHECKING: from .training import FitCallbacks, Run


@dataclass
class RunResult:
    """What `train` returns: the run folder, the summary written there, the Learner (chosen weights loaded) and the
    test-set predictions every report of the run was derived from. An interrupted run's summary says so
    (state 'interrupted', epochs_completed, signal, exit_code, resume)."""
    run_dir: Path
    summary: dict
    learn: object = field(repr=False, default=None)
    predictions: RunInterpretation | None = field(repr=False, default=None)


def record_run(run: Run, dls, source_file=None) -> None:
    """recipe.json (+ recipe.py), env.json, and data.json: the classes in output order and the statistics images were
    normalised with, which evaluate, interpret and predict read back."""
    r, d = run.r, run.run_dir
    write_json(d / 'recipe.json', dict(recipe=to_dict(r), hash=recipe_hash(r)))
    if source_file: atomic_write_bytes(d / 'recipe.py', Path(source_file).read_bytes())
    write_json(d / 'env.json', environment(run.device, run.choices.precision, r.seed, dict(choices=run.choices.record(),
        data_source=str(getattr(dls, 'cifar_source', None)), n_train=len(dls.train.dataset),
        n_valid=len(dls.valid.dataset), params=run.n_params, world_size=run.info.world_size,
        cpu_bf16_native=cpu_has_native_bf16(), deterministic=r.deterministic,
        cudnn=dict(deterministic=r.deterministic, benchmark=not r.deterministic),
        wandb_sweep_id=os.environ.get('WANDB_SWEEP_ID'),
        compile_cache=str(compile_cache_dir()) if run.choices.compile else None)))
    write_json(d / 'data.json', dict(classes=[str(c) for c in dls.vocab], mean=list(CIFAR_STATS[0]),
                                     std=list(CIFAR_STATS[1]), size=32, channels='RGB',
                                     stats_source='fastai.vision.data.cifar_stats'))


def select_weights(r: Recipe, learn, cbs: FitCallbacks, best_epoch: int) -> dict:
    """The run's final weights, decided here and nowhere else: 'last' is what the last epoch validated (the EMA average
    with speed.ema, the lookahead average with speed.lookahead once it began, else the raw weights), 'best' those of
    `best_epoch`, the one with the best test accuracy; the recipe's `checkpoint` selects one. Both stay in memory:
    nothing is read back from disk."""
    last = cbs.ema.state_dict() if cbs.ema else learn.raw_model.state_dict()
    last = {k: v.detach().clone() for k, v in last.items()}  # the model's own tensors change when 'best' is loaded
    best = cbs.best.weights if cbs.best.weights is not None else last
    epoch = best_epoch if r.checkpoint == 'best' else cbs.rec.rows[-1]['epoch']
    # lookahead averages from epoch lookahead_start + 1 (1-based) on: weights of an earlier epoch are the raw ones
    average = 'ema' if cbs.ema else 'lookahead' if r.speed.lookahead and epoch > r.speed.lookahead_start else None
    return dict(best=best, last=last, selected=r.checkpoint, average=average)


def finish_run(run: Run, cbs: FitCallbacks) -> tuple[dict, RunInterpretation]:
    """One prediction pass over the test split, plain and (if the recipe asks) with TTA: summary.json, interpret/ and
    W&B are all derived from it. Then model.pth, export.pkl, curves.png, interpret/ and, last, summary.json."""
    r, learn, rows, d = run.r, run.learn, cbs.rec.rows, run.run_dir
    # Start to end of training, every segment of a resumed run added (each up to the checkpoint the next went on
    # from: work redone after a cut is not counted, so the figure means what an uninterrupted run's does).
    run.segments = run.earlier_segments + [run.segment()]
    run.wall_seconds = sum(s['wall_seconds'] for s in run.segments)
    drawer = run.drawer if run.drawer.enabled else Drawer()  # curves.png always; CIFAR_FAST_RUN_FIGURES=0 skips
    drawer.draw(plot_curves, rows, d / 'curves.png', title=f'{r.name} ({r.model})')  # interpret's figures only
    best_i = max(range(len(rows)), key=lambda i: rows[i]['accuracy'])
    weights = select_weights(r, learn, cbs, rows[best_i]['epoch'])
    learn.raw_model.load_state_dict(weights[weights['selected']])
    # Our own loop, as `cifar-fast evaluate` runs it: fastai's get_preds all-gathers across ranks whenever
    # WORLD_SIZE > 1, which would hang here, where rank 0 alone evaluates.
    # A top-loss grid of 16, or of the whole test split when a subset is smaller (a run is not lost at its end)
    # One pass gives the plain prediction and the recipe's TTA: the TTA level's views include the plain one.
    t0 = time.perf_counter()
    preds = predict_levels(learn.raw_model, learn.dls.valid, sorted({0, r.tta}))
    res = interpret_predictions(*preds[0], learn.dls.vocab, learn.dls.valid,
                                min(16, len(learn.dls.valid.dataset)), model=learn.raw_model, tta=0,
                                seconds=dict(predict=time.perf_counter() - t0), split='test',
                                title=f'{d.name} ({r.model})')
    tta_probs = preds[r.tta][0] if r.tta else None
    tta_acc = accuracy(tta_probs, res.targs) if r.tta else None
    save_predictions(d, {0: res.probs, **({r.tta: tta_probs} if r.tta else {})}, res.targs, res.classes, res.dl,
                     getattr(learn.dls, 'cifar_source', None), r.data.valid_size, r.checkpoint, weights['average'])
    torch_save(dict(best=weights['best'], last=weights['last'], best_epoch=rows[best_i]['epoch'],
                    selected=weights['selected'], average=weights['average']), d / 'model.pth')
    export_learner(learn, d / 'export.pkl')
    # CIFAR_FAST_RUN_FIGURES=0: the CSVs and report.md only, for many short runs (a test suite, a sweep of smoke runs);
    # each figure is ~1 s of matplotlib on a 2-core CPU, and `cifar-fast interpret RUN_DIR` draws them later.
    res.save(d / 'interpret', figures=run.drawer.enabled, drawer=run.drawer)
    summary = run_summary(run, rows, best_i, res, tta_acc, weights)
    drawer.wait()  # every figure on disk (drawn beside the run on a GPU: cifar_fast.drawing) before the run is complete
    if cbs.wandb is not None: cbs.wandb.log_final(res, summary, d)
    write_json(d / 'summary.json', summary)  # last: its presence marks a complete run
    run.status('complete', epoch=len(rows))
    run.log('end', dict(summary, run_dir=d))
    return summary, res


def run_summary(run: Run, rows: list, best_i: int, res: RunInterpretation, tta_acc, weights: dict) -> dict:
    "summary.json's contents: the test result, which weights gave it, and what the run cost."
    r = run.r
    n_train = len(run.learn.dls.train.dataset)  # the whole training set per epoch, whichever rank's share this is
    train_secs = sum(x['train_seconds'] for x in rows)
    return dict(recipe=r.name, model=r.model, hash=recipe_hash(r), params=run.n_params, epochs=len(rows),
                epochs_planned=r.epochs, test_accuracy=accuracy(res.probs, res.targs), test_accuracy_tta=tta_acc,
                tta_level=r.tta, last_epoch_accuracy=rows[-1]['accuracy'], best_epoch=rows[best_i]['epoch'],
                best_epoch_accuracy=rows[best_i]['accuracy'], checkpoint=weights['selected'],
                weights_average=weights['average'], seed=r.seed, wall_seconds=round(run.wall_seconds, 2),
                train_seconds=round(train_secs, 2), compile_seconds=round(run.compile_seconds, 2),
                eval_seconds=round(res.seconds['predict'], 2),
                train_images_per_sec=round(n_train * len(rows) / max(train_secs, 1e-9), 1),
                precision=run.choices.precision, n_test=res.n, stopped_early=len(rows) < r.epochs,
                resumed=len(run.segments) - 1, segments=run.segments)


def export_learner(learn, path: Path) -> Path:
    """learn.export() of the uncompiled model (a compiled one recompiles on load and on every new input shape), with
    empty DataLoaders (no images), written to a temporary file and renamed into place."""
    model, tmp = learn.model, path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        learn.model = learn.raw_model
        learn.export(tmp.name)  # into learn.path, the run folder
        (Path(learn.path) / tmp.name).replace(path)
    finally:
        learn.model = model
        (Path(learn.path) / tmp.name).unlink(missing_ok=True)
    return path


# ---- how a run that stops early leaves its folder ---------------------------------------------------------------

def check_ending(run: Run, cbs: FitCallbacks) -> str:
    "How the fit ended: 'diverged' (raised, with the way out), 'interrupted' (resumable) or 'complete'."
    rows, nan = cbs.rec.rows, cbs.nan.where
    if nan is not None:
        kept = (f'the last good checkpoint (epoch {rows[-1]["epoch"]}) is kept' if rows
                else 'no epoch had completed, so there is no checkpoint')
        where = f"at epoch {nan['epoch']}" + (f", batch {nan['batch']}" if nan['batch'] is not None else '')
        how = f"became {nan['loss']:.4g}" if math.isfinite(nan['loss']) else f"became {nan['loss']}"
        if math.isfinite(nan['loss']): how += f" (over {nan['limit']}, 100 × a uniform guess's: it exploded)"
        msg = (f"{nan['what']} {how} {where}: training diverged and stopped; {kept}. "
               f"Lower the learning rate (try `cifar-fast lr-find`).")
        run.status('diverged', epoch=len(rows), message=msg)
        raise TrainingDiverged(msg)
    # A signal after the fit's last batch check (in the last epoch's checkpoint) stops the run here, before its end.
    return 'interrupted' if cbs.stop.requested or run.signals.requested else 'complete'


def close_run(run: Run) -> None:
    """Last of every way out: a new run folder that holds none of our records (stopped or refused before recipe.json
    was written) is removed, and the lock is released."""
    if run.made and run.info.is_main and not (run.run_dir / 'recipe.json').is_file():
        shutil.rmtree(run.run_dir, ignore_errors=True)
    run.drawer.close()
    if run.lock is not None: run.lock.release()


def interrupted(run: Run, signum) -> RunResult:
    """The result and status of a run stopped by a signal: resumable from its last completed epoch's checkpoint where
    one exists, else said to be started again."""
    name = signal.Signals(signum).name if signum else None  # None: stopped for another process's signal
    can_resume = (run.run_dir / 'checkpoints' / 'last.pth').is_file()
    hint = run.resume_hint if can_resume else None
    run.status('interrupted', epoch=run.epochs_done, signal=name, resume=hint,
               **({} if can_resume else dict(message='stopped before the first epoch completed: start the run again')))
    return RunResult(run.run_dir, dict(state='interrupted', epochs_completed=run.epochs_done, signal=name,
                                       exit_code=128 + int(signum or signal.SIGINT), resume=hint), run.learn)

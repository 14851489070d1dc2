"""recipe -> (dls, model) -> Learner + callbacks -> fit -> run folder, told as a short story of named steps in
`_train`. The CLI, recipe scripts and notebooks all come through `train` here; the Learner itself, and `lr_find` on a
recipe alone, are in `cifar_fast.learner`; what a run writes, and how its fit ended, in `cifar_fast.run_files`. Every
way out of `train` (the end, a stop signal at any step, an exception of any kind, a refusal) leaves an honest
status.json, no temporary files and the run folder's lock released."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from fastai.callback.tracker import EarlyStoppingCallback
from fastai.torch_core import default_device
from rich.markup import escape

from .callback.checkpoint import Checkpointer, restore_before_fit, resume_rows
from .callback.restore import restore_all
from .callback.run import BestWeights, GracefulStop, RunRecorder, StopOnNaN
from .callback.schedule import schedule_callback
from .callback.speed import Lookahead, ProgressiveResize, WeightEMA
from .console import RunConsole, interactive
from .data import CIFAR_STATS, recipe_dls, run_data_source
from .distributed import DistInfo, barrier, broadcast_object, dist_info, distrib_ctx, init_process_group, peer_failure
from .drawing import Drawer, figures_mode
from .errors import ConfigError, DistributedJobFailed, TrainingDiverged
from .learner import build_learner, compile_warmup, quiet_progress, run_lr_find
from .machine import Choices, apply_threads, choose, seed_run
from .optim import ParamGroups, param_groups
from .plots import plot_lr_find
from .recipe import Recipe, to_dict
from .resume import check_resumable, check_same_machine_choices, resumed_recipe
from .rundir import new_run_dir, os_error_message, read_json, set_status, write_json
from .preflight import check_launch
from .run_files import RunResult, check_ending, close_run, finish_run, interrupted, record_run
from .runlock import RunLock
from .stop import StopRequested, StopSignals

# ---- the run --------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Run:
    "What the steps of one run share."
    r: Recipe
    run_dir: Path
    info: DistInfo
    device: torch.device
    log: RunConsole
    signals: StopSignals
    state: dict | None = None  # the checkpoint a resumed run continues from
    show_progress: bool = False
    choices: Choices = field(default_factory=Choices)  # precision, memory format, compile, threads for this machine
    made: bool = False  # this call created the run folder
    lock: RunLock | None = None
    data: tuple = (None, None)  # (source, why) a resumed run reads; (None, None): the recipe's own data.source
    t_start: float = field(default_factory=time.perf_counter)
    started: str = field(default_factory=lambda: time.strftime('%Y-%m-%dT%H:%M:%S'))
    learn: object = None
    cbs: FitCallbacks | None = None
    n_params: int = 0
    lr: float | None = None  # the peak lr as the recipe gives it (found by lr_find when it names a suggestion)
    groups: ParamGroups | None = None  # each parameter group's lr, weight decay and momentum, from `lr`
    compile_seconds: float = 0.
    wall_seconds: float = 0.
    segments: list = field(default_factory=list)  # set at the end: every segment of the run, this one last
    drawer: Drawer = field(default_factory=Drawer)  # where the end of the run draws its figures (cifar_fast.drawing)

    def status(self, state: str, **info):
        "status.json, written by rank 0 alone (it owns the run folder), wherever it can still be written."
        if not self.info.is_main or not self.run_dir.is_dir(): return
        try: set_status(self.run_dir, state, **info)
        except OSError: pass  # a full disk or a folder gone read-only: the error itself reaches the user instead

    @property
    def resume_hint(self) -> str: return f'cifar-fast train --resume {self.run_dir}'

    @property
    def epochs_done(self) -> int:
        if self.cbs is not None: return len(self.cbs.rec.rows)
        return len(self.state['rows']) if self.state else 0

    @property
    def earlier_segments(self) -> list:
        "The segments (start to last checkpoint) of the runs this one resumes; an uninterrupted run has none."
        return list((self.state or {}).get('run', {}).get('segments', []))

    def segment(self) -> dict:
        "This process's stretch of the run, up to now."
        return dict(host=socket.gethostname(), pid=os.getpid(), started=self.started,
                    first_epoch=(self.state['epoch'] + 2) if self.state else 1,
                    wall_seconds=round(time.perf_counter() - self.t_start, 3))

    def checkpoint_info(self) -> dict:
        "The checkpoint's 'run' entry: what a resume checks (recipe, device, precision) and the time so far."
        return dict(recipe=to_dict(self.r), device=str(self.device), precision=self.choices.precision,
                    segments=self.earlier_segments + [self.segment()])


@dataclass(eq=False)
class FitCallbacks:
    "The callbacks one fit adds, by role; `all` in the order they are passed to fastai."
    rec: RunRecorder
    stop: GracefulStop
    nan: StopOnNaN
    best: BestWeights
    ema: WeightEMA | None
    wandb: object | None
    all: list


def train(r: Recipe | None, run_dir: str | Path | None = None, resume: str | Path | None = None, device=None,
          show_progress: bool | None = None, log=None, runs_root: str | Path = 'runs', extra_cbs=(),
          source_file: str | Path | None = None, data: str | Path | None = None) -> RunResult:
    """Train `r` into a run folder (new under `runs_root`, or `resume` an interrupted one from its last completed
    epoch; `data` then names this machine's copy of CIFAR-10, preferred to the path the run recorded). Events go to
    run_dir/console.log and, with `log=RunConsole(terminal=…)`, to a terminal. The recipe's `source_file`, when given,
    is saved beside the results as recipe.py. SIGINT, SIGTERM and SIGHUP at any step return an interrupted result."""
    log = log if isinstance(log, RunConsole) else RunConsole()  # console.log is written either way
    try:
        with StopSignals(distributed=dist_info().distributed) as signals:
            return _train(r, run_dir, resume, device, show_progress, log, runs_root, extra_cbs, source_file, data,
                          signals)
    finally: log.close()


def _train(r, run_dir, resume, device, show_progress, log, runs_root, extra_cbs, source_file, data, signals):
    run = open_run(r, run_dir, resume, device, show_progress, log, runs_root, data, signals)
    outcome = 'failed'
    try:
        build(run, source_file)
        choose_lr(run)
        warm_up_compiler(run)
        run.cbs = cbs = fit_callbacks(run, extra_cbs)
        with fit_status(run, cbs):
            fit(run, cbs)
        if check_ending(run, cbs) == 'interrupted':
            outcome = 'interrupted'
            return interrupted(run, signals.signum)
        result = finish(run, cbs)
        outcome = 'complete'
        return result
    except (StopRequested, KeyboardInterrupt) as e:  # a signal outside the fit, or a third one inside it
        outcome = 'interrupted'
        return interrupted(run, getattr(e, 'signum', signal.SIGINT))
    except TrainingDiverged: raise  # check_ending wrote 'diverged' with the way out
    except OSError as e:  # writing the results: a full disk, a folder gone read-only
        run.status('failed', epoch=run.epochs_done, error=os_error_message(e))
        raise
    except BaseException as e:
        if run.state is None or run.learn is not None:  # a refusal to resume leaves the run's status as it was
            run.status('failed', epoch=run.epochs_done, error=f'{type(e).__name__}: {e}')
        raise
    finally:
        if run.cbs is not None and run.cbs.wandb is not None: run.cbs.wandb.close(outcome)
        close_run(run)


# ---- its steps ------------------------------------------------------------------------------------------------

def open_run(r: Recipe | None, run_dir, resume, device, show_progress, log, runs_root, data, signals) -> Run:
    """Check what can be checked before anything is written, then make the run folder (or reopen one to resume it)
    and take its lock: one process trains into a run folder at a time."""
    info = dist_info()
    device = info.device(device) if info.distributed else torch.device(device or default_device())
    if r is not None and resume is None: check_launch(r, info, device)
    init_process_group(info, device)
    made, lock, state, src = False, None, None, (None, None)
    if resume is None:
        if info.is_main:
            run_dir = Path(run_dir) if run_dir else new_run_dir(r.name, Path(runs_root))
            made = not run_dir.exists() or not any(run_dir.iterdir())
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = RunLock(run_dir).acquire()
        run_dir = Path(broadcast_object(str(run_dir) if info.is_main else None, info))
    else:
        run_dir = Path(resume)
        check_resumable(run_dir)
        if info.is_main: lock = RunLock(run_dir).acquire()
        try:
            r, state = resumed_recipe(run_dir)
            src = run_data_source(r.data.source, data, str(run_dir / 'recipe.json'))
        except BaseException:
            if lock: lock.release()
            raise
    show_progress = (interactive() if show_progress is None else show_progress) and info.is_main
    choices = choose(r, device, int(os.environ.get('LOCAL_WORLD_SIZE', 1)))
    return Run(r, run_dir, info, device, log, signals, state, show_progress, choices, made, lock, src)


def build(run: Run, source_file=None) -> None:
    """Seed, then data and model (every rank the same seed: the same permutation, each its own shard); a resumed run
    takes back its weights and optimiser; a new run records its recipe, environment and data in the folder; then the
    log opens."""
    r, info = run.r, run.info
    seed_run(r.seed, r.deterministic)
    apply_threads(run.choices.threads)
    source, why = run.data
    dls = recipe_dls(r, run.device, info.rank, info.world_size, progress=run.show_progress, stats=CIFAR_STATS,
                     source=source, source_origin=why,
                     origin=None if run.state is None else str(run.run_dir / 'recipe.json'),
                     channels_last=run.choices.channels_last)
    if len(dls.train) == 0:
        raise ConfigError(f"the training set ({len(dls.train.dataset)} images) is smaller than one batch "
                          f"(data.batch_size={r.data.batch_size}): the last partial batch is dropped, so nothing would "
                          f"train. Use --data.batch_size {len(dls.train.dataset) // info.world_size} or less.")
    run.learn = learn = build_learner(r, dls, run.run_dir, run.choices)
    quiet_progress(learn, run.show_progress)
    run.n_params = sum(p.numel() for p in learn.raw_model.parameters())
    if run.state is not None:
        restore_before_fit(run.state, learn)
        check_same_machine_choices(run.state, run.device, run.choices.precision)
    if run.state is None and info.is_main: record_run(run, dls, source_file)
    if info.is_main: run.drawer = Drawer(figures_mode(run.device.type))  # a GPU's: helper process, warm by the end
    run.status('running', pid=os.getpid(), host=socket.gethostname(), world_size=info.world_size)
    if info.is_main: run.log.open(run.run_dir)
    else: run.log = RunConsole()  # other ranks print nothing
    run.log('start', dict(run_dir=run.run_dir, recipe=r, choices=run.choices, device=run.device, params=run.n_params,
                          resumed_from=None if run.state is None else run.state['epoch'] + 1))
    if why: run.log.print(f"data: {escape(str(getattr(dls, 'cifar_source', source)))} — {escape(why)}")


def choose_lr(run: Run) -> None:
    "The learning rate: given, found by lr_find, or (resuming) the one found before the cut; and each group's from it."
    r, lr = run.r, run.r.lr
    if isinstance(lr, str) and run.state is not None: lr = read_json(run.run_dir / 'lr_find.json')['lr']
    elif isinstance(lr, str):
        found = run_lr_find(run.learn)
        lr = found['suggestions'][r.lr]
        write_json(run.run_dir / 'lr_find.json', dict(found, chosen=r.lr, lr=lr))
        plot_lr_find(found, run.run_dir / 'lr_find.png', chosen=r.lr)
        run.log('lr_find', dict(found['suggestions'], chosen=r.lr, lr=lr))
    run.lr, run.groups = lr, param_groups(r, lr)


def warm_up_compiler(run: Run) -> None:
    "With compile on, torch.compile's first (slow) trace now, timed apart from training; weights and RNGs untouched."
    run.compile_seconds = compile_warmup(run.learn) if run.choices.compile else 0.


def fit_callbacks(run: Run, extra_cbs=()) -> FitCallbacks:
    "The callbacks of this fit: schedule, metrics, checkpoints, stopping, weight averages, W&B, trackers."
    r, learn, state = run.r, run.learn, run.state
    gpu = run.device.type == 'cuda'  # checkpoints written while the next epoch trains (callback.checkpoint)
    rec = RunRecorder(run.run_dir, rows=resume_rows(state), log=lambda row, n: run.log('epoch', dict(row, n_epoch=n)))
    check_every = 10 if run.info.distributed else 1  # stopping is agreed across ranks, which costs a collective
    stop, nan = GracefulStop(run.signals, every=check_every), StopOnNaN(every=max(r.speed.sync_every, check_every))
    ema = WeightEMA(r.speed.ema, r.speed.ema_warmup) if r.speed.ema else None
    cbs = [schedule_callback(r, run.groups), rec,
           Checkpointer(run.run_dir / 'checkpoints' / 'last.pth', learn.raw_model, rec, state,
                        extras=dict(ema=ema) if ema else None, run_info=run.checkpoint_info, background=gpu),
           stop, nan, *extra_cbs]
    if ema: cbs.append(ema)
    if r.speed.lookahead: cbs.append(Lookahead(r.speed.lookahead_start, r.speed.lookahead_every))
    if r.speed.low_res: cbs.append(ProgressiveResize(r.speed.low_res, r.speed.low_res_epochs))  # both set: recipe check
    wb = _wandb_callback(r, run.run_dir, run.n_params, run.log)
    if wb is not None: cbs.append(wb)
    best = BestWeights(run.run_dir / 'checkpoints' / 'best.pth', learn.raw_model, resume=state is not None,
                       background=gpu)
    cbs.append(best)
    if r.patience: cbs.append(EarlyStoppingCallback(monitor='accuracy', patience=r.patience, reset_on_fit=False))
    return FitCallbacks(rec, stop, nan, best, ema, wb, cbs)


def _wandb_callback(r: Recipe, run_dir: Path, n_params: int, log):
    "The W&B logger when the recipe enables it, on rank 0 only (see cifar_fast.callback.wandb)."
    from fastai.torch_core import rank_distrib
    if not r.wandb.enabled or r.wandb.mode == 'disabled' or rank_distrib() != 0: return None
    from .callback.wandb import WandbCallback
    return WandbCallback(r, run_dir, n_params=n_params, log=log)


@contextlib.contextmanager
def fit_status(run: Run, cbs: FitCallbacks):
    """Around the fit: stop signals only set a flag (GracefulStop stops every rank at the same batch); a dead peer
    process is named as such; and whatever happens, what the callbacks swapped is put back (callback.restore)."""
    try:
        with run.signals.deferred(): yield
    except BaseException as e:
        if run.info.distributed and peer_failure(e):
            msg = (f"another process of this {run.info.world_size}-process job died or stopped answering "
                   f"({str(e).splitlines()[-1].strip()[:200]}); its logs say why. The checkpoint of the last completed "
                   f"epoch is kept: relaunch with the same launcher and `train --resume {run.run_dir}`.")
            raise DistributedJobFailed(msg) from e
        raise
    finally:
        restore_all(run.learn, cbs.all)


def fit(run: Run, cbs: FitCallbacks) -> None:
    "fastai's fit, from the epoch after a resumed run's checkpoint (its weights and optimiser are back: `build`)."
    lr, wd = run.groups.fit_hypers()
    start_epoch = 0 if run.state is None else run.state['epoch'] + 1
    with distrib_ctx(run.learn, run.info, sync_bn=run.r.sync_bn):
        run.learn.fit(run.r.epochs, lr=lr, wd=wd, cbs=cbs.all, reset_opt=run.state is None, start_epoch=start_epoch)


# ---- the end of a run -----------------------------------------------------------------------------------------

def finish(run: Run, cbs: FitCallbacks) -> RunResult:
    "Rank 0 predicts the test split once and writes the results; no rank leaves before they are written."
    summary, res = dict(state='worker', rank=run.info.rank), None
    if run.info.is_main:
        tta = f' (plain + TTA {run.r.tta})' if run.r.tta else ''
        with run.log.working(f'Predicting the test set{tta} and writing the run folder…'):
            summary, res = finish_run(run, cbs)
    barrier()
    return RunResult(run.run_dir, summary, run.learn, res)

"""Hyperparameter search on one machine, no server: an Optuna study in a journal file inside the runs folder.

Each trial is a normal `train` call into RUNS/<study>/trial-NNNN/; a callback reports each epoch's validation accuracy
to the trial and, when the pruner says so, cancels the fit the fastai way; the trial's status.json then says 'pruned'.
Optuna's journal file is appended to under a lock (optuna.storages.journal.JournalFileBackend), so several processes
on one machine, or nodes sharing the folder, work on one study, and a study killed with SIGKILL continues where it
stopped: a trial left 'running' by a process that is gone is marked failed and its parameters are tried again.
(Optuna's heartbeat, which would do this, is implemented by its RDB storage only, not by JournalStorage.)

`--param` takes `cifar-fast sweep`'s grammar (choices `NAME=V1,V2,...`, parsed and validated by `sweep.parse_params`)
plus ranges: `NAME=LO..HI` (uniform; integers for an int field) and `NAME=LO..HI:log` (log-uniform)."""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, TrainingDiverged
from .export import require
from .recipe import Recipe, apply_overrides, load_recipe, recipe_hash, to_dict
from .rundir import STUDY_FILE, atomic_write_bytes, read_json, read_metrics, run_state, set_status, write_json
from .sweep import _split, parse_params, plain_value

PRUNERS = ('median', 'halving', 'none')
JOURNAL = 'journal.log'  # beside rundir.STUDY_FILE in the study's folder


# ---- the search space -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    "One searched field: a range (lo, hi, log) or a list of choices."
    name: str
    lo: float | int | None = None
    hi: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial):
        "The trial's value for this field, typed as the recipe field is."
        if self.choices:
            key = trial.suggest_categorical(self.name, [json.dumps(plain_value(c)) for c in self.choices])
            return self.choices[[json.dumps(plain_value(c)) for c in self.choices].index(key)]
        if isinstance(self.lo, int): return trial.suggest_int(self.name, self.lo, self.hi, log=self.log)
        return trial.suggest_float(self.name, self.lo, self.hi, log=self.log)

    def record(self) -> dict:
        return dict(choices=[plain_value(c) for c in self.choices]) if self.choices else dict(lo=self.lo, hi=self.hi,
                                                                                                log=self.log)


def _range(text: str) -> tuple[str, str, bool] | None:
    "'5..20:log' -> ('5', '20', True); None for a list of choices."
    body, _, flag = text.strip().partition(':')
    if '..' not in body or _split(body) != [body.strip()]: return None
    if flag not in ('', 'log'): raise ConfigError(f"range {text!r}: the only flag is ':log' (write LO..HI:log).")
    lo, _, hi = body.partition('..')
    return lo.strip(), hi.strip(), flag == 'log'


def parse_space(specs: list[str], recipe: Recipe) -> dict[str, Param]:
    """`['lr=5..20:log', 'label_smoothing=0,0.1,0.2']` -> Params, every name and value (a range's two ends) parsed
    with the recipe field's type and validated on `recipe` by `sweep.parse_params`, before anything starts."""
    ranges, as_lists = {}, []
    for spec in specs:
        key, eq, text = spec.partition('=')
        rng = _range(text) if eq else None
        if rng:
            lo, hi, log = rng
            if not lo or not hi: raise ConfigError(f'--param {spec!r}: a range is LO..HI, e.g. lr=5..20.')
            ranges[key.strip().removeprefix('--').replace('-', '_')] = log
            spec = f'{key}={lo},{hi}'
        as_lists.append(spec)
    lists = parse_params(as_lists, recipe)  # names, types, values, cross-field rules: the sweep's own checks
    space = {}
    for name, values in lists.items():
        if name not in ranges:
            space[name] = Param(name, choices=tuple(values)); continue
        lo, hi = values
        if isinstance(lo, bool) or not isinstance(lo, (int, float)) or type(lo) is not type(hi):
            raise ConfigError(f'--param {name}: a range needs a numeric field ({lo!r}..{hi!r}); give choices instead.')
        if lo >= hi: raise ConfigError(f'--param {name}={lo}..{hi}: the low end must be below the high end.')
        if ranges[name] and lo <= 0: raise ConfigError(f'--param {name}={lo}..{hi}:log: a log range needs LO > 0.')
        space[name] = Param(name, lo, hi, ranges[name])
    return space


# ---- pruning --------------------------------------------------------------------------------------------------

def mark_pruned(run_dir: Path, epoch: int, trial: int, study: str) -> None:
    """The run folder says what happened: status.json 'pruned' at `epoch` (train wrote 'complete': a cancelled fit
    ends like an early stop), and summary.json gains `pruned`, `pruned_at_epoch` and the study."""
    d = Path(run_dir)
    set_status(d, 'pruned', epoch=epoch, study=study, trial=trial,
               message=f'stopped by the study {study!r} pruner after epoch {epoch}; its test result is of that epoch')
    if (d / 'summary.json').is_file():
        write_json(d / 'summary.json', dict(read_json(d / 'summary.json'), pruned=True, pruned_at_epoch=epoch,
                                            study=study, trial=trial))


# ---- the study ------------------------------------------------------------------------------------------------

def _storage(study_dir: Path):
    optuna = require('tune', 'optuna')
    from optuna.storages.journal import JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(str(study_dir / JOURNAL)))


def make_pruner(name: str, warmup: int = 1, startup: int = 3):
    "'median' (Optuna's MedianPruner), 'halving' (SuccessiveHalvingPruner) or 'none', by name."
    optuna = require('tune', 'optuna')
    if name == 'median': return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == 'halving': return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(warmup, 1))
    if name == 'none': return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name!r}: one of {', '.join(PRUNERS)}.")


def _alive(pid: int) -> bool:
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    except PermissionError: pass
    return True


def recover_stale(study) -> list[int]:
    """Trials left RUNNING by a process of this host that is gone (kill -9, out of memory): marked FAIL and their
    parameters queued again. Trials of other hosts cannot be checked from here and are left as they are."""
    from optuna.trial import TrialState
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = t.user_attrs.get('host'), t.user_attrs.get('pid')
        if host != socket.gethostname() or pid is None or _alive(int(pid)): continue
        # the public API sets a trial's own state only
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs=dict(retry_of=t.number), skip_if_exists=False)
        out.append(t.number)
    return out


def tune(recipe: Recipe | str | Path, params: list[str], trials: int, runs_root: str | Path = 'runs',
         study: str | None = None, pruner='median', warmup: int = 1, startup: int = 3, seed: int | None = None,
         device=None, extra_cbs=(), log=None) -> dict:
    """Search `params` of `recipe` until the study holds `trials` finished (complete or pruned) trials; returns the
    study's summary (see `study_summary`). Continues an existing study of the same recipe and search space."""
    optuna = require('tune', 'optuna')
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from .callback.prune import PruneTrial
    from .training import train
    r = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    space = parse_space(params, r)
    if not isinstance(trials, int) or trials < 1: raise ConfigError(f'--trials {trials!r}: a number of trials ≥ 1.')
    pr = make_pruner(pruner, warmup, startup) if isinstance(pruner, str) else pruner
    name = study or f"{r.name}-tune"
    d = Path(runs_root) / name
    spec = dict(recipe=to_dict(r), hash=recipe_hash(r), space={k: p.record() for k, p in space.items()},
                metric='test_accuracy', direction='maximize')
    if (d / STUDY_FILE).is_file():
        old = read_json(d / STUDY_FILE)
        if (old['hash'], old['space']) != (spec['hash'], spec['space']):
            raise ConfigError(f"study {name!r} in {d} searches another recipe or space ({old['space']}); continue it "
                              f"with the same recipe and --param, or start another with --study NAME.")
    else: write_json(d / STUDY_FILE, dict(spec, created=time.strftime('%Y-%m-%dT%H:%M:%S')))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(study_name=name, storage=_storage(d), direction='maximize', load_if_exists=True,
                             sampler=optuna.samplers.TPESampler(seed=seed), pruner=pr)
    retried = recover_stale(st)
    done = (TrialState.COMPLETE, TrialState.PRUNED)

    def objective(trial):
        over = {k: p.suggest(trial) for k, p in space.items()}
        if r.wandb.enabled:  # a later `wandb sync` shows the study: its name and trial on every run
            over.update({'wandb.name': f'{name}-t{trial.number}', 'wandb.tags': (*r.wandb.tags, f'study:{name}')})
        run_dir = d / f'trial-{trial.number:04d}'
        for k, v in dict(run_dir=str(run_dir), host=socket.gethostname(), pid=os.getpid()).items():
            trial.set_user_attr(k, v)
        cb = PruneTrial(trial)
        res = train(apply_overrides(r, over), run_dir=run_dir, device=device, show_progress=False, log=log,
                    extra_cbs=[cb, *extra_cbs])
        s = res.summary
        if s.get('state') == 'interrupted':  # a stop signal: the study stops too, and this point is tried again
            st.enqueue_trial(trial.params, user_attrs=dict(retry_of=trial.number))
            raise KeyboardInterrupt
        trial.set_user_attr('epochs', s['epochs'])
        trial.set_user_attr('epochs_planned', s['epochs_planned'])
        trial.set_user_attr('train_seconds', s['train_seconds'])
        trial.set_user_attr('wall_seconds', s['wall_seconds'])
        if cb.pruned_at is not None:
            mark_pruned(run_dir, cb.pruned_at, trial.number, name)
            raise optuna.TrialPruned(f'pruned after epoch {cb.pruned_at}')
        return s['test_accuracy']

    left = trials - len(st.get_trials(deepcopy=False, states=done))
    t0 = time.perf_counter()
    if left > 0:
        st.optimize(objective, callbacks=[MaxTrialsCallback(trials, states=done)], catch=(TrainingDiverged,),
                    gc_after_trial=True)
    return dict(study_summary(d), retried=retried, seconds=round(time.perf_counter() - t0, 1))


# ---- reading a study back -------------------------------------------------------------------------------------

def study_dir(study: str | Path, runs_root: str | Path = 'runs') -> Path:
    "A study's folder: a path holding study.json, or a name under `runs_root`."
    for d in (Path(study), Path(runs_root) / str(study)):
        if (d / STUDY_FILE).is_file(): return d
    raise ConfigError(f"no study {study!r}: neither {study} nor {Path(runs_root) / str(study)} holds {STUDY_FILE} "
                      f"(start one with `cifar-fast tune RECIPE --param ... --trials N`).")


def load_study(d: Path):
    optuna = require('tune', 'optuna')
    return optuna.load_study(study_name=Path(d).name, storage=_storage(Path(d)))


def study_summary(d: str | Path) -> dict:
    """Every trial (state, value, params, epochs run of planned, seconds), the best, and what pruning saved: the
    epochs pruned trials did not run times their own mean epoch time (metrics.csv's seconds: train + validation)."""
    from optuna.trial import TrialState
    d = Path(d)
    st = load_study(d)
    rows, saved = [], 0.
    for t in st.get_trials(deepcopy=False):
        a = t.user_attrs
        run = Path(a['run_dir']) if 'run_dir' in a else None
        epochs, planned = a.get('epochs'), a.get('epochs_planned')
        if run is not None and epochs is None and (run / 'metrics.csv').is_file():
            epochs = len(read_metrics(run / 'metrics.csv'))
        if t.state == TrialState.PRUNED and epochs and planned and run is not None and (run / 'metrics.csv').is_file():
            secs = [m['seconds'] for m in read_metrics(run / 'metrics.csv')]  # whole epochs: training and validation
            saved += (planned - epochs) * sum(secs) / len(secs)
        rows.append(dict(number=t.number, state=t.state.name.lower(), value=t.value, params=t.params, epochs=epochs,
                         epochs_planned=planned, wall_seconds=a.get('wall_seconds'), run_dir=str(run) if run else None,
                         run_state=run_state(run) if run is not None and run.is_dir() else None,
                         last_accuracy=(t.intermediate_values[max(t.intermediate_values)]
                                        if t.intermediate_values else None)))
    finished = [x for x in rows if x['state'] == 'complete']
    best = max(finished, key=lambda x: x['value']) if finished else None
    count = lambda s: sum(x['state'] == s for x in rows)
    return dict(study=d.name, dir=str(d), trials=rows, best=best, n_complete=count('complete'),
                n_pruned=count('pruned'), n_failed=count('fail'), n_running=count('running'),
                wall_seconds_sum=round(sum(x['wall_seconds'] or 0 for x in rows), 1),
                epoch_seconds_saved=round(saved, 1))


def importances(d: str | Path) -> dict[str, float]:
    """Parameter importances over the complete trials by Optuna's default evaluator (PED-ANOVA in optuna 5, fANOVA
    before); {} with fewer than three complete trials, where it would only return equal shares."""
    import warnings

    from optuna.trial import TrialState
    optuna = require('tune', 'optuna')
    st = load_study(d)
    if len(st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 3: return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return dict(optuna.importance.get_param_importances(st))
    except (RuntimeError, ValueError): return {}  # a parameter that never varied


def plot_history(summary: dict, path: str | Path) -> Path:
    "Optimisation history PNG: each trial's accuracy (pruned ones at their last reported epoch) and the best so far."
    import io

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = summary['trials']
    fig, ax = plt.subplots(figsize=(7, 4))
    comp = [(x['number'], x['value']) for x in rows if x['state'] == 'complete']
    pruned = [(x['number'], x['last_accuracy']) for x in rows
              if x['state'] == 'pruned' and x['last_accuracy'] is not None]
    if comp: ax.scatter(*zip(*comp), label='complete (test accuracy)', color='tab:blue')
    if pruned: ax.scatter(*zip(*pruned), marker='x', label='pruned (accuracy when stopped)', color='tab:red')
    best, line = -1., []
    for n, v in sorted(comp):
        best = max(best, v); line.append((n, best))
    if line:
        line.append((max(x['number'] for x in rows), line[-1][1]))  # held to the last trial
        ax.step(*zip(*line), where='post', label='best so far', color='tab:green')
    ax.set(xlabel='trial', ylabel='accuracy', title=f"study {summary['study']}")
    ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize='small'); ax.grid(alpha=.3)
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110, bbox_inches='tight'); plt.close(fig)
    return atomic_write_bytes(Path(path), buf.getvalue())


# ---- the command line -----------------------------------------------------------------------------------------

def add_commands(sub) -> None:
    "`cifar-fast tune RECIPE --param ... --trials N` and `cifar-fast tune --show STUDY`."
    hlp = 'search hyperparameters with Optuna, on this machine, no server (a journal file in the runs folder)'
    t = sub.add_parser('tune', help=hlp, description=hlp, allow_abbrev=False)
    t.add_argument('recipe_path', metavar='RECIPE', nargs='?', help='recipe file, e.g. recipes/quick.py')
    t.add_argument('--param', action='append', default=[], metavar='NAME=...',
                   help='choices NAME=V1,V2 or a range NAME=LO..HI (NAME=LO..HI:log for log scale); repeat for more')
    t.add_argument('--trials', type=int, help='finished (complete or pruned) trials the study should hold')
    t.add_argument('--study', help='study name (default <recipe>-tune): its folder is RUNS/<study>')
    t.add_argument('--runs', default='runs', help='runs folder (default runs)')
    t.add_argument('--pruner', default='median', choices=PRUNERS, help='median (default), halving or none')
    t.add_argument('--warmup', type=int, default=1, help='epochs before any trial is pruned (default 1)')
    t.add_argument('--startup', type=int, default=3, help='complete trials before the median pruner acts (default 3)')
    t.add_argument('--seed', type=int, help="the sampler's seed (give each process its own)")
    t.add_argument('--data', help='folder, archive or torchvision pickles for every trial')
    t.add_argument('--show', metavar='STUDY', help='show a study: best trials, importances, history PNG')
    # Other recipe fields, as `train` takes them (e.g. --data.train_size 10000): cli.main hands them over as args.extra
    t.set_defaults(func=cmd_tune, accepts_overrides=True)


def cmd_tune(args) -> int:
    "Run (or continue) a study, or --show one."
    import sys

    from rich.console import Console
    console = Console() if sys.stdout.isatty() else Console(width=150)  # as cli.py: logs read better wide
    if args.show: return show(args.show, args.runs, console)
    if not args.recipe_path: raise ConfigError('name a recipe file, e.g. `cifar-fast tune recipes/quick.py --param '
                                               'lr=5..20:log --trials 12`, or --show STUDY.')
    if args.trials is None: raise ConfigError('give --trials N: how many finished trials the study should hold.')
    from .recipe import parse_overrides
    r = load_recipe(args.recipe_path)
    over = parse_overrides(getattr(args, 'extra', []))
    if args.data: over['data.source'] = args.data
    r = apply_overrides(r, over)
    console.print(f"study [bold]{args.study or r.name + '-tune'}[/bold] in {args.runs}/: {args.trials} trials of "
                  f"{', '.join(args.param)} (pruner {args.pruner})", highlight=False)
    res = tune(r, args.param, args.trials, args.runs, args.study, args.pruner, args.warmup, args.startup, args.seed)
    if res['retried']: console.print(f"trials {res['retried']} had been left running by a killed process: tried again")
    return show(res['dir'], args.runs, console)


def show(study: str, runs_root: str, console) -> int:
    "Tables of the study's trials and importances; writes history.png beside its journal."
    from rich.markup import escape
    from rich.table import Table
    d = study_dir(study, runs_root)
    s = study_summary(d)
    t = Table(title=f"study {escape(s['study'])}: {s['n_complete']} complete, {s['n_pruned']} pruned, "
                    f"{s['n_failed']} failed, {s['n_running']} running", title_justify='left')
    for c in ('trial', 'state', 'accuracy', 'params', 'epochs', 'time'): t.add_column(c)
    order = sorted(s['trials'], key=lambda x: (x['value'] is None, -(x['value'] or 0)))
    for x in order:
        acc = x['value'] if x['value'] is not None else x['last_accuracy']
        t.add_row(str(x['number']), x['state'], f'{100 * acc:.2f}%' if acc is not None else '-',
                  escape(', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                                   for k, v in x['params'].items())),
                  f"{x['epochs']}/{x['epochs_planned']}" if x['epochs'] else '-',
                  f"{x['wall_seconds']:.0f}s" if x['wall_seconds'] else '-')
    console.print(t)
    imp = importances(d)
    if imp:
        console.print('importance (Optuna default evaluator): ' + ', '.join(f'{k} {v:.2f}' for k, v in imp.items()),
                      highlight=False)
    png = plot_history(s, d / 'history.png')
    console.print(f"pruning saved about {s['epoch_seconds_saved']:.0f} s of epochs; history: {escape(str(png))}",
                  highlight=False)
    return 0

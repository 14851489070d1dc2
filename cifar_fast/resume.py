"""Reopening an interrupted run: what may be resumed, by whom, and with which recipe. A resumed run continues exactly
the recipe it started with: an edited recipe.json is refused with each changed field named, fields that a newer
version of cifar_fast added are named with the defaults they take, and another device or precision is said."""
from __future__ import annotations

import warnings
from pathlib import Path

from .callback.checkpoint import load_checkpoint
from .errors import ConfigError
from .recipe import Recipe, dict_hash, flat_fields, from_dict, recipe_changes, to_dict
from .rundir import read_json, run_state


def check_resumable(run_dir: Path) -> None:
    "A run folder that exists, is one of ours and is not finished; else a ConfigError listing the recent runs."
    if not run_dir.is_dir() or not (run_dir / 'recipe.json').is_file():
        what = 'does not exist' if not run_dir.exists() else 'is not a run folder (it has no recipe.json)'
        raise ConfigError(f"--resume {run_dir}: {what}.{recent_runs(run_dir.parent)}")
    state = run_state(run_dir)
    if state == 'complete': raise ConfigError(f"run {run_dir} is already complete; nothing to resume.")
    if state == 'pruned':  # finished: its study recorded it as pruned, and a longer run would not change that record
        raise ConfigError(f"run {run_dir} is a trial its study's pruner stopped ({run_dir / 'status.json'}); nothing "
                          f"to resume. Continue the study with `cifar-fast tune` instead.")


def resumed_recipe(run_dir: Path) -> tuple[Recipe, dict]:
    "(recipe, checkpoint) of an interrupted run, once the recipe is known to be the one its checkpoint was made with."
    recorded = read_json(run_dir / 'recipe.json')
    state = load_checkpoint(run_dir / 'checkpoints' / 'last.pth')
    r = from_dict(recorded['recipe'])
    saved = state.get('run', {}).get('recipe')  # checkpoints from before this check have none
    changes = recipe_changes(saved, recorded['recipe']) if saved is not None else []
    edited = changes or (saved is None and recorded.get('hash') not in (None, dict_hash(recorded['recipe'])))
    if edited:
        what = ('; '.join(changes) if changes else
                f"its hash is {dict_hash(recorded['recipe'])}, not the {recorded.get('hash')} recorded when it started")
        raise ConfigError(f"{run_dir / 'recipe.json'} was changed after the run started ({what}). A resumed run "
                          f"continues the recipe its checkpoint was trained with: put the recorded values back, or "
                          f"train a new run with the new values (cifar-fast train RECIPE --field value).")
    added = sorted(set(flat_fields(to_dict(r))) - set(flat_fields(recorded['recipe'])))
    if added:
        defaults = flat_fields(to_dict(r))
        warnings.warn(f"{run_dir / 'recipe.json'} was written by an earlier version of cifar_fast: the fields "
                      f"{', '.join(f'{k}={defaults[k]!r}' for k in added)} are new and take their defaults.",
                      stacklevel=3)
    return r, state


def check_same_machine_choices(state: dict, device, precision: str) -> None:
    "Say when a run resumes on another kind of device or in another precision: it will not match bit for bit."
    was = state.get('run', {})
    if not was: return
    then = (str(was.get('device', '?')).split(':')[0], was.get('precision'))
    now = (str(device).split(':')[0], precision)
    if then != now:
        warnings.warn(f"resuming on {now[0]} in {now[1]}; the checkpoint was written on {then[0]} in {then[1]}. "
                      f"The run goes on, but its remaining epochs compute differently from an uninterrupted run's.",
                      stacklevel=3)


def recent_runs(root: Path, n: int = 5) -> str:
    "' Most recent runs under ROOT: a, b, c.' (newest first), or a hint where there are none."
    runs = sorted((d for d in root.glob('*') if (d / 'recipe.json').is_file()), key=lambda d: -d.stat().st_mtime)
    if not runs: return f" No run folders under {root}/ (see `cifar-fast runs --runs FOLDER`)."
    return f" Most recent runs under {root}/: " + ', '.join(f'{d.name} ({run_state(d)})' for d in runs[:n]) + '.'

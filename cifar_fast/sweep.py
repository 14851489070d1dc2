"""W&B sweeps from a recipe: `--param lr=0.05,0.1` lists become a sweep config (YAML) whose command trains the recipe
with the agent's `--key=value` overrides. Each value is parsed with the recipe's own field type, checked by building the
Recipe, and refused if the agent could not pass it back intact; all before anything is written."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from .errors import ConfigError, close_matches
from .recipe import Recipe, apply_overrides, field_paths, parse_overrides

METHODS = ('grid', 'random', 'bayes')
# --metric -> the W&B summary key: WandbCallback.log_final copies summary.json's scalars into the run summary
METRICS = {'accuracy': 'test_accuracy', 'accuracy_tta': 'test_accuracy_tta', 'best_accuracy': 'best_epoch_accuracy'}
MAX_COMBOS = 256  # combinations validated together (rules across fields); a Recipe takes ~4 ms to build and validate


def _split(text: str) -> list[str]:
    "'0.1,[8,16],0.2' -> ['0.1', '[8,16]', '0.2']: commas inside brackets belong to the value (tuples, lists)."
    out, depth, cur = [], 0, ''
    for c in text:
        depth += (c in '[({') - (c in '])}')
        if c == ',' and depth == 0: out.append(cur); cur = ''
        else: cur += c
    return [v.strip() for v in [*out, cur] if v.strip()]


def plain_value(v):
    "A value as YAML/JSON holds it (tuples become lists): what the W&B server stores and the agent formats back."
    return [plain_value(x) for x in v] if isinstance(v, (tuple, list)) else v


def _check(r: Recipe, over: dict, what: str):
    "Build the Recipe with `over` applied; any failure is a ConfigError naming the parameter and value."
    from .models import validate_model
    try:
        new = apply_overrides(r, over)
        validate_model(new.model, new.model_kwargs)
    except ConfigError as e: raise ConfigError(f'--param {what}: {e}') from None
    except Exception as e:  # a model builder's own error, e.g. TypeError for model_kwargs.widths=3
        raise ConfigError(f'--param {what}: the model rejects it ({type(e).__name__}: {e}).') from None


def _values(key: str, texts: list[str], r: Recipe) -> list:
    "Each text parsed as the train command parses `--key=text`, validated on `r`, and safe to pass through the agent."
    values = []
    for t in texts:
        try: v = parse_overrides([f'--{key}={t}'])[key]
        except ConfigError as e: raise ConfigError(f'--param {key}={t}: {e}') from None
        if v in values: raise ConfigError(f'--param {key}={t}: value given twice.')
        shown = f'--{key}={plain_value(v)}'  # the agent's ${args}: f'--{name}={value}' of the value the server stores
        try: back = parse_overrides([shown])[key]
        except ConfigError: back = None
        if back != v:
            raise ConfigError(f'--param {key}={t}: the W&B agent would pass it as {shown}, which does not read back '
                              f'as {v!r}; sweep a simpler field (e.g. model_kwargs.<name>) instead.')
        _check(r, {key: v}, f'{key}={t}')
        values.append(v)
    return values


def parse_params(specs: list[str], recipe: Recipe) -> dict[str, list]:
    "`['lr=0.05,0.1', 'mixup=0,0.4']` -> {'lr': [0.05, 0.1], 'mixup': [0.0, 0.4]}, typed and validated on `recipe`."
    if not specs: raise ConfigError('give at least one --param NAME=V1,V2,... e.g. --param lr=0.05,0.1,0.2.')
    paths, params = field_paths(), {}
    for spec in specs:
        key, eq, text = spec.partition('=')
        key = key.strip().removeprefix('--').replace('-', '_')
        if not eq or not key: raise ConfigError(f'--param {spec!r}: write NAME=V1,V2,... e.g. --param lr=0.05,0.1.')
        if key not in paths and not (key.startswith('model_kwargs.') and len(key) > 13):
            raise ConfigError(f'--param {key}: unknown recipe field.{close_matches(key, list(paths))} '
                              f'See `cifar-fast train --help-fields`.')
        if key.startswith('wandb.'):
            raise ConfigError(f'--param {key}: W&B settings are not hyperparameters (the sweep sets project, entity).')
        if key in params: raise ConfigError(f'--param {key} is given twice: put all its values in one list.')
        if not _split(text): raise ConfigError(f'--param {key}: no values (write {key}=V1,V2,...).')
        params[key] = _values(key, _split(text), recipe)
    combos = list(itertools.islice(itertools.product(*params.values()), MAX_COMBOS + 1))
    for c in combos if len(combos) <= MAX_COMBOS else ():  # e.g. data.alt_flip needs data.engine='fast'
        _check(recipe, dict(zip(params, c)), ' '.join(f'{k}={json.dumps(plain_value(v))}' for k, v in zip(params, c)))
    return params


def sweep_config(recipe_path: str | Path, params: dict[str, list], method: str = 'grid',
                 metric: str | None = 'accuracy', project: str | None = None, entity: str | None = None,
                 run_cap: int | None = None) -> dict:
    "The W&B sweep config; its agent runs `python -m cifar_fast.cli train RECIPE --wandb --key=value ...`."
    if method not in METHODS:
        raise ConfigError(f'--method {method!r}: one of {", ".join(METHODS)}.{close_matches(method, METHODS)}')
    metric = None if metric in (None, '', 'none') else metric
    if metric is not None and metric not in METRICS:
        raise ConfigError(f'--metric {metric!r}: one of {", ".join(METRICS)} or none.{close_matches(metric, METRICS)}')
    if metric is None and method != 'grid':
        raise ConfigError(f'--method {method} needs a --metric to rank runs by (e.g. --metric accuracy).')
    if not params: raise ConfigError('a sweep needs at least one --param.')
    if run_cap is not None and run_cap < 1: raise ConfigError(f'--count {run_cap}: a number of runs ≥ 1.')
    path = Path(recipe_path).as_posix()
    cfg = dict(name=f"{Path(path).stem}: {', '.join(params)}", program=path, method=method)
    if metric: cfg['metric'] = dict(name=METRICS[metric], goal='maximize')
    cfg['parameters'] = {k: dict(values=[plain_value(v) for v in vs]) for k, vs in params.items()}
    # W&B's macros: ${env} -> /usr/bin/env, ${interpreter} -> python (from PATH), ${args} -> --key=value per parameter
    cfg['command'] = ['${env}', '${interpreter}', '-m', 'cifar_fast.cli', 'train', path, '--wandb', '${args}']
    cfg.update({k: v for k, v in dict(project=project, entity=entity, run_cap=run_cap).items() if v is not None})
    return cfg


def write_sweep(config: dict, path: str | Path, overwrite: bool = True) -> Path:
    """The sweep config as YAML, written atomically (temporary file renamed into place). With `overwrite=False` (the
    CLI's default) an existing file is refused: it may be the config of a sweep that W&B already runs."""
    import yaml

    from .rundir import atomic_write_bytes
    if not overwrite and Path(path).exists():
        raise ConfigError(f"sweep file {path} already exists: pass --force to replace it, or --out another.yaml.")
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=120)
    head = f"# W&B sweep for {config['program']}; create it with `wandb sweep {Path(path).as_posix()}`\n"
    return atomic_write_bytes(Path(path), (head + text).encode())


def sweep_groups(run_dirs) -> dict[str | None, list[Path]]:
    "Run folders grouped by the W&B sweep id their env.json records, in order; key None: runs outside any sweep."
    from .rundir import read_json
    groups = {}
    for d in map(Path, run_dirs):
        try: sid = read_json(d / 'env.json').get('wandb_sweep_id')
        except (OSError, ValueError): sid = None
        groups.setdefault(sid, []).append(d)
    return groups

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


def _plain(v):
    "A value as YAML/JSON holds it (tuples become lists): what the W&B server stores and the agent formats back."
    return [_plain(x) for x in v] if isinstance(v, (tuple, list)) else v


def _check(r: Recipe, over: dict, what: str):
    "Build the Recipe with `over` applied; any failure is a ConfigError naming the parameter and value."
    try: apply_overrides(r, over)
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
        shown = f'--{key}={_plain(v)}'  # the agent's ${args}: f'--{name}={value}' of the value the server stores
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
    for c in combos if len(combos) <= MAX_COMBOS else ():  # e.g. data.policy needs data.engine='datablock'
        _check(recipe, dict(zip(params, c)), ' '.join(f'{k}={json.dumps(_plain(v))}' for k, v in zip(params, c)))
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
    cfg['parameters'] = {k: dict(values=[_plain(v) for v in vs]) for k, vs in params.items()}
    # W&B's macros: ${env} -> /usr/bin/env, ${interpreter} -> python (from PATH), ${args} -> --key=value per parameter
    cfg['command'] = ['${env}', '${interpreter}', '-m', 'cifar_fast.cli', 'train', path, '--wandb', '${args}']
    cfg.update({k: v for k, v in dict(project=project, entity=entity, run_cap=run_cap).items() if v is not None})
    return cfg


def write_sweep(config: dict, path: str | Path) -> Path:
    "The sweep config as YAML, written atomically (temporary file renamed into place)."
    import yaml

    from .rundir import atomic_write_bytes
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


# ---- command line ---------------------------------------------------------------------------------------------

def add_sweep_parser(subparsers):
    "`cifar-fast sweep RECIPE --param NAME=V1,V2 ...`"
    hlp = 'write a W&B sweep config (YAML) for a recipe and print how to run it'
    s = subparsers.add_parser('sweep', help=hlp, description=hlp, allow_abbrev=False)
    s.add_argument('recipe_path', metavar='RECIPE', help='recipe file, e.g. recipes/quick.py')
    s.add_argument('--param', action='append', default=[], metavar='NAME=V1,V2',
                   help='a recipe field and its values, e.g. --param lr=0.05,0.1 (repeat for more fields)')
    s.add_argument('--method', default='grid', choices=METHODS, help='search method (default grid)')
    s.add_argument('--metric', default='accuracy', help=f"maximise: {', '.join(METRICS)} or none (default accuracy)")
    s.add_argument('--project', help="W&B project (default: the recipe's wandb.project)")
    s.add_argument('--entity', help="W&B entity (default: the recipe's wandb.entity, else your default entity)")
    s.add_argument('--out', help='the YAML file to write (default: sweeps/<recipe name>.yaml)')
    s.add_argument('--count', type=int, help='end the sweep after N runs (run_cap), and `wandb agent --count N`')
    s.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    "Validate the parameters, write the sweep YAML, and print the commands that create and run the sweep."
    import math
    import shlex

    from rich.markup import escape
    from rich.table import Table

    from .cli import console
    from .recipe import load_recipe
    r = load_recipe(args.recipe_path)
    params = parse_params(args.param, r)
    if args.metric == 'accuracy_tta' and not all(t > 0 for t in params.get('tta', [r.tta])):
        raise ConfigError('--metric accuracy_tta needs tta > 0 in every run (the recipe or --param tta=1,2).')
    project, entity = args.project or r.wandb.project, args.entity or r.wandb.entity
    cfg = sweep_config(args.recipe_path, params, args.method, args.metric, project, entity, args.count)
    out = write_sweep(cfg, args.out or Path('sweeps') / f'{r.name}.yaml')
    t = Table('parameter', 'values')
    for k, vs in params.items(): t.add_row(k, escape(', '.join(json.dumps(_plain(v)) for v in vs)))
    console.print(t)
    n = math.prod(len(vs) for vs in params.values())
    runs = f'{min(n, args.count or n)} runs' if args.method == 'grid' else f"{args.count or 'unlimited'} runs"
    goal = f"maximising {cfg['metric']['name']}" if 'metric' in cfg else 'no metric'
    where = f"{entity + '/' if entity else ''}{project}/<sweep_id>"
    agent = f"wandb agent {f'--count {args.count} ' if args.count else ''}{where}"
    one = ' '.join(shlex.quote(f'--{k}={_plain(vs[0])}') for k, vs in params.items())
    console.print(f"{args.method} sweep of {escape(cfg['program'])}: {runs}, {goal}; "
                  f'written to [bold]{escape(str(out))}[/bold]\n'
                  f'Create the sweep:  [bold]wandb sweep {escape(out.as_posix())}[/bold]\n'
                  f'Run an agent:      [bold]{escape(agent)}[/bold]  (<sweep_id>: the id `wandb sweep` prints; run it '
                  f'from this folder with this environment active)\n'
                  f'[dim]Sweeps need the W&B server and `wandb login`. One parameter set here, without W&B: '
                  f"cifar-fast train {escape(cfg['program'])} {escape(one)}[/dim]")
    return 0

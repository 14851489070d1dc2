"""`cifar-fast`: parse, call the library, render with rich. No training logic lives here."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .console import RunConsole
from .errors import CifarFastError, ConfigError
from .stop import StopRequested

# Outside a terminal rich would wrap at 80 columns; logs read better wide.
console = Console() if sys.stdout.isatty() else Console(width=150)


def cmd_data(args) -> int:
    "Counts per split and class, image size, source and cache; writes a PNG grid of samples."
    import time

    from .data import cifar_data
    from .plots import sample_grid
    t0 = time.perf_counter()
    cd = cifar_data(args.data, skip_bad=args.skip_bad)
    secs = time.perf_counter() - t0
    a = cd.arrays
    t = Table(title='CIFAR-10', title_justify='left')
    t.add_column('class'); t.add_column('train', justify='right'); t.add_column('test', justify='right')
    for name, ntr, nte in zip(a.classes, a.counts('train'), a.counts('test')):
        t.add_row(escape(name), f'{ntr:,}', f'{nte:,}')
    t.add_section()
    t.add_row('[b]total', f"[b]{len(a.y['train']):,}", f"[b]{len(a.y['test']):,}")
    console.print(t)
    shape = a.x['train'].shape[1:]
    info = Table.grid(padding=(0, 2))
    for k, v in [('image', f'{shape[1]}×{shape[2]} RGB, uint8'), ('source', escape(str(cd.source))),
                 ('data root', escape(str(cd.source.root))), ('cache', escape(str(a.meta.get('cache', '-')))),
                 ('decoded arrays', f"{sum(x.nbytes for x in a.x.values()) / 1e6:.0f} MB"),
                 ('load time', f"{secs:.2f} s" + (f" (first decode took {a.meta['decode_seconds']} s)"
                                                  if 'decode_seconds' in a.meta else ''))]:
        info.add_row(f'[dim]{k}', v)
    console.print(info)
    out = sample_grid(a.x['train'], a.y['train'], a.classes, args.out, title='CIFAR-10 training samples')
    console.print(f'Sample grid written to [bold]{escape(str(out))}[/bold]')
    return 0


def _recipe_from_args(args):
    "The recipe (from the file, or the script that called us) with --data and overrides applied."
    from .recipe import apply_overrides, load_recipe, parse_overrides
    r = args.recipe_obj if args.recipe_obj is not None else None
    if r is None:
        if not args.recipe: raise CifarFastError('name a recipe file, e.g. `cifar-fast train recipes/quick.py`.')
        r = load_recipe(args.recipe)
    over = parse_overrides(args.extra)
    if args.data: over['data.source'] = args.data
    if getattr(args, 'wandb', False): over['wandb.enabled'] = True
    return apply_overrides(r, over)


def _help_fields() -> int:
    from .recipe import describe_fields
    t = Table(title='recipe fields (override with --name value)')
    for c in ('field', 'type', 'default', 'meaning'): t.add_column(c)
    for row in describe_fields(): t.add_row(*row)
    console.print(t)
    return 0


def cmd_train(args) -> int:
    "Train a recipe into a run folder, or resume one."
    from .console import interactive
    with RunConsole(terminal=console).working('Loading torch and fastai…'):
        from .distributed import dist_info
        from .training import train
    if args.help_fields: return _help_fields()
    if args.nproc: return _hand_over_to_torchrun(args)
    if args.resume:
        if args.recipe or args.extra:
            raise CifarFastError('--resume continues a run exactly as recorded: give no recipe or overrides (only '
                                 '--data PATH, to say where its images are on this machine).')
        r = None
    else: r = _recipe_from_args(args)
    out = RunConsole(terminal=console, echo_epochs=not interactive())
    try:
        res = train(r, resume=args.resume, runs_root=args.runs, log=out, source_file=args.recipe or args.recipe_file,
                    data=args.data if args.resume else None)
        s = res.summary
        if s.get('state') == 'interrupted':
            how = (f"Resume with: [bold]{escape(s['resume'])}[/bold]" if s.get('resume') else
                   'No epoch had completed, so there is nothing to resume: start the run again.')
            if dist_info().is_main:  # once for the job, not once per process
                why = f" ({s['signal']})" if s.get('signal') else ' (a stop signal to another process of the job)'
                out.print(f"[yellow]Interrupted after {s['epochs_completed']} epoch(s){why}.[/yellow] {how}")
            return s.get('exit_code', 130)
    finally: out.close()
    return 0


def without_nproc(argv: list[str]) -> list[str]:
    """`argv` less `--nproc N` / `--nproc=N`: the value is dropped by position
    (`--epochs 2 --nproc 2` keeps `--epochs 2`)."""
    out, skip = [], False
    for a in argv:
        if skip: skip = False
        elif a == '--nproc': skip = True
        elif not a.startswith('--nproc='): out.append(a)
    return out


def _hand_over_to_torchrun(args) -> int:
    "`--nproc N`: re-run this same command under torch's own launcher, one process per device, on this node."
    argv = without_nproc(sys.argv[1:])
    # from a recipe script
    if args.recipe_obj is not None and args.recipe_file: argv = ['train', args.recipe_file, *argv]
    launch = ['--standalone', f'--nproc_per_node={args.nproc}', '-m', 'cifar_fast.cli', *argv]
    console.print(f"[dim]handing over to torchrun: {escape(' '.join(['torch.distributed.run', *launch]))}[/dim]")
    os.execv(sys.executable, [sys.executable, '-c', 'import sys; from cifar_fast.cli import torchrun; '
                              'sys.exit(torchrun(sys.argv[1:]))', *launch])


def torchrun(argv: list[str]) -> int:
    """torch's launcher (`python -m torch.distributed.run ARGV`) in this process. A Ctrl-C reaches the agent and every
    worker: the workers stop at one batch and say how to resume, and the agent ends with the shell's code for the
    signal instead of a traceback of its own SignalException."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun_main
    try: torchrun_main(argv)
    except SignalException as e: return 128 + int(e.sigval)
    return 0


def cmd_lr_find(args) -> int:
    "lr_find on exactly the recipe's setup: suggestions table, lr_find.png and lr_find.json."
    from .learner import lr_find
    r = _recipe_from_args(args)
    res = lr_find(r, runs_root=args.runs)
    t = Table(title=escape(f'lr_find — {r.name} ({r.model})'), title_justify='left')
    t.add_column('suggestion'); t.add_column('learning rate', justify='right')
    for k, v in res['suggestions'].items(): t.add_row(k, f'{v:.3e}')
    console.print(t)
    png, curve, recipe = (escape(str(x)) for x in (res['out_dir'] / 'lr_find.png', res['out_dir'] / 'lr_find.json',
                                                   args.recipe))
    console.print(f"Plot: [bold]{png}[/bold]   curve: {curve}\n"
                  f"Use one with [bold]cifar-fast train {recipe} --lr valley[/bold] (or --lr <number>).")
    return 0


def cmd_runs(args) -> int:
    """A table of run folders: recipe, model, params, epochs, accuracy, time, state. A study's trials (what `cifar-fast
    tune` made) sit under a row naming the study, with its trial count and states; the other runs under their W&B
    sweep's row."""
    from .rundir import FINISHED, list_runs, read_json, run_state
    from .sweep import sweep_groups
    root = Path(args.runs)
    by_study = list_runs(root)
    if not by_study:
        console.print(f'No runs under {escape(str(root))}/ yet. '
                      f'Start one with [bold]cifar-fast train recipes/quick.py[/bold].')
        return 0
    groups = []  # (heading row, study or None, [(name shown, run folder, state)])
    for study, dirs in by_study.items():
        if study is not None:  # a trial is named by its path under the runs folder: study/trial-NNNN
            rows = [(f'{study}/{d.name}', d, run_state(d)) for d in dirs]
            groups.append((_study_row(study, rows), study, rows)); continue
        for sid, members in sweep_groups(dirs).items():  # runs of one W&B sweep sit together under a heading
            groups.append(([f"[bold]{escape(f'sweep {sid}') if sid else 'not in a sweep or study'}[/bold]"], None,
                           [(d.name, d, run_state(d)) for d in members]))
    t = Table(title=escape(f'runs in {root}/'), title_justify='left')
    for c in ('run', 'recipe', 'model', 'params', 'epochs', 'accuracy', 'best', 'time', 'state'):
        t.add_column(c, justify='right' if c in ('params', 'epochs', 'accuracy', 'best', 'time') else 'left')
    headed = len(groups) > 1 or any(study is not None for _, study, _ in groups)
    for heading, study, rows in groups:
        if headed:
            if t.row_count: t.add_section()
            t.add_row(*heading)
        best = _best_trial(rows, read_json) if study is not None else None
        for name, d, state in rows: t.add_row(*_run_row(name, d, state, read_json, FINISHED, best=d == best))
    console.print(t)
    if any(state == 'pruned' for _, _, rows in groups for _, _, state in rows):
        console.print("pruned: stopped early by its study's pruner; its epochs and accuracy are of the epoch it "
                      "stopped at, not comparable with a complete trial's. Each trial's parameters: `cifar-fast tune "
                      "--show STUDY`.", highlight=False)
    for _, study, rows in groups:  # runs that stopped before the end and can go on from their last completed epoch
        for name, d, state in rows:
            if state not in ('interrupted', 'crashed', 'failed') or not (d / 'checkpoints' / 'last.pth').is_file():
                continue
            if study is not None:  # the study owns a trial's point: tune queues it again, `train --resume` would not
                console.print(f"{escape(name)} ({state}): running `cifar-fast tune` on study {escape(study)} again "
                              f"tries its point again", highlight=False)
            else: console.print(f"{escape(name)} ({state}): resume with "
                                f"[bold]cifar-fast train --resume {escape(str(d))}[/bold]", highlight=False)
    return 0


def _study_row(study: str, rows: list) -> list[str]:
    "A study's heading row: its name, how many trials, and how many in each state (finished ones first)."
    states = [state for _, _, state in rows]
    order = ['complete', 'pruned', 'running', 'interrupted', 'crashed', 'failed', 'diverged']
    counts = ', '.join(f'{states.count(s)} {s}' for s in [*order, *sorted(set(states) - set(order))] if s in states)
    return [f'[bold]{escape(f"study {study}")}[/bold]', '', '', '', f"{len(rows)} trial{'s' * (len(rows) != 1)}",
            '', '', '', counts or 'no trial folders yet']


def _best_trial(rows: list, read_json) -> Path | None:
    """The complete trial with the highest test_accuracy, the study's objective (what tuning.tune returns to Optuna);
    pruned trials are no candidates, as in Optuna."""
    done = [(read_json(d / 'summary.json')['test_accuracy'], d.name, d) for _, d, state in rows if state == 'complete']
    return max(done)[2] if done else None


def _run_row(name: str, d: Path, state: str, read_json, finished, best: bool = False) -> list[str]:
    "One row of `cifar-fast runs`; `best`: the best trial of its study."
    rec = read_json(d / 'recipe.json')['recipe']
    s = read_json(d / 'summary.json') if state in finished and (d / 'summary.json').is_file() else {}
    params = read_json(d / 'env.json').get('params') if (d / 'env.json').is_file() else None
    acc = s.get('test_accuracy_tta') or s.get('test_accuracy')
    colour = {'complete': 'green', 'pruned': 'magenta', 'interrupted': 'yellow',
              'running': 'cyan'}.get(state, 'red')  # crashed, failed: red
    # a pruned trial says so and when; its epochs column shows how far of the planned epochs it got
    shown = f"pruned at epoch {s['epochs']}" if state == 'pruned' and s else state + ' (best)' * best
    # Folder, recipe and model names are the user's text: escaped, so `x[red]y` prints as written, not as markup.
    return [escape(name), escape(rec['name']), escape(rec['model']), f'{params / 1e6:.2f}M' if params else '-',
            f"{s['epochs']}/{rec['epochs']}" if s else f"-/{rec['epochs']}",
            f'{100 * acc:.2f}%' if acc is not None else '-',
            f"{100 * s['best_epoch_accuracy']:.2f}%" if s else '-',
            f"{s['wall_seconds']:.0f}s" if s else '-', f'[{colour}]{shown}[/{colour}]']


def _print_data_source(run_dir, data) -> None:
    "One line saying which images a run is evaluated on and why: its recorded path may be another machine's."
    from .inference import data_source
    source, why = data_source(run_dir, data)
    console.print(f"data: {escape(source or 'the default download')} ({escape(why)})", highlight=False)


def cmd_evaluate(args) -> int:
    "Recompute a run's test accuracy from its saved weights (optionally with TTA)."
    from .inference import evaluate_run
    _print_data_source(args.run_dir, args.data)
    res = evaluate_run(args.run_dir, tta=args.tta_level, data=args.data, trust_pickle=args.trust_pickle,
                       weights=args.weights)
    tta = f' with TTA level {res["tta"]}' if res['tta'] else ''
    console.print(f"{escape(res['recipe'])} ({escape(res['model'])}, {res['weights']} weights): test accuracy "
                  f"[bold green]{100 * res['accuracy']:.2f}%[/bold green]{tta}, "
                  f"loss {res['loss']:.4f} on {res['n']:,} images")
    return 0


def cmd_predict(args) -> int:
    "Class and probability for each image, and for each image in a folder (recursively, sorted)."
    from .inference import predict_images
    t = Table(title='predictions', title_justify='left')
    for c in ('image', 'class', 'probability', 'runners-up'): t.add_column(c)
    for p in predict_images(args.run_dir, args.images, trust_pickle=args.trust_pickle):
        # File and class names are the user's text: escaped, so that `a[red]b.png` prints as written.
        t.add_row(escape(p['image']), f"[bold]{escape(p['label'])}[/bold]", f"{100 * p['prob']:.1f}%",
                  escape(', '.join(f'{c} {100 * v:.1f}%' for c, v in p['top'][1:])))
    console.print(t)
    return 0


def cmd_interpret(args) -> int:
    """Confusion matrix, per-class scores, most-confused pairs, top losses and calibration for a run,
    as files and tables."""
    from .console import confusion_table, per_class_table
    from .interpret import interpret_run
    _print_data_source(args.run_dir, args.data)
    with console.status(f'Predicting the {escape(args.split)} split…'):
        res = interpret_run(args.run_dir, split=args.split, top_losses=args.top_losses, tta=args.tta_level,
                            trust_pickle=args.trust_pickle, subset=args.subset, data=args.data)
    console.print(confusion_table(res))
    console.print(per_class_table(res))
    pairs = escape(', '.join(f'{a} → {p} ({n})' for a, p, n in res.most_confused()[:5]))
    console.print(f"accuracy [bold]{100 * res.accuracy:.2f}%[/bold] on {len(res.targs):,} {args.split} images, "
                  f"ECE {res.ece:.4f}; most confused: {pairs}")
    out = Path(next(iter(res.files.values()))).parent if res.files else None
    beside = ' (a subset: the full report in interpret/ is left as it was)' if args.subset is not None else ''
    console.print(f'Files in [bold]{escape(str(out))}[/bold]{beside}: '
                  + escape(', '.join(Path(f).name for f in res.files.values())))
    return 0


def cmd_models(args) -> int:
    "The model zoo: name, family, parameters, MACs, source, and whether it fits a parameter budget."
    from .models import models_table
    t = Table(title='cifar_fast models (plus any timm model as timm/<name>)', title_justify='left')
    for c in ('name', 'family', 'params', 'MACs (32×32)', f'≤ {args.budget / 1e6:g}M', 'source'):
        t.add_column(c, justify='right' if c in ('params', 'MACs (32×32)') else 'left')
    for row in models_table():
        fits = row['params'] <= args.budget
        t.add_row(row['name'], row['family'], f"{row['params'] / 1e6:.2f}M", f"{row['macs'] / 1e6:,.0f}M",
                  '[green]yes[/green]' if fits else '[dim]no[/dim]', row['source'])
    console.print(t)
    return 0


def add_sweep_parser(subparsers):
    "`cifar-fast sweep RECIPE --param NAME=V1,V2 ...`"
    from . import sweep
    hlp = 'write a W&B sweep config (YAML) for a recipe and print how to run it'
    s = subparsers.add_parser('sweep', help=hlp, description=hlp, allow_abbrev=False)
    s.add_argument('recipe_path', metavar='RECIPE', help='recipe file, e.g. recipes/quick.py')
    s.add_argument('--param', action='append', default=[], metavar='NAME=V1,V2',
                   help='a recipe field and its values, e.g. --param lr=0.05,0.1 (repeat for more fields)')
    s.add_argument('--method', default='grid', choices=sweep.METHODS, help='search method (default grid)')
    s.add_argument('--metric', default='accuracy',
                   help=f"maximise: {', '.join(sweep.METRICS)} or none (default accuracy)")
    s.add_argument('--project', help="W&B project (default: the recipe's wandb.project)")
    s.add_argument('--entity', help="W&B entity (default: the recipe's wandb.entity, else your default entity)")
    s.add_argument('--out', help='the YAML file to write (default: sweeps/<recipe name>.yaml)')
    s.add_argument('--count', type=int, help='end the sweep after N runs (run_cap), and `wandb agent --count N`')
    s.add_argument('--force', action='store_true', help='replace the YAML file if it exists (default: refuse)')
    s.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    "Validate the parameters, write the sweep YAML, and print the commands that create and run the sweep."
    import json
    import math
    import shlex

    from rich.markup import escape

    from .recipe import load_recipe
    from .sweep import plain_value, parse_params, sweep_config, write_sweep
    r = load_recipe(args.recipe_path)
    params = parse_params(args.param, r)
    if args.metric == 'accuracy_tta' and not all(t > 0 for t in params.get('tta', [r.tta])):
        raise ConfigError('--metric accuracy_tta needs tta > 0 in every run (the recipe or --param tta=1,2).')
    project, entity = args.project or r.wandb.project, args.entity or r.wandb.entity
    cfg = sweep_config(args.recipe_path, params, args.method, args.metric, project, entity, args.count)
    out = write_sweep(cfg, args.out or Path('sweeps') / f'{r.name}.yaml', overwrite=args.force)
    t = Table('parameter', 'values')
    for k, vs in params.items(): t.add_row(k, escape(', '.join(json.dumps(plain_value(v)) for v in vs)))
    console.print(t)
    n = math.prod(len(vs) for vs in params.values())
    runs = f'{min(n, args.count or n)} runs' if args.method == 'grid' else f"{args.count or 'unlimited'} runs"
    goal = f"maximising {cfg['metric']['name']}" if 'metric' in cfg else 'no metric'
    where = f"{entity + '/' if entity else ''}{project}/<sweep_id>"
    agent = f"wandb agent {f'--count {args.count} ' if args.count else ''}{where}"
    one = ' '.join(shlex.quote(f'--{k}={plain_value(vs[0])}') for k, vs in params.items())
    console.print(f"{args.method} sweep of {escape(cfg['program'])}: {runs}, {goal}; "
                  f'written to [bold]{escape(str(out))}[/bold]\n'
                  f'Create the sweep:  [bold]wandb sweep {escape(out.as_posix())}[/bold]\n'
                  f'Run an agent:      [bold]{escape(agent)}[/bold]  (<sweep_id>: the id `wandb sweep` prints; run it '
                  f'from this folder with this environment active)\n'
                  f'[dim]Sweeps need the W&B server and `wandb login`. One parameter set here, without W&B: '
                  f"cifar-fast train {escape(cfg['program'])} {escape(one)}[/dim]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='cifar-fast', description='Fast, honest CIFAR-10 training on fastai.',
                                allow_abbrev=False)
    p.add_argument('--debug', action='store_true',
                   help='show the full traceback of an error (also CIFAR_FAST_DEBUG=1)')
    sub = p.add_subparsers(dest='command', required=True, metavar='COMMAND')

    d = sub.add_parser('data', help='show what CIFAR-10 source is used, its counts, and a grid of samples')
    d.add_argument('--data', help='folder, archive or torchvision pickles (default: $CIFAR_FAST_DATA, then download)')
    d.add_argument('--out', default='cifar10-samples.png', help='where to write the sample grid PNG')
    d.add_argument('--skip-bad', action='store_true', help='skip unreadable or non-32×32 files instead of failing')
    d.set_defaults(func=cmd_data)

    for name, func, hlp in (('train', cmd_train,
                             'train a recipe (overrides: --field value, e.g. --epochs 30 --data.batch_size 256)'),
                            ('lr-find', cmd_lr_find, "run fastai's lr_find on a recipe's exact setup")):
        t = sub.add_parser(name, help=hlp, description=hlp, allow_abbrev=False,
                           usage=f'cifar-fast {name} RECIPE [options] [--field value ...]')
        t.add_argument('--data', help='dataset path (same as --data.source)')
        t.add_argument('--runs', default='runs', help='folder that holds run folders (default: runs)')
        if name == 'train':
            t.add_argument('--resume', metavar='RUN_DIR',
                           help='continue an interrupted run from its last completed epoch')
            t.add_argument('--wandb', action='store_true',
                           help='log to Weights & Biases (same as --wandb.enabled true)')
            t.add_argument('--help-fields', action='store_true', help='list every recipe field you can override')
            t.add_argument('--nproc', type=int, help="train on N processes of this node through torchrun "
                           "(same as `torchrun --standalone --nproc_per_node N -m cifar_fast.cli train ...`)")
        t.set_defaults(func=func, accepts_overrides=True)

    r = sub.add_parser('runs', help='list run folders with their results')
    r.add_argument('--runs', default='runs', help='folder that holds run folders (default: runs)')
    r.set_defaults(func=cmd_runs)

    for name, func, hlp in (('evaluate', cmd_evaluate, "recompute a run's test accuracy from model.pth"),
                            ('predict', cmd_predict, 'classify image files with a trained run')):
        e = sub.add_parser(name, help=hlp, description=hlp)
        e.add_argument('run_dir', help='a run folder, e.g. runs/quick-20260101-120000')
        if name == 'predict':
            e.add_argument('images', nargs='+', help='32×32 RGB image files, or folders of them (searched '
                           'recursively, like fastai\'s get_image_files; sorted)')
        else:
            e.add_argument('--tta', dest='tta_level', type=int, nargs='?', const=1, default=0, choices=(0, 1, 2),
                           help='test-time augmentation: --tta (flip) or --tta 2 (flip × ±1-px translate)')
            e.add_argument('--weights', default='selected', choices=('selected', 'best', 'last'))
            e.add_argument('--data', help="dataset path, if not the run's recorded source")
        e.add_argument('--trust-pickle', action='store_true',
                       help='load export.pkl (a pickle: it can run arbitrary code) instead of model.pth + recipe.json')
        e.set_defaults(func=func)

    i = sub.add_parser('interpret', help='confusion matrix, per-class scores, top losses and calibration of a run')
    i.add_argument('run_dir', help='a run folder')
    i.add_argument('--split', default='test', help="'test' (default) or 'train' (without augmentation)")
    i.add_argument('--top-losses', type=int, default=16, help='images in the top-losses grid (default 16)')
    i.add_argument('--tta', dest='tta_level', type=int, nargs='?', const=1, default=0, choices=(0, 1, 2),
                   help='test-time augmentation: --tta (flip) or --tta 2')
    i.add_argument('--subset', type=int, help='a stratified, fixed subset of this many images')
    i.add_argument('--data', help="dataset path, if not the run's recorded source")
    i.add_argument('--trust-pickle', action='store_true', help='load export.pkl instead of model.pth + recipe.json')
    i.set_defaults(func=cmd_interpret)

    add_sweep_parser(sub)

    m = sub.add_parser('models', help='list the model zoo with parameter counts and MACs')
    m.add_argument('--budget', type=float, default=5e6, help='parameter budget to check (default 5e6)')
    m.set_defaults(func=cmd_models)

    # Commands whose parsers live beside what they do (each module imports its heavy parts on first use)
    from . import compare, export, tuning
    for module in (compare, export, tuning): module.add_commands(sub)
    return p


def main(argv=None, recipe=None, recipe_file=None) -> int:
    "Entry point of the `cifar-fast` console script; recipe scripts pass their `recipe` object."
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = '--debug' in argv or os.environ.get('CIFAR_FAST_DEBUG', '') not in ('', '0')  # anywhere on the line
    argv = [a for a in argv if a != '--debug']
    # The recipe path is taken by hand: an optional positional would swallow the value of an override (`--epochs 3`).
    recipe_path = None
    if argv[:1] in (['train'], ['lr-find']) and len(argv) > 1 and not argv[1].startswith('-'): recipe_path = argv.pop(1)
    args, extra = parser.parse_known_args(argv)
    args.recipe, args.recipe_obj, args.recipe_file = recipe_path, recipe, recipe_file
    if extra and not getattr(args, 'accepts_overrides', False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try: return args.func(args) or 0
    except (CifarFastError, OSError) as e:
        if debug: raise  # --debug / CIFAR_FAST_DEBUG=1: the whole traceback
        from .rundir import os_error_message
        msg = os_error_message(e) if isinstance(e, OSError) else str(e)
        console.print(f'[bold red]error:[/bold red] {escape(msg)}', highlight=False)
        return 2
    except (KeyboardInterrupt, StopRequested) as e:  # a stop signal outside a training run's own handling
        console.print('[yellow]interrupted[/yellow]')
        return getattr(e, 'exit_code', 130)


def run_script(recipe, argv=None, recipe_file=None) -> None:
    """What a recipe file runs as a script:
    `python recipes/x.py --epochs 3` == `cifar-fast train recipes/x.py --epochs 3`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = 'lr-find' if argv[:1] == ['lr-find'] else 'train'
    if argv[:1] in (['lr-find'], ['train']): argv = argv[1:]
    sys.exit(main([command, *argv], recipe=recipe, recipe_file=recipe_file))


if __name__ == '__main__':
    sys.exit(main())

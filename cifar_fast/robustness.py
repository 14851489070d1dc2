"""How a finished run holds up under shift: accuracy and calibration on CIFAR-10-C's corruptions, *regenerated* from
the test set (cifar_fast.corruptions: not the published files, so not comparable digit for digit with published
numbers), or on the published .npy files when a user has them (`c_data=DIR`).

For speed every corruption and severity uses one fixed stratified subset of the test set (`n` images, default 500,
the same images for every cell); each cell's accuracy carries its 95% binomial interval (normal approximation), which
at n = 500 is ±3.5 points at 80% accuracy, ±4.4 at 50%. Clean accuracy is reported on the whole test set (from the
run's predictions.npz when it holds that TTA level, else predicted now) and on the subset."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import (
    corruptions as C,  # numpy only at import (scipy on first use): the CLI's parser reads its tables
)
from .errors import ConfigError
from .predfile import FILE
from .rundir import FINISHED, atomic_write_bytes, run_state, write_json

N_DEFAULT = 500  # per cell: ±4.4 points at 50% accuracy (95%), the 14×5-cell mean ±0.4 (docs/evidence.md)
LABEL = 'regenerated CIFAR-10-C (our code, the paper\'s parameters; not the published files)'
PUBLISHED = 'published CIFAR-10-C (.npy files)'


def predict_uint8(model, x: np.ndarray, stats, tta: int = 0, bs: int = 500) -> np.ndarray:
    "(N, C) float32 probabilities of (N, H, W, 3) uint8 images, normalised with the run's `stats`."
    import torch

    from .data import augment as A
    from .tta import TTAModel
    net = TTAModel(model, tta).eval() if tta else model.eval()
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(x), bs):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + bs])).permute(0, 3, 1, 2).to(dev)
            out.append(net(A.normalize(xb, *stats)).float().softmax(1).cpu())
    return torch.cat(out).numpy()


def _cell(probs: np.ndarray, y: np.ndarray, preds: np.ndarray | None = None) -> dict:
    "Accuracy, ECE (15 bins, as interpret) and the 95% binomial half-width of one set of predictions."
    import torch

    from .predictions import calibration_bins, expected_calibration_error
    acc = float(((probs.argmax(1) if preds is None else preds) == y).mean())
    ece = expected_calibration_error(calibration_bins(torch.from_numpy(probs), torch.from_numpy(y)))
    return dict(accuracy=acc, ece=ece, n=len(y), half=float(1.96 * np.sqrt(acc * (1 - acc) / len(y))))


def _stored_probs(d: Path, ds, tta: int):
    "(probabilities, predictions) at TTA level `tta` from predictions.npz if it is of these test images, else None."
    from types import SimpleNamespace

    from .predfile import load_predictions, test_set_identity
    if not (d / FILE).is_file(): return None
    p = load_predictions(d)
    same = test_set_identity(SimpleNamespace(dataset=ds), ds.y.cpu().numpy())
    if tta not in p['probs'] or any(p['meta'].get(k) != v for k, v in same.items()): return None
    return p['probs'][tta], p['preds'][tta]  # preds: the float32 argmax (float16 probabilities can tie)


def _published(c_data: Path):
    "The published CIFAR-10-C folder: (corruption -> (50000, 32, 32, 3) memory-mapped array, labels)."
    d = Path(c_data)
    if not (d / 'labels.npy').is_file():
        raise ConfigError(f'{d} is not a CIFAR-10-C folder: it has no labels.npy (expected <corruption>.npy files and '
                          f'labels.npy, as published at zenodo.org/record/2535967).')
    found = {c: np.load(d / f'{c}.npy', mmap_mode='r', allow_pickle=False) for fam in C.FAMILIES.values() for c in fam
             if (d / f'{c}.npy').is_file()}
    if not found: raise ConfigError(f'{d} holds no CIFAR-10-C corruption files (e.g. gaussian_noise.npy).')
    return found, np.load(d / 'labels.npy', allow_pickle=False).astype(np.int64)


def robustness_run(run_dir, n: int | None = N_DEFAULT, corruptions=None, severities=C.SEVERITIES, seed: int = 0,
                   tta: int = 0, data=None, c_data=None, out: str | Path | None = None, figures: bool = True) -> dict:
    """Clean accuracy, accuracy and ECE per corruption and severity, the mean corruption accuracy and error over the
    benchmark's corruptions we have, written to `out` (default RUN_DIR/robustness/). `n`: images per cell (None:
    all)."""
    from .data import stratified_subset
    from .inference import load_run, run_data, run_dls
    d = Path(run_dir)
    if not d.is_dir(): raise ConfigError(f'run folder {d} does not exist (see `cifar-fast runs`).')
    if run_state(d) not in FINISHED or not (d / 'summary.json').is_file():
        raise ConfigError(f'run {d} is not finished (state: {run_state(d)}): robustness needs its final weights.')
    names = list(corruptions) if corruptions else [c for fam in C.FAMILIES.values() for c in fam]
    for c in names:
        if c not in C.PARAMS and c not in C.NOT_AVAILABLE:
            import difflib
            close = difflib.get_close_matches(c, list(C.PARAMS), 3)
            raise ConfigError(f'unknown corruption {c!r}' + (f"; did you mean {', '.join(close)}?" if close else
                                                            f"; choose from {', '.join(C.available())}."))
    bad = [s for s in severities if s not in C.SEVERITIES]
    if bad: raise ConfigError(f'severities must be in 1-5, not {bad}.')
    t0 = time.perf_counter()
    r, model = load_run(d)
    stats = run_data(d)['stats']
    secs = {}
    published, y_pub = _published(c_data) if c_data is not None else (None, None)
    label = LABEL if published is None else PUBLISHED
    ds = run_dls(r, d, data).valid.dataset  # the clean numbers come from the run's own test set either way
    x_all, y_all = ds.x.permute(0, 2, 3, 1).cpu().numpy(), ds.y.cpu().numpy().astype(np.int64)
    secs['load'] = time.perf_counter() - t0
    t = time.perf_counter()
    stored = _stored_probs(d, ds, tta)  # the run's own prediction of its test set, when it kept one (predictions.npz)
    clean_full = (_cell(*stored[:1], y_all, stored[1]) if stored is not None
                  else _cell(predict_uint8(model, x_all, stats, tta), y_all))
    clean_full['from'] = FILE if stored is not None else 'predicted now'
    n_cell = len(y_all) if n is None or n >= len(y_all) else int(n)
    idx = np.arange(len(y_all)) if n_cell == len(y_all) else stratified_subset(y_all, n_cell, seed)
    clean_sub = _cell(predict_uint8(model, x_all[idx], stats, tta), y_all[idx])
    secs['clean'] = time.perf_counter() - t
    rows, missing = [], {}
    for c in names:
        if published is not None:
            if c not in published: missing[c] = 'not in the published folder given'; continue
            block = len(y_pub) // 5  # severities 1-5 stacked, 10,000 images each in the published files
            ypub = y_pub[:block]
            pidx = np.arange(block) if n_cell >= block else stratified_subset(ypub, n_cell, seed)
        elif c in C.NOT_AVAILABLE: missing[c] = C.NOT_AVAILABLE[c]; continue
        for s in severities:
            t = time.perf_counter()
            if published is None: xc, yc = C.corrupt(x_all[idx], c, s, seed), y_all[idx]
            else: xc, yc = np.asarray(published[c][block * (s - 1) + pidx]), ypub[pidx]
            tc = time.perf_counter() - t
            cell = _cell(predict_uint8(model, xc, stats, tta), yc)
            rows.append(dict(corruption=c, family=C.family(c), severity=s, benchmark=c not in C.EXTRA, **cell,
                             corrupt_seconds=round(tc, 3), predict_seconds=round(time.perf_counter() - t - tc, 3)))
    bench = [x for x in rows if x['benchmark']]
    def mean(rs, k): return float(np.mean([x[k] for x in rs])) if rs else float('nan')
    # Cells share their images, so this standard error (cells taken as independent) is a rough guide, not exact.
    se = float(np.sqrt(sum(x['accuracy'] * (1 - x['accuracy']) / x['n'] for x in bench)) / len(bench)) if bench else 0.
    res = dict(run=d.name, recipe=r.name, model=r.model, label=label, tta=tta, seed=seed, n_per_cell=n_cell,
               severities=list(severities), clean=clean_full, clean_subset=clean_sub, rows=rows, not_available=missing,
               benchmark_corruptions=sorted({x['corruption'] for x in bench}),
               mean_corruption_accuracy=mean(bench, 'accuracy'), mean_corruption_error=1 - mean(bench, 'accuracy'),
               mean_corruption_accuracy_half=1.96 * se, mean_corruption_accuracy_all=mean(rows, 'accuracy'),
               mean_ece_under_shift=mean(rows, 'ece'))
    secs['total'] = time.perf_counter() - t0
    res['seconds'] = {k: round(v, 2) for k, v in secs.items()}
    res['files'] = {k: str(v) for k, v in save_robustness(res, Path(out) if out else d / 'robustness', figures).items()}
    return res


def save_robustness(res: dict, out: Path, figures: bool = True) -> dict[str, Path]:
    "robustness.json, robustness.csv, heatmap.png and report.md in `out`, each atomically."
    import csv
    import io
    cols = ('corruption', 'family', 'severity', 'benchmark', 'accuracy', 'half', 'ece', 'n')
    buf = io.StringIO(); w = csv.writer(buf, lineterminator='\n')
    buf.write(f"# {res['label']}\n"); w.writerow(cols)
    w.writerow(['clean', '-', 0, '-', res['clean']['accuracy'], res['clean']['half'], res['clean']['ece'],
                res['clean']['n']])
    for x in res['rows']: w.writerow([x[c] for c in cols])
    f = {'robustness.json': write_json(out / 'robustness.json', res),
         'robustness.csv': atomic_write_bytes(out / 'robustness.csv', buf.getvalue().encode())}
    if figures and res['rows']: f['heatmap.png'] = plot_heatmap(res, out / 'heatmap.png')
    f['report.md'] = atomic_write_bytes(out / 'report.md', report(res).encode())
    return f


def _grid(res: dict):
    names = list(dict.fromkeys(x['corruption'] for x in res['rows']))
    sev = res['severities']
    acc = np.full((len(names), len(sev)), np.nan)
    for x in res['rows']: acc[names.index(x['corruption']), sev.index(x['severity'])] = x['accuracy']
    return names, sev, acc


def plot_heatmap(res: dict, path: Path) -> Path:
    "Accuracy per corruption (rows) and severity (columns), with the clean accuracy in the title."
    import io

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names, sev, acc = _grid(res)
    fig, ax = plt.subplots(figsize=(6.5, 0.38 * len(names) + 1.8))
    im = ax.imshow(100 * acc, cmap='viridis', vmin=0, vmax=100, aspect='auto')
    for i in range(len(names)):
        for j in range(len(sev)):
            if not np.isnan(acc[i, j]):
                ax.text(j, i, f'{100 * acc[i, j]:.1f}', ha='center', va='center', fontsize=7,
                        color='white' if acc[i, j] < 0.6 else 'black')
    ax.set_xticks(range(len(sev)), [f'severity {s}' for s in sev], fontsize=8)
    ax.set_yticks(range(len(names)), [n.replace('_', ' ') + ('' if n not in C.EXTRA else ' *') for n in names],
                  fontsize=8)
    fig.colorbar(im, ax=ax, label='accuracy (%)')
    ax.set_title(f"{res['run']} · {res['label']}\nclean {100 * res['clean']['accuracy']:.2f}% · mean corruption "
                 f"accuracy {100 * res['mean_corruption_accuracy']:.2f}% · {res['n_per_cell']:,} images per cell "
                 f"· * not in the benchmark's mean", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO(); fig.savefig(buf, format='png', dpi=110); plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def report(res: dict) -> str:
    "report.md: what was measured, on what, the headline numbers and the table."
    names, sev, acc = _grid(res)
    lines = [f"# Robustness: {res['run']} ({res['recipe']}, {res['model']})", '',
             f"- **{res['label']}**; TTA level {res['tta']}; seed {res['seed']}",
             f"- clean accuracy {100 * res['clean']['accuracy']:.2f}% on {res['clean']['n']:,} test images "
             f"({100 * res['clean_subset']['accuracy']:.2f}% on the {res['n_per_cell']:,}-image stratified subset "
             "every "
             f"cell uses; ±{100 * res['clean_subset']['half']:.1f} points, 95%)",
             f"- mean corruption accuracy {100 * res['mean_corruption_accuracy']:.2f}% "
             f"(±{100 * res['mean_corruption_accuracy_half']:.2f}, rough: cells share images), mean corruption error "
             f"{100 * res['mean_corruption_error']:.2f}%, over {len(res['benchmark_corruptions'])} benchmark "
             "corruptions "
             f"× {len(sev)} severities; all {len(names)} corruptions: {100 * res['mean_corruption_accuracy_all']:.2f}%",
             f"- ECE clean {100 * res['clean']['ece']:.2f}%, mean under shift {100 * res['mean_ece_under_shift']:.2f}%",
             ''] + [f"- not available: **{c}**: {why}" for c, why in res['not_available'].items()] + [
             '', '| corruption | ' + ' | '.join(f'sev {s}' for s in sev) + ' |', '|---|' + '---:|' * len(sev)]
    lines += [f"| {c}{' *' if c in C.EXTRA else ''} | " + ' | '.join(f'{100 * a:.1f}' for a in acc[i]) + ' |'
              for i, c in enumerate(names)]
    lines += ['', '\\* one of the paper\'s four extra corruptions, not in the benchmark mean.', '',
              '![heatmap](heatmap.png)', '']
    return '\n'.join(lines)


def log_wandb(res: dict, project: str = 'cifar-fast') -> str:
    "The per-cell table and the heat map as one W&B run of job type 'robustness'; returns its id."
    import wandb
    wb = wandb.init(project=project, job_type='robustness', config=dict(run=res['run'], label=res['label'],
                                                                        n_per_cell=res['n_per_cell'], tta=res['tta']))
    cols = ['corruption', 'family', 'severity', 'accuracy', 'ece', 'n']
    row = {'robustness/cells': wandb.Table(columns=cols, data=[[x[c] for c in cols] for x in res['rows']])}
    if 'heatmap.png' in res['files']: row['robustness/heatmap'] = wandb.Image(res['files']['heatmap.png'])
    wb.summary.update(dict(clean_accuracy=res['clean']['accuracy'],
                           mean_corruption_accuracy=res['mean_corruption_accuracy'],
                           mean_corruption_error=res['mean_corruption_error'], label=res['label']))
    wb.log(row)
    wb.finish()
    return wb.id


def add_command(sub) -> None:
    "`cifar-fast robustness RUN`."
    h = 'accuracy and calibration of a run under CIFAR-10-C corruptions (regenerated, or the published files)'
    p = sub.add_parser('robustness', help=h, description=h)
    p.add_argument('run_dir', help='a finished run folder')
    p.add_argument('--n', type=int, default=N_DEFAULT,
                   help=f'images per corruption and severity: one fixed stratified subset (default {N_DEFAULT}; '
                        '0: all)')
    p.add_argument('--corruption', action='append', dest='corruptions', metavar='NAME',
                   help=f"one corruption (repeat for more; default all): {', '.join(C.available())}")
    p.add_argument('--severity', action='append', type=int, dest='severities', choices=C.SEVERITIES,
                   help='one severity (repeat for more; default 1-5)')
    p.add_argument('--tta', dest='tta_level', type=int, choices=(0, 1, 2), default=0, help='TTA level (default 0)')
    p.add_argument('--seed', type=int, default=0, help='seed of the corruptions and the subset (default 0)')
    p.add_argument('--data', help="CIFAR-10 dataset path, if not the run's recorded source")
    p.add_argument('--c-data', help='a folder with the published CIFAR-10-C .npy files, used instead of regenerating')
    p.add_argument('--out', help='output folder (default RUN_DIR/robustness)')
    p.add_argument('--wandb', action='store_true', help='also log the table and heat map to W&B')
    p.set_defaults(func=cmd_robustness)


def cmd_robustness(args) -> int:
    "Print the per-corruption table and the headline numbers; the files are in robustness/."
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    console = Console() if sys.stdout.isatty() else Console(width=150)
    with console.status('Corrupting and predicting…'):
        res = robustness_run(args.run_dir, n=args.n or None, corruptions=args.corruptions,
                             severities=tuple(args.severities or C.SEVERITIES), seed=args.seed, tta=args.tta_level,
                             data=args.data, c_data=args.c_data, out=args.out)
    names, sev, acc = _grid(res)
    t = Table(title=escape(f"{res['run']} · {res['label']} · accuracy (%) on {res['n_per_cell']:,} images per cell "
                           f"(±{100 * max((x['half'] for x in res['rows']), default=0):.1f} at most, 95%)"),
              title_justify='left')
    t.add_column('corruption'); t.add_column('family')
    for s in sev: t.add_column(f'sev {s}', justify='right')
    t.add_column('mean', justify='right')
    for i, c in enumerate(names):
        t.add_row(c + (' *' if c in C.EXTRA else ''), C.family(c), *(f'{100 * a:.1f}' for a in acc[i]),
                  f'{100 * np.nanmean(acc[i]):.1f}')
    for c in res['not_available']:
        t.add_row(f'[dim]{c}', f'[dim]{C.family(c)}', *(['[dim]n/a'] * len(sev)), '[dim]n/a')
    console.print(t)
    clean, sub = 100 * res['clean']['accuracy'], 100 * res['clean_subset']['accuracy']
    console.print(f"clean {clean:.2f}% (subset {sub:.2f}%) · mean corruption accuracy "
                  f"[bold]{100 * res['mean_corruption_accuracy']:.2f}%[/bold] (error "
                  f"{100 * res['mean_corruption_error']:.2f}%) over {len(res['benchmark_corruptions'])} benchmark "
                  f"corruptions · ECE clean {100 * res['clean']['ece']:.2f}% → "
                  f"{100 * res['mean_ece_under_shift']:.2f}% under shift · {res['seconds']['total']:.0f} s",
                  highlight=False)
    for c, why in res['not_available'].items(): console.print(f'[dim]not available: {c}: {escape(why)}[/dim]')
    console.print('[dim]* not in the benchmark mean (one of the paper\'s four extra corruptions)[/dim]')
    if args.wandb: console.print(f"W&B: logged to run {escape(log_wandb(res))} (job type robustness)")
    console.print(f"Files: [bold]{escape(str(Path(next(iter(res['files'].values()))).parent))}[/bold]")
    return 0

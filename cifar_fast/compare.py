"""Is run A really better than run B? Paired statistics on the runs' stored per-image test predictions
(predictions.npz, cifar_fast.predfile): no model is re-run unless asked (`predict=True`, `--predict`).

- Two runs on the same test set: the accuracy difference with a paired bootstrap interval, McNemar's exact test on
  the images one gets right and the other wrong (scipy's binomial test), and how many images flip each way.
- Groups of runs (one recipe over seeds, or one W&B sweep): mean ± std, a 95% t interval, and the smallest difference
  n seeds per arm can detect (two-sided 5%, 80% power), with the seeds needed for another difference.
Runs evaluated on different test sets (another source, a subset, another TTA level unless chosen) are refused."""
from __future__ import annotations

import argparse
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .predfile import FILE, add_level, load_predictions, save_predictions
from .rundir import FINISHED, atomic_write_bytes, read_json, run_state

N_BOOT = 10_000  # bootstrap resamples: the interval's ends move by < 0.05 points between seeds at n = 10,000
LEVEL = 0.95
POWER = 0.8  # for the detectable difference: the conventional 80% (Cohen 1988)
SIZES = (1.0, 0.5, 0.25)  # differences (points) whose seeds-per-arm a group reports


# ---- pure statistics ----------------------------------------------------------------------------------------------

def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0):
    """Percentile interval of accuracy(a) − accuracy(b) over images resampled with replacement (paired: one draw
    picks the same image for both runs). Each image contributes d = a − b ∈ {−1, 0, 1}, so resampling n images is a
    multinomial draw of the three counts: exactly the index bootstrap's distribution, without an n_boot × n array."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    n = len(a)
    if n == 0: raise ConfigError('no images to compare.')
    d = a.astype(int) - b.astype(int)
    p = np.array([(d == -1).sum(), (d == 0).sum(), (d == 1).sum()]) / n
    counts = np.random.default_rng(seed).multinomial(n, p, size=n_boot)
    diffs = (counts[:, 2] - counts[:, 0]) / n
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return float(d.mean()), float(lo), float(hi)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    "Two-sided exact McNemar p: the discordant images split as Binomial(a_only + b_only, 1/2) (scipy.stats.binomtest)."
    from scipy.stats import binomtest
    n = a_only + b_only
    return 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue)


def pair_stats(correct_a, correct_b, targs=None, classes=None, seed: int = 0) -> dict:
    "Accuracies, difference with its paired interval, McNemar's p and the flips; per class if `targs` is given."
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    diff, lo, hi = paired_bootstrap(a, b, seed=seed)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    out = dict(n=len(a), acc_a=float(a.mean()), acc_b=float(b.mean()), diff=diff, lo=lo, hi=hi,
               a_only=a_only, b_only=b_only, both=int((a & b).sum()), neither=int((~a & ~b).sum()),
               p_mcnemar=mcnemar_exact(a_only, b_only))
    if targs is not None:
        t = np.asarray(targs)
        out['per_class'] = []
        for k, name in enumerate(classes or range(int(t.max()) + 1)):
            m = t == k
            if not m.any(): continue
            dk, lk, hk = paired_bootstrap(a[m], b[m], seed=seed)
            out['per_class'].append(dict(cls=str(name), n=int(m.sum()), acc_a=float(a[m].mean()),
                                         acc_b=float(b[m].mean()), diff=dk, lo=lk, hi=hk))
    return out


def detectable_difference(sd: float, n: int, level: float = LEVEL, power: float = POWER) -> float:
    "Smallest true difference between two arms of `n` seeds each that a two-sided t-test finds with `power`."
    from scipy.stats import t
    if n < 2 or not np.isfinite(sd): return float('nan')
    df = 2 * n - 2
    return float((t.ppf(1 - (1 - level) / 2, df) + t.ppf(power, df)) * sd * np.sqrt(2 / n))


def seeds_needed(sd: float, delta: float, level: float = LEVEL, power: float = POWER, most: int = 10_000) -> int | None:
    "Seeds per arm for `detectable_difference` to reach |delta|; None if more than `most`, or sd or delta is 0."
    if not delta or not sd or not np.isfinite(sd): return None
    for n in range(2, most + 1):
        if detectable_difference(sd, n, level, power) <= abs(delta): return n
    return None


def group_stats(accs, level: float = LEVEL) -> dict:
    "n, mean, std (ddof 1), the t interval of the mean, and the difference those n seeds can detect per arm."
    from scipy.stats import t
    a = np.asarray(accs, float)
    n, mean = len(a), float(a.mean())
    sd = float(a.std(ddof=1)) if n > 1 else float('nan')
    half = float(t.ppf((1 + level) / 2, n - 1) * sd / np.sqrt(n)) if n > 1 else float('nan')
    return dict(n=n, mean=mean, std=sd, lo=mean - half, hi=mean + half, detectable=detectable_difference(sd, n),
                seeds_for={f'{pts:g}': seeds_needed(sd, pts / 100) for pts in SIZES})


def welch(a, b) -> dict:
    "Difference of two groups' means, Welch's t-test p (scipy) and the seeds per arm its difference would need."
    from scipy.stats import ttest_ind
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(a.mean() - b.mean())
    p = float(ttest_ind(a, b, equal_var=False).pvalue) if min(len(a), len(b)) > 1 else float('nan')
    sd = float(np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)) if min(len(a), len(b)) > 1 else float('nan')
    return dict(diff=diff, p_welch=p, pooled_std=sd, seeds_needed=seeds_needed(sd, diff))


# ---- runs ---------------------------------------------------------------------------------------------------------

@dataclass
class RunPreds:
    "One finished run's stored predictions at the compared TTA level."
    run_dir: Path
    name: str
    recipe: dict
    meta: dict
    targets: np.ndarray
    preds: np.ndarray
    probs: np.ndarray
    tta: int
    accuracy: float = field(init=False)

    def __post_init__(self): self.accuracy = float((self.preds == self.targets).mean())

    @property
    def group(self) -> str:
        "One recipe over seeds: every field but the seed and the data's path."
        r = {k: v for k, v in self.recipe.items() if k != 'seed'}
        r['data'] = {k: v for k, v in r.get('data', {}).items() if k != 'source'}
        import hashlib
        return f"{self.recipe['name']}·{hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:8]}"


def expand_runs(patterns) -> list[Path]:
    "Run folders from paths and glob patterns (`runs/quick-*`), in the order given, each once."
    out = []
    for p in map(str, patterns):
        hits = [Path(h) for h in sorted(glob.glob(p))] if any(ch in p for ch in '*?[') else [Path(p)]
        if not hits: raise ConfigError(f'no run folder matches {p!r}.')
        out += [h for h in hits if h not in out]
    if not out: raise ConfigError('no runs to compare: give two or more run folders (or a pattern like runs/quick-*).')
    return out


def recompute(run_dir: Path, tta: int, data=None) -> None:
    "Predict the test set with the run's selected weights (TTA level `tta`) and store it in predictions.npz."
    from .inference import load_run, run_dls
    from .predictions import predict_loader
    r, model = load_run(run_dir)
    dls = run_dls(r, run_dir, data)
    probs, targs, _ = predict_loader(model, dls.valid, tta)
    if (run_dir / FILE).is_file(): add_level(run_dir, tta, probs)
    else:
        import torch
        average = torch.load(run_dir / 'model.pth', weights_only=True, map_location='cpu').get('average')
        save_predictions(run_dir, {tta: probs}, targs, dls.vocab, dls.valid, getattr(dls, 'cifar_source', None),
                         r.data.valid_size, r.checkpoint, average)


def load_run_preds(run_dir, tta: int | None = None, predict: bool = False, data=None) -> RunPreds:
    """A finished run's predictions at TTA level `tta` (None: the recipe's own level); refused, naming the run, when it
    is unfinished or has none (unless `predict`, which computes and stores them)."""
    d = Path(run_dir)
    if not d.is_dir(): raise ConfigError(f'run folder {d} does not exist (see `cifar-fast runs`).')
    state = run_state(d)
    if state not in FINISHED or not (d / 'summary.json').is_file():
        raise ConfigError(f"run {d} is not finished (state: {state}): only finished runs (summary.json written) can be "
                          f"compared.")
    recipe = read_json(d / 'recipe.json')['recipe']
    level = recipe.get('tta', 0) if tta is None else tta
    have = load_predictions(d)['meta']['tta_levels'] if (d / FILE).is_file() else []
    if level not in have:
        if not predict:
            what = f'no {FILE}' if not have else f'predictions at TTA level(s) {have}, not {level}'
            other = f", or choose --tta {' or '.join(map(str, have))}" if have else ''
            raise ConfigError(f'run {d} has {what} (runs trained before {FILE} existed have none). Compute them from '
                              f'its model.pth with --predict (compare_runs(..., predict=True)){other}.')
        recompute(d, level, data)
    p = load_predictions(d)
    return RunPreds(d, d.name, recipe, p['meta'], p['targets'], p['preds'][level], p['probs'][level], level)


def check_same_test_set(runs: list[RunPreds], tta_given: bool) -> None:
    "Refuse, naming the run, when a run was evaluated on another test set or (unless chosen) another TTA level."
    ref = runs[0]
    for r in runs[1:]:
        for key, what in (('test_set', 'test images (names and labels: another source or subset)'),
                          ('pixels', 'decoded test images (another source or encoding)'),
                          ('n', 'number of test images'),
                          ('classes', 'classes')):
            x, y = ref.meta.get(key), r.meta.get(key)
            if x is not None and y is not None and x != y:
                raise ConfigError(f"run {r.run_dir} was evaluated on other {what} than run {ref.run_dir} "
                                  f"({key} {y} vs {x}; sources: {r.meta.get('source')} vs {ref.meta.get('source')}, "
                                  f"subsets {r.meta.get('subset')} vs {ref.meta.get('subset')}): they cannot be "
                                  f"compared image by image.")
        if r.tta != ref.tta and not tta_given:
            raise ConfigError(f"run {r.run_dir} is evaluated at TTA level {r.tta}, run {ref.run_dir} at {ref.tta}: "
                              f"choose one level for both with --tta N (0 is stored for every run).")


def compare_runs(runs, tta: int | None = None, predict: bool = False, data=None, by: str = 'recipe',
                 seed: int = 0) -> dict:
    """Everything `cifar-fast compare` shows: each run, every pair (paired tests), and seed groups (`by` 'recipe',
    'sweep' or 'none') with their interval, detectable difference and, for two groups, Welch's test."""
    if by not in ('recipe', 'sweep', 'none'): raise ConfigError(f"by must be 'recipe', 'sweep' or 'none', not {by!r}.")
    dirs = expand_runs(runs)
    if len(dirs) < 2: raise ConfigError(f'compare needs two or more runs; got only {dirs[0]}.')
    rp = [load_run_preds(d, tta, predict, data) for d in dirs]
    check_same_test_set(rp, tta is not None)
    classes = rp[0].meta['classes']
    pairs = []
    for i in range(len(rp)):
        for j in range(i + 1, len(rp)):
            a, b = rp[i], rp[j]
            s = pair_stats(a.preds == a.targets, b.preds == b.targets, a.targets, classes, seed)
            pairs.append(dict(a=a.name, b=b.name, **s))
    groups = {}
    for r in rp:
        key = r.group if by == 'recipe' else _sweep_id(r.run_dir) if by == 'sweep' else r.name
        groups.setdefault(key, []).append(r)
    gstats = {k: dict(runs=[r.name for r in v], **group_stats([r.accuracy for r in v])) for k, v in groups.items()}
    multi = [k for k, v in groups.items() if len(v) > 1]
    between = None
    if len(groups) == 2:
        (ka, va), (kb, vb) = groups.items()
        between = dict(a=ka, b=kb, **welch([r.accuracy for r in va], [r.accuracy for r in vb]))
    import torch

    from .predictions import calibration_bins, expected_calibration_error
    runs_out = [dict(run=r.name, path=str(r.run_dir), recipe=r.recipe['name'], model=r.recipe['model'],
                     seed=r.recipe.get('seed'), accuracy=r.accuracy, n=len(r.targets), tta=r.tta,
                     weights=r.meta.get('weights'), average=r.meta.get('average'), test_set=r.meta.get('test_set'),
                     ece=expected_calibration_error(calibration_bins(torch.from_numpy(r.probs),
                                                                     torch.from_numpy(r.targets))))
                for r in rp]
    return dict(runs=runs_out, pairs=pairs, groups=gstats, grouped_by=by, multi_seed_groups=multi, between=between,
                tta=rp[0].tta, classes=classes, n_boot=N_BOOT, level=LEVEL, power=POWER,
                test_set=dict(test_set=rp[0].meta.get('test_set'), pixels=rp[0].meta.get('pixels'),
                              source=rp[0].meta.get('source'), subset=rp[0].meta.get('subset'), n=len(rp[0].targets)))


def _sweep_id(d: Path) -> str:
    env = read_json(d / 'env.json') if (d / 'env.json').is_file() else {}
    return env.get('wandb_sweep_id') or 'not in a sweep'


# ---- files ----------------------------------------------------------------------------------------------------------

def save_comparison(res: dict, out_dir) -> dict[str, Path]:
    "compare.json, pairs.csv, groups.csv, per_class.csv and per_class.png (first pair's per-class differences)."
    import csv
    import io
    d = Path(out_dir)
    text = json.dumps(res, indent=2, default=str) + '\n'
    files = {'compare.json': atomic_write_bytes(d / 'compare.json', text.encode())}
    def table(name, header, rows):
        buf = io.StringIO(); w = csv.writer(buf, lineterminator='\n'); w.writerow(header); w.writerows(rows)
        files[name] = atomic_write_bytes(d / name, buf.getvalue().encode())
    cols = ('n', 'acc_a', 'acc_b', 'diff', 'lo', 'hi', 'a_only', 'b_only', 'p_mcnemar')
    table('pairs.csv', ['a', 'b', *cols], [[p['a'], p['b'], *(p[c] for c in cols)] for p in res['pairs']])
    gcols = ('n', 'mean', 'std', 'lo', 'hi', 'detectable')
    table('groups.csv', ['group', *gcols, 'runs'], [[k, *(g[c] for c in gcols), ' '.join(g['runs'])]
                                                     for k, g in res['groups'].items()])
    table('per_class.csv', ['a', 'b', 'class', 'n', 'acc_a', 'acc_b', 'diff', 'lo', 'hi'],
          [[p['a'], p['b'], c['cls'], c['n'], c['acc_a'], c['acc_b'], c['diff'], c['lo'], c['hi']]
           for p in res['pairs'] for c in p['per_class']])
    files['per_class.png'] = plot_per_class(res['pairs'][0], d / 'per_class.png', res['tta'])
    return files


def plot_per_class(pair: dict, path: Path, tta: int = 0) -> Path:
    "Per-class accuracy differences (A − B, points) with their paired bootstrap intervals."
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pc = pair['per_class']
    y = np.arange(len(pc))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(pc) + 1.6))
    d = 100 * np.array([c['diff'] for c in pc])
    err = 100 * np.array([[c['diff'] - c['lo'] for c in pc], [c['hi'] - c['diff'] for c in pc]])
    ax.errorbar(d, y, xerr=err, fmt='o', capsize=3)
    ax.axvline(0, color='grey', lw=1)
    ax.axvline(100 * pair['diff'], color='C1', lw=1, ls='--', label=f"all: {100 * pair['diff']:+.2f} pts "
               f"[{100 * pair['lo']:+.2f}, {100 * pair['hi']:+.2f}]")
    ax.set_yticks(y, [c['cls'] for c in pc]); ax.invert_yaxis()
    ax.set_xlabel('accuracy difference, A − B (points; 95% paired bootstrap interval)')
    ax.set_title(f"A = {pair['a']}\nB = {pair['b']} · TTA {tta} · McNemar p = {pair['p_mcnemar']:.3g}", fontsize=9)
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    buf_path = Path(path)
    import io
    buf = io.BytesIO(); fig.savefig(buf, format='png', dpi=110); plt.close(fig)
    return atomic_write_bytes(buf_path, buf.getvalue())


def log_wandb(res: dict, project: str = 'cifar-fast', files: dict | None = None) -> str:
    "The pairs, groups and per-class tables (and the PNG) as one W&B run of job type 'compare'; returns its id."
    import wandb
    wb = wandb.init(project=project, job_type='compare', config=dict(runs=[r['run'] for r in res['runs']],
                                                                     tta=res['tta'], grouped_by=res['grouped_by']))
    cols = ['a', 'b', 'n', 'acc_a', 'acc_b', 'diff', 'lo', 'hi', 'a_only', 'b_only', 'p_mcnemar']
    row = {'compare/pairs': wandb.Table(columns=cols, data=[[p[c] for c in cols] for p in res['pairs']]),
           'compare/groups': wandb.Table(columns=['group', 'n', 'mean', 'std', 'lo', 'hi', 'detectable'],
                                         data=[[k, g['n'], g['mean'], g['std'], g['lo'], g['hi'], g['detectable']]
                                               for k, g in res['groups'].items()])}
    if files and 'per_class.png' in files: row['compare/per_class'] = wandb.Image(str(files['per_class.png']))
    wb.log(row)
    wb.finish()
    return wb.id


# ---- CLI ------------------------------------------------------------------------------------------------------------

def add_commands(sub) -> None:
    "Add `compare` and `robustness` to the `cifar-fast` subcommands."
    c = sub.add_parser('compare', help='is run A really better than run B: paired tests and seed groups',
                       description='Paired comparison of finished runs on their stored test predictions.')
    c.add_argument('runs', nargs='+', metavar='RUN', help="run folders or patterns, e.g. 'runs/quick-*' (quoted)")
    c.add_argument('--tta', dest='tta_level', type=int, choices=(0, 1, 2), default=None,
                   help="compare at this TTA level (default: each run's recipe level; they must agree)")
    c.add_argument('--by', default='recipe', choices=('recipe', 'sweep', 'none'),
                   help='group runs by recipe (all fields but the seed; default), by W&B sweep, or not at all')
    c.add_argument('--predict', action='store_true',
                   help='compute missing predictions from model.pth (otherwise a run without them is refused)')
    c.add_argument('--data', help="dataset path for --predict, if not the runs' recorded source")
    c.add_argument('--out', default='comparison', help='folder for compare.json, CSVs and per_class.png')
    c.add_argument('--wandb', action='store_true', help='also log the tables to W&B (a run of job type compare)')
    c.set_defaults(func=cmd_compare)
    from .robustness import add_command
    add_command(sub)


def _pct(x): return f'{100 * x:.2f}%'


def cmd_compare(args) -> int:
    "Print the runs, the pairs and the groups as rich tables; write the files."
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    console = Console() if sys.stdout.isatty() else Console(width=150)
    res = compare_runs(args.runs, tta=args.tta_level, predict=args.predict, data=args.data, by=args.by)
    ts = res['test_set']
    t = Table(title=f"runs · test set {ts['test_set']} ({ts['n']:,} images, subset {ts['subset']}) · TTA level "
              f"{res['tta']} · stored predictions", title_justify='left')
    for c in ('run', 'recipe', 'model', 'seed', 'weights', 'accuracy', 'ECE'): t.add_column(c)
    for r in res['runs']:
        w = r['weights'] + (f" ({r['average']})" if r['average'] else '')
        t.add_row(escape(r['run']), escape(r['recipe']), escape(r['model']), str(r['seed']), escape(str(w)),
                  _pct(r['accuracy']), f"{r['ece']:.4f}")
    console.print(t)
    p = Table(title=f"pairs: A − B with a {int(100 * res['level'])}% paired bootstrap interval ({res['n_boot']:,} "
              f"resamples) · McNemar's exact test", title_justify='left')
    for c in ('A', 'B', 'A − B', 'interval', 'A right, B wrong', 'B right, A wrong', 'McNemar p'): p.add_column(c)
    for x in res['pairs']:
        sig = x['p_mcnemar'] < 0.05
        p.add_row(escape(x['a']), escape(x['b']), f"{100 * x['diff']:+.2f} pts",
                  f"[{100 * x['lo']:+.2f}, {100 * x['hi']:+.2f}]", f"{x['a_only']:,}", f"{x['b_only']:,}",
                  f"[bold]{x['p_mcnemar']:.3g}[/bold]" if sig else f"{x['p_mcnemar']:.3g}")
    console.print(p)
    g = Table(title=f"groups (by {res['grouped_by']}): mean ± std over seeds, 95% t interval, smallest difference n "
              f"seeds per arm detect (5%, {int(100 * res['power'])}% power)", title_justify='left')
    for c in ('group', 'n', 'mean ± std', '95% interval', 'detectable', 'seeds per arm for ' + ' / '.join(
            f'{x:g}' for x in SIZES) + ' pts'): g.add_column(c)
    for k, v in res['groups'].items():
        one = v['n'] < 2
        g.add_row(escape(k), str(v['n']), _pct(v['mean']) + ('' if one else f" ± {100 * v['std']:.2f}"),
                  '-' if one else f"[{_pct(v['lo'])}, {_pct(v['hi'])}]",
                  '-' if one else f"{100 * v['detectable']:.2f} pts",
                  '-' if one else ' / '.join(str(n or '-') for n in v['seeds_for'].values()))
    console.print(g)
    if res['between'] and not np.isnan(res['between']['p_welch']):
        b = res['between']
        need = f"{b['seeds_needed']} seeds per arm" if b['seeds_needed'] else 'no finite number of seeds'
        console.print(f"{escape(b['a'])} − {escape(b['b'])}: {100 * b['diff']:+.2f} pts, Welch p {b['p_welch']:.3g}; "
                      f"a difference this size needs {need} to be detected at 80% power", highlight=False)
    files = save_comparison(res, args.out)
    if args.wandb:
        wid = log_wandb(res, files=files)
        console.print(f'W&B: tables logged to run {escape(wid)} (job type compare)')
    console.print(f"Files in [bold]{escape(str(args.out))}[/bold]: {escape(', '.join(files))}")
    return 0


def parser() -> argparse.ArgumentParser:
    "A stand-alone parser with these commands, for tests and `python -m cifar_fast.compare`."
    p = argparse.ArgumentParser(prog='cifar-fast')
    add_commands(p.add_subparsers(dest='command', required=True))
    return p


if __name__ == '__main__':  # `python -m cifar_fast.compare compare RUN_A RUN_B` until cli.py wires `add_commands`
    import sys
    _args = parser().parse_args()
    sys.exit(_args.func(_args))

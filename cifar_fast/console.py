"""How results read: a run's one-line events and closing summary table, and an interpretation's confusion matrix and
per-class scores, rendered with rich for terminal and log file. Rendering only: the numbers come computed."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from rich.console import Console
from rich.markup import escape
from rich.table import Table


class RunConsole:
    """Renders a run's events ('start', 'lr_find', 'epoch', 'end') with rich: into the run folder's console.log
    always, and onto `terminal` when given (per-epoch lines only with `echo_epochs`, i.e. when fastai's own
    progress bar is not showing them)."""
    def __init__(self, terminal: Console | None = None, echo_epochs: bool = True):
        self.terminal, self.echo_epochs, self.file = terminal, echo_epochs, None

    def print(self, *objs, terminal: bool = True):
        if terminal and self.terminal: self.terminal.print(*objs, soft_wrap=True)
        if self.file: self.file.print(*objs, soft_wrap=True)

    def working(self, text: str):
        """A spinner saying `text` on the terminal while a step that prints nothing runs (the run's end: its prediction
        and files take seconds to minutes); nothing when there is no terminal (a log file, a notebook, a pipe)."""
        t = self.terminal
        return t.status(escape(text)) if t is not None and t.is_terminal else contextlib.nullcontext()

    def open(self, run_dir: Path):
        "Append to run_dir/console.log (a resumed run continues the same log)."
        self.close()
        # force_jupyter=False: inside a notebook kernel rich would send this console's output to the notebook instead.
        self.file = Console(file=open(Path(run_dir) / 'console.log', 'a', buffering=1), width=110, no_color=True,
                            force_terminal=False, force_jupyter=False)

    def __call__(self, kind: str, p: dict):
        if kind == 'start':
            if self.file is None: self.open(p['run_dir'])
            r = p['recipe']
            how = f"resuming at epoch {p['resumed_from']}" if p['resumed_from'] is not None else 'new run'
            # Names and paths are the user's text, printed as written: escaped, or rich would read `x[red]y` as markup.
            self.print(f"[bold]{escape(r.name)}[/bold]: {escape(r.model)} ({p['params'] / 1e6:.2f}M params), "
                       f"{r.epochs} epochs, {r.schedule} lr={r.lr}, bs={r.data.batch_size}, {p['device']} "
                       f"{p['choices'].describe()}, seed {r.seed} — {how} in [cyan]{escape(str(p['run_dir']))}[/cyan]")
        elif kind == 'lr_find':
            sugg = ', '.join(f'{k} {v:.2e}' for k, v in p.items() if k in ('valley', 'slide', 'minimum', 'steep'))
            self.print(f"lr_find: {sugg} → using {p['chosen']} = [bold]{p['lr']:.3e}[/bold]")
        elif kind == 'epoch':
            self.print(f"epoch {p['epoch']:>3}/{p['n_epoch']}  train_loss {p['train_loss']:.4f}  valid_loss "
                       f"{p['valid_loss']:.4f}  accuracy {100 * p['accuracy']:6.2f}%  lr {p['lr']:.2e}  "
                       f"{p['seconds']:.1f}s",
                       terminal=self.echo_epochs)
        elif kind == 'end':
            self.print(summary_table(p))

    def close(self):
        if self.file: self.file.file.close(); self.file = None


def summary_table(s: dict) -> Table:
    "The closing table of a run."
    t = Table(title=escape(f"{s['recipe']} — {s['model']}"), title_justify='left', show_header=False)
    t.add_column(style='dim'); t.add_column(justify='right')
    acc = f"{100 * s['test_accuracy']:.2f}%"
    avg = {'ema': 'EMA'}.get(s.get('weights_average'), s.get('weights_average'))
    weights = s['checkpoint'] + (f' {avg}-averaged' if avg else '')
    rows = [('test accuracy', f'[bold green]{acc}[/bold green] ({weights} weights, {s["n_test"]:,} images)')]
    if s.get('test_accuracy_tta') is not None:
        rows.append((f"with TTA (level {s['tta_level']})", f"{100 * s['test_accuracy_tta']:.2f}%"))
    rows += [('best epoch', f"{s['best_epoch']} ({100 * s['best_epoch_accuracy']:.2f}%)"),
             ('epochs', f"{s['epochs']}/{s['epochs_planned']}" + (' (stopped early)' if s['stopped_early'] else '')),
             ('parameters', f"{s['params']:,}"), ('wall time', f"{s['wall_seconds']:.1f} s"),
             ('training', f"{s['train_images_per_sec']:,.0f} images/s ({s['precision']})")]
    if s.get('compile_seconds'): rows.append(('compile', f"{s['compile_seconds']:.1f} s"))
    rows.append(('run folder', escape(str(s['run_dir']))))
    for k, v in rows: t.add_row(k, v)
    return t


def confusion_table(res, width: int = 5) -> Table:
    "The confusion matrix as a rich Table: actual rows, predicted columns (names cut to `width`), diagonal in green."
    cm = res.confusion
    hi = max(int((cm - np.diag(np.diag(cm))).max()), 1)
    t = Table(title=f'confusion matrix · {res.split} · {res.n:,} images · accuracy {100 * res.accuracy:.2f}%',
              caption='rows: actual · columns: predicted', header_style='bold')
    t.add_column('actual', style='bold')
    # Class names come from the data's folder names: escaped, so that rich prints them as they are.
    for c in res.classes: t.add_column(escape(c[:width]), justify='right')
    t.add_column('total', justify='right', style='dim')
    for i, c in enumerate(res.classes):
        cells = [(f'[bold green]{v}[/]' if i == j else f'[red]{v}[/]' if v >= max(hi // 2, 1) else
                  f'[dim]{v}[/]' if v == 0 else str(v)) for j, v in enumerate(cm[i].tolist())]
        t.add_row(escape(c), *cells, str(int(cm[i].sum())))
    return t


def per_class_table(res) -> Table:
    "Precision, recall, F1, one-vs-rest accuracy and support per class, with macro averages, as a rich Table."
    pc = res.per_class
    t = Table(title=f'per class · {res.split} · ECE {100 * res.ece:.2f}% · mean CE {res.loss:.4f}',
              header_style='bold', show_footer=True)
    cols = ('precision', 'recall', 'f1', 'accuracy')
    t.add_column('class', footer='macro avg / total')
    for k in cols: t.add_column(k, justify='right', footer=f'{pc[k].mean():.3f}')
    t.add_column('support', justify='right', footer=f'{int(pc["support"].sum()):,}')
    worst = int(np.argmin(pc['f1']))
    for i, c in enumerate(res.classes):
        t.add_row(escape(c), *(f'{pc[k][i]:.3f}' for k in cols), str(int(pc['support'][i])),
                  style='yellow' if i == worst else None)
    return t


def interactive() -> bool:
    "In a notebook or a terminal: where fastai's progress bars and rich's live output belong."
    import sys
    try:
        from IPython import get_ipython
        if get_ipython() is not None: return True
    except ImportError: pass
    return sys.stdout.isatty()

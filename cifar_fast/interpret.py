"""Interpretation of a trained model: predictions, targets and losses of one split are computed ONCE (by
`predict_loader`) and every table, CSV and figure derives from them.

fastai's `ClassificationInterpretation` re-runs inference for each of `confusion_matrix`, `most_confused` and its
report, builds the confusion matrix as a classes×classes×N boolean tensor, and takes its losses from the Learner's
loss function (MixUp's or label smoothing's during/after such training). Here the loss is always plain
cross-entropy on the logits of unmixed, unaugmented inputs, the confusion matrix is one `bincount`, and only the
top-loss images are fetched afterwards, by index. `RunInterpretation.fastai_interpretation()` wraps the same losses
in fastai's class for its `top_losses`/`plot_top_losses`; avoid its methods that re-run inference."""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import ConfigError, DataError, close_matches
from .inference import load_run, predict_loader
from .rundir import atomic_write_bytes, check_run_dir, read_json

if TYPE_CHECKING: from rich.table import Table

SPLITS = ('test', 'train')
N_BINS = 15  # reliability-diagram bins, as in Guo et al. 2017, "On Calibration of Modern Neural Networks"
FILES = ('report.md', 'confusion.png', 'confusion.csv', 'per_class.csv', 'most_confused.csv', 'top_losses.png',
         'top_losses.csv', 'calibration.png')


# ---- pure maths on predictions --------------------------------------------------------------------------------

def confusion_matrix(targs: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    "Counts (actual row, predicted column) as int64, via one bincount: O(N) memory, not classes×classes×N."
    flat = np.asarray(targs) * n_classes + np.asarray(preds)
    return np.bincount(flat, minlength=n_classes ** 2).reshape(n_classes, n_classes)


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1, one-vs-rest accuracy ((TP+TN)/N) and support per class from a confusion matrix;
    a ratio with a zero denominator is 0, as scikit-learn's `zero_division=0`."""
    tp, actual, predicted, n = np.diag(cm).astype(float), cm.sum(1), cm.sum(0), cm.sum()
    div = lambda a, b: np.divide(a, b, out=np.zeros(len(a)), where=b > 0)
    precision, recall = div(tp, predicted), div(tp, actual)
    f1 = div(2 * precision * recall, precision + recall)
    accuracy = (n - (predicted - tp) - (actual - tp)) / max(n, 1)
    return dict(precision=precision, recall=recall, f1=f1, accuracy=accuracy, support=actual)


def calibration_bins(probs: torch.Tensor, targs: torch.Tensor, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    "Equal-width confidence bins (lo, hi]: images, mean confidence and accuracy per bin (0 for an empty bin)."
    conf, pred = (t.numpy() for t in probs.float().max(1))
    correct = (pred == targs.numpy()).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    b = np.searchsorted(edges[1:-1], conf, side='left')  # conf == an inner edge goes to the bin below, as (lo, hi]
    count = np.bincount(b, minlength=n_bins)
    mean = lambda w: np.divide(np.bincount(b, w, n_bins), count, out=np.zeros(n_bins), where=count > 0)
    return dict(edges=edges, count=count, confidence=mean(conf.astype(float)), accuracy=mean(correct))


def expected_calibration_error(cal: dict) -> float:
    "ECE: the image-weighted mean |accuracy − confidence| over the bins."
    return float((cal['count'] * np.abs(cal['accuracy'] - cal['confidence'])).sum() / max(cal['count'].sum(), 1))


# ---- the result -----------------------------------------------------------------------------------------------

@dataclass(eq=False)
class RunInterpretation:
    "Probabilities, targets and plain cross-entropy losses of one split; everything else is derived from them."
    probs: torch.Tensor  # (N, C) softmax, dataset order
    targs: torch.Tensor  # (N,)
    losses: torch.Tensor  # (N,) F.cross_entropy on the logits, never the training loss
    classes: tuple
    dl: object = field(repr=False)  # the loader predicted on: top-loss images are read from its dataset by index
    model: object = field(repr=False, default=None)
    learn: object = field(repr=False, default=None)
    split: str = 'test'
    tta: int = 0
    n_top: int = 16
    title: str = ''  # run folder or model name, for figures and the report
    seconds: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # name -> path, once saved

    @property
    def n(self) -> int: return len(self.targs)

    @cached_property
    def preds(self) -> np.ndarray: return self.probs.argmax(1).numpy()

    @cached_property
    def confusion(self) -> np.ndarray: return confusion_matrix(self.targs.numpy(), self.preds, len(self.classes))

    @cached_property
    def per_class(self) -> dict[str, np.ndarray]: return per_class_metrics(self.confusion)

    @cached_property
    def calibration(self) -> dict[str, np.ndarray]: return calibration_bins(self.probs, self.targs)

    @property
    def accuracy(self) -> float: return float(np.trace(self.confusion) / max(self.n, 1))

    @property
    def loss(self) -> float: return float(self.losses.mean())

    @property
    def ece(self) -> float: return expected_calibration_error(self.calibration)

    def most_confused(self, min_val: int = 1) -> list[tuple[str, str, int]]:
        "(actual, predicted, count) off the diagonal with count ≥ `min_val`, most frequent first (ties: class order)."
        cm = self.confusion.copy()
        np.fill_diagonal(cm, 0)
        i, j = np.nonzero(cm >= max(min_val, 1))
        order = np.lexsort((j, i, -cm[i, j]))
        return [(self.classes[i[o]], self.classes[j[o]], int(cm[i[o], j[o]])) for o in order]

    def top_losses(self, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        "The `k` (default `n_top`) largest losses, largest first, and their indices in the split."
        return self.losses.topk(self.n_top if k is None else k)

    def top_loss_rows(self, k: int | None = None) -> list[dict]:
        "One dict per top-loss image: rank, index, name, actual, predicted, loss and both classes' probabilities."
        vals, idx = self.top_losses(k)
        names = _names(self.dl)
        rows = []
        for rank, (v, i) in enumerate(zip(vals.tolist(), idx.tolist()), 1):
            t, p = int(self.targs[i]), int(self.preds[i])
            rows.append(dict(rank=rank, index=i, name=names[i] if names is not None else '', actual=self.classes[t],
                             predicted=self.classes[p], loss=v, p_predicted=float(self.probs[i, p]),
                             p_actual=float(self.probs[i, t])))
        return rows

    def images(self, idx) -> np.ndarray:
        "uint8 (k, H, W, 3) images at `idx` of the split, read from the dataset now (nothing was stored)."
        ds = self.dl.dataset
        if hasattr(ds, 'x'):  # the fast engine's CifarTensors: uint8 (N,3,H,W) already
            idx = torch.as_tensor(list(idx), dtype=torch.long, device=ds.x.device)
            return ds.x[idx].cpu().permute(0, 2, 3, 1).numpy()
        return np.stack([np.asarray(ds[int(i)][0]) for i in idx])  # a DataBlock's dataset yields PIL images

    def fastai_interpretation(self):
        "fastai's `ClassificationInterpretation` over these losses (its confusion/report methods re-run inference)."
        from fastai.interpret import ClassificationInterpretation
        learn = self.learn
        if learn is None:
            from fastai.learner import Learner
            from fastai.losses import CrossEntropyLossFlat

            from .data.fast import CifarDataLoaders
            learn = Learner(CifarDataLoaders(self.dl, self.dl, device=self.dl.device), self.model,
                            loss_func=CrossEntropyLossFlat())
        return ClassificationInterpretation(learn, self.dl, self.losses)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        "Write the CSVs, figures and report.md into `out_dir`, each atomically; returns name -> path."
        from . import interpret_plots as P
        t0, d = time.perf_counter(), Path(out_dir)
        head = f'{self.title} · {self.split} split' + (f' · TTA {self.tta}' if self.tta else '')
        pc, cols = self.per_class, ('precision', 'recall', 'f1', 'accuracy')
        f = {'confusion.csv': _write_csv(d / 'confusion.csv', ['actual \\ predicted', *self.classes],
                                         [[c, *row] for c, row in zip(self.classes, self.confusion.tolist())]),
             'per_class.csv': _write_csv(d / 'per_class.csv', ['class', *cols, 'support'],
                                         [[c, *(pc[k][i] for k in cols), int(pc['support'][i])]
                                          for i, c in enumerate(self.classes)]),
             'most_confused.csv': _write_csv(d / 'most_confused.csv', ['actual', 'predicted', 'count'],
                                             self.most_confused()),
             'confusion.png': P.plot_confusion(self.confusion, self.classes, d / 'confusion.png', title=head)}
        if self.n_top:
            rows = self.top_loss_rows()
            f['top_losses.csv'] = _write_csv(d / 'top_losses.csv', list(rows[0]), [list(r.values()) for r in rows])
            f['top_losses.png'] = P.plot_top_losses(self.images([r['index'] for r in rows]), rows,
                                                    d / 'top_losses.png',
                                                    title=f'top {len(rows)} losses (plain cross-entropy) · {head}')
        else:  # no grid asked for: drop one left by an earlier interpretation, so the folder is consistent
            for name in ('top_losses.csv', 'top_losses.png'): (d / name).unlink(missing_ok=True)
        f['calibration.png'] = P.plot_calibration(self.calibration, self.ece, d / 'calibration.png', title=head)
        f['report.md'] = atomic_write_bytes(d / 'report.md', _report(self, head).encode())
        self.seconds['write'] = time.perf_counter() - t0  # tables, CSVs, figures and report, all derived here
        self.files = {k: Path(v) for k, v in f.items()}
        return self.files


def _names(dl) -> list | None:
    "Per-image names of the loader's dataset (file names), when it has them."
    ds = dl.dataset
    names = getattr(ds, 'names', None)
    if names is None and getattr(ds, 'items', None) is not None and not hasattr(ds, 'x'): names = ds.items
    return None if names is None else [str(n) for n in names]


def _write_csv(path: Path, header: list, rows) -> Path:
    "Atomic CSV; floats with 6 decimals."
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow(header)
    w.writerows([[f'{v:.6f}' if isinstance(v, (float, np.floating)) else v for v in r] for r in rows])
    return atomic_write_bytes(path, buf.getvalue().encode())


def _report(res: RunInterpretation, head: str) -> str:
    "report.md: headline numbers, the per-class table and links to every file."
    pc = res.per_class
    worst = int(np.argmin(pc['recall']))
    conf = res.most_confused()[:5]
    lines = [f'# Interpretation: {head}', '',
             f"- images: {res.n:,}; accuracy **{100 * res.accuracy:.2f}%**; mean cross-entropy {res.loss:.4f}; "
             f"expected calibration error **{100 * res.ece:.2f}%** ({N_BINS} bins)",
             f"- macro F1 {pc['f1'].mean():.4f}; weakest class by recall: {res.classes[worst]} "
             f"({100 * pc['recall'][worst]:.1f}%)",
             '- most confused (actual → predicted): ' + ('; '.join(f'{a} → {p} ({n})' for a, p, n in conf)
                                                         or 'none'),
             f"- losses are plain cross-entropy on unaugmented images{f', TTA level {res.tta}' if res.tta else ''}; "
             'per-class accuracy is one-vs-rest, (TP+TN)/N', '',
             '| class | precision | recall | F1 | accuracy | support |', '|---|---:|---:|---:|---:|---:|']
    lines += [f"| {c} | {pc['precision'][i]:.3f} | {pc['recall'][i]:.3f} | {pc['f1'][i]:.3f} | {pc['accuracy'][i]:.3f} "
              f"| {int(pc['support'][i])} |" for i, c in enumerate(res.classes)]
    lines += ['', '## Files', '', '- [confusion.csv](confusion.csv) · [per_class.csv](per_class.csv) · '
              '[most_confused.csv](most_confused.csv)' + (' · [top_losses.csv](top_losses.csv)' if res.n_top else ''),
              '', '![confusion matrix](confusion.png)', '']
    if res.n_top: lines += [f'![top {res.n_top} losses](top_losses.png)', '']
    lines += ['![reliability diagram](calibration.png)', '']
    return '\n'.join(lines)


# ---- entry points ---------------------------------------------------------------------------------------------

def _check_args(split: str, top_losses: int, tta: int) -> None:
    "Fail before any work on a split, top-loss count or TTA level that cannot be right."
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} does not exist; choose one of {', '.join(SPLITS)}."
                          + close_matches(split, SPLITS))
    if not isinstance(top_losses, int) or isinstance(top_losses, bool) or top_losses < 0:
        raise ConfigError(f"top_losses must be a whole number ≥ 0, got {top_losses!r}.")
    if tta not in (0, 1, 2): raise ConfigError(f"tta must be 0, 1 or 2, got {tta!r}.")


def _check_top(top_losses: int, n: int, split: str) -> None:
    if top_losses > n:
        raise ConfigError(f"top_losses={top_losses} is larger than the {split} split ({n} images); use at most {n}.")


def split_loader(r, split: str = 'test', subset: int | None = None, data=None, device='cpu', bs: int | None = None):
    """A fast-engine loader over `split` of the run's data, without augmentation, in dataset order: the recipe's own
    subset of that split, or a stratified deterministic `subset` of the whole split. Both engines normalise
    identically (`augment.normalize`), so a DataBlock-trained model is evaluated here on the same inputs."""
    from .data.fast import NO_AUG, CifarTensors, FastDL
    from .data.loaders import cifar_data, stratified_subset
    d = r.data
    cd = cifar_data(data or d.source, train_size=d.train_size, valid_size=d.valid_size, skip_bad=d.skip_bad,
                    progress=False)
    a = cd.arrays
    if subset is None: idx = cd.idx[split]
    else:
        n_split = len(a.y[split])
        if not isinstance(subset, int) or isinstance(subset, bool) or not 0 < subset <= n_split:
            raise ConfigError(f"subset must be a whole number in 1..{n_split} (the {split} split's size), "
                              f"got {subset!r}.")
        idx = stratified_subset(a.y[split], subset)
    whole = len(idx) == len(a.y[split])  # sorted unique indices covering the split: use it as is, not a copy
    x, y = (a.x[split], a.y[split]) if whole else (a.x[split][idx], a.y[split][idx])
    ds = CifarTensors(torch.from_numpy(x), torch.from_numpy(y), a.classes, split=split,
                      names=[a.files[split][i] for i in idx])
    return FastDL(ds, bs=bs or d.val_batch_size or 2 * d.batch_size, shuffle=False, drop_last=False, aug=NO_AUG,
                  device=device)


def interpret_predictions(probs, targs, losses, classes, dl, top_losses: int = 16, **kw) -> RunInterpretation:
    "The result object over predictions already computed on `dl` (dataset order)."
    _check_top(top_losses, len(targs), kw.get('split', 'test'))
    # Plain tensors: a DataBlock model's outputs arrive as fastai's typed TensorImage, which every op would carry.
    probs, targs, losses = (torch.as_tensor(t).as_subclass(torch.Tensor).cpu() for t in (probs, targs, losses))
    return RunInterpretation(probs, targs, losses, tuple(str(c) for c in classes), dl, n_top=top_losses, **kw)


def interpret_run(run_dir: str | Path, split: str = 'test', top_losses: int = 16, tta: int = 0,
                  trust_pickle: bool = False, subset: int | None = None, out_dir: str | Path | None = None,
                  data=None, weights: str = 'selected', device='cpu', save: bool = True) -> RunInterpretation:
    """Interpret a run folder's model (model.pth + recipe.json; export.pkl only with `trust_pickle`) on `split`,
    writing every table and figure to `out_dir` (default RUN_DIR/interpret/)."""
    _check_args(split, top_losses, tta)
    run_dir = check_run_dir(run_dir)
    t0 = time.perf_counter()
    r, model = load_run(run_dir, weights, trust_pickle, device)
    dl = split_loader(r, split, subset, data, device)
    classes = tuple(dl.dataset.vocab)
    trained = read_json(run_dir / 'env.json').get('classes') if (run_dir / 'env.json').is_file() else None
    if trained is not None and tuple(trained) != classes:
        raise DataError(f"run {run_dir} was trained on classes {trained}, but its data now has {list(classes)}.")
    _check_top(top_losses, len(dl.dataset), split)
    t1 = time.perf_counter()
    probs, targs, losses = predict_loader(model, dl, tta)
    res = interpret_predictions(probs, targs, losses, classes, dl, top_losses, model=model, split=split, tta=tta,
                                title=f'{run_dir.name} ({r.model})',
                                seconds=dict(load=t1 - t0, predict=time.perf_counter() - t1))
    if save: res.save(Path(out_dir) if out_dir else run_dir / 'interpret')
    return res


def interpret_learner(learn, dl=None, split: str = 'test', top_losses: int = 16, tta: int = 0,
                      subset: int | None = None, out_dir: str | Path | None = None,
                      save: bool = True) -> RunInterpretation:
    """Interpret a live fastai `Learner` on `dl`, or on its `split` ('test' = dls.valid, 'train' without
    augmentation), writing to `out_dir` (default learn.path/interpret/). Losses are plain cross-entropy whatever
    `learn.loss_func` is (MixUp, label smoothing)."""
    from .data.fast import NO_AUG, FastDL
    _check_args(split, top_losses, tta)
    if dl is None:
        src = learn.dls.valid if split == 'test' else learn.dls.train
        # A DataBlock's training loader augments per item: test_dl re-reads its items with the validation transforms.
        dl = src if isinstance(src, FastDL) or split == 'test' else learn.dls.test_dl(src.items, with_labels=True)
    if isinstance(dl, FastDL): dl = dl.new(shuffle=False, drop_last=False, aug=NO_AUG, rank=0, world_size=1)
    if subset is not None:
        if not isinstance(dl, FastDL) or dl.dataset.y is None:
            raise ConfigError("subset= needs a fast-engine loader with labels; "
                              "pass dl= a loader over your subset instead.")
        from .data.loaders import stratified_subset
        idx = stratified_subset(dl.dataset.y.cpu().numpy(), subset)
        dl = dl.new(dataset=dl.dataset.subset(torch.as_tensor(idx, device=dl.dataset.x.device)))
    _check_top(top_losses, len(dl.dataset), split)
    model = getattr(learn, 'raw_model', learn.model)  # uncompiled: no recompiling for the last, smaller batch
    t0 = time.perf_counter()
    probs, targs, losses = predict_loader(model, dl, tta)
    res = interpret_predictions(probs, targs, losses, learn.dls.vocab, dl, top_losses, model=model, learn=learn,
                                split=split, tta=tta, title=f'{Path(learn.path).name} ({type(model).__name__})',
                                seconds=dict(predict=time.perf_counter() - t0))
    if save: res.save(Path(out_dir) if out_dir else Path(learn.path) / 'interpret')
    return res


# ---- terminal tables ------------------------------------------------------------------------------------------

def confusion_table(res: RunInterpretation, width: int = 5) -> Table:
    "The confusion matrix as a rich Table: actual rows, predicted columns (names cut to `width`), diagonal in green."
    from rich.table import Table
    cm = res.confusion
    hi = max(int((cm - np.diag(np.diag(cm))).max()), 1)
    t = Table(title=f'confusion matrix · {res.split} · {res.n:,} images · accuracy {100 * res.accuracy:.2f}%',
              caption='rows: actual · columns: predicted', header_style='bold')
    t.add_column('actual', style='bold')
    for c in res.classes: t.add_column(c[:width], justify='right')
    t.add_column('total', justify='right', style='dim')
    for i, c in enumerate(res.classes):
        cells = [(f'[bold green]{v}[/]' if i == j else f'[red]{v}[/]' if v >= max(hi // 2, 1) else
                  f'[dim]{v}[/]' if v == 0 else str(v)) for j, v in enumerate(cm[i].tolist())]
        t.add_row(c, *cells, str(int(cm[i].sum())))
    return t


def per_class_table(res: RunInterpretation) -> Table:
    "Precision, recall, F1, one-vs-rest accuracy and support per class, with macro averages, as a rich Table."
    from rich.table import Table
    pc = res.per_class
    t = Table(title=f'per class · {res.split} · ECE {100 * res.ece:.2f}% · mean CE {res.loss:.4f}',
              header_style='bold', show_footer=True)
    cols = ('precision', 'recall', 'f1', 'accuracy')
    t.add_column('class', footer='macro avg / total')
    for k in cols: t.add_column(k, justify='right', footer=f'{pc[k].mean():.3f}')
    t.add_column('support', justify='right', footer=f'{int(pc["support"].sum()):,}')
    worst = int(np.argmin(pc['f1']))
    for i, c in enumerate(res.classes):
        t.add_row(c, *(f'{pc[k][i]:.3f}' for k in cols), str(int(pc['support'][i])),
                  style='yellow' if i == worst else None)
    return t

"""Predictions of one split, computed ONCE (`predict_loader`), and the result object every report derives from: the
end of a run (summary.json, interpret/, W&B tables and charts), `cifar-fast interpret` and notebooks.

fastai's `ClassificationInterpretation` re-runs inference for each of `confusion_matrix`, `most_confused` and its
report, builds the confusion matrix as a classes×classes×N boolean tensor, and takes its losses from the Learner's
loss function (MixUp's or label smoothing's during/after such training). Here the loss is always plain
cross-entropy on the logits of unmixed, unaugmented inputs; the confusion matrix and per-class scores are
scikit-learn's; only the top-loss images are fetched afterwards, by index. `RunInterpretation.fastai_interpretation()`
wraps the same losses in fastai's class for its `top_losses`/`plot_top_losses`; avoid its methods that re-run
inference."""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError
from .rundir import atomic_write_bytes

def predict_loader(model, dl, tta: int = 0):
    "(probabilities, targets, per-image cross-entropy losses) over `dl` in dataset order, computed once."
    return predict_levels(model, dl, (tta,))[tta]


@torch.no_grad()
def predict_levels(model, dl, levels=(0,)) -> dict:
    """`predict_loader`'s result for each TTA level in `levels`, from one pass over `dl`: the views the levels share
    (the plain view is in all) are computed once (`tta.LevelsTTAModel`), each level's result bitwise its own pass's."""
    from .tta import LevelsTTAModel
    net = LevelsTTAModel(model, levels).eval()
    dl = dl.new(shuffle=False, drop_last=False)
    logits, targs = {lvl: [] for lvl in levels}, []
    for x, y in dl:
        for lvl, out in net(x).items(): logits[lvl].append(out.float().cpu())
        targs.append(y.cpu())
    targs = torch.cat(targs).as_subclass(torch.Tensor)
    out = {}
    for lvl, ls in logits.items():
        lg = torch.cat(ls)
        out[lvl] = (lg.softmax(1), targs, F.cross_entropy(lg, targs, reduction='none'))
    return out


N_BINS = 15  # reliability-diagram bins, as in Guo et al. 2017, "On Calibration of Modern Neural Networks"
FILES = ('report.md', 'confusion.png', 'confusion.csv', 'per_class.csv', 'most_confused.csv', 'top_losses.png',
         'top_losses.csv', 'calibration.png')


# ---- pure maths on predictions --------------------------------------------------------------------------------

def confusion_matrix(targs: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    "Counts (actual row, predicted column), int64: scikit-learn's, every class present even when never seen."
    from sklearn.metrics import confusion_matrix as sk_confusion
    return sk_confusion(np.asarray(targs), np.asarray(preds), labels=np.arange(n_classes)).astype(np.int64)


def per_class_metrics(targs: np.ndarray, preds: np.ndarray, cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (scikit-learn's, `zero_division=0`), plus one-vs-rest accuracy
    ((TP+TN)/N) from the confusion matrix, which scikit-learn does not report per class."""
    from sklearn.metrics import precision_recall_fscore_support
    n_classes = len(cm)
    precision, recall, f1, support = precision_recall_fscore_support(
        np.asarray(targs), np.asarray(preds), labels=np.arange(n_classes), zero_division=0)
    tp, actual, predicted, n = np.diag(cm).astype(float), cm.sum(1), cm.sum(0), cm.sum()
    accuracy = (n - (predicted - tp) - (actual - tp)) / max(n, 1)
    return dict(precision=precision, recall=recall, f1=f1, accuracy=accuracy, support=support)


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
    def per_class(self) -> dict[str, np.ndarray]:
        return per_class_metrics(self.targs.numpy(), self.preds, self.confusion)

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
        import fastai.vision.learner  # noqa: F401  registers plot_top_losses for image batches
        learn = self.learn
        if learn is None:
            from fastai.learner import Learner
            from fastai.losses import CrossEntropyLossFlat

            from .data.fast import CifarDataLoaders
            learn = Learner(CifarDataLoaders(self.dl, self.dl, device=self.dl.device), self.model,
                            loss_func=CrossEntropyLossFlat())
        return ClassificationInterpretation(learn, self.dl, self.losses)

    def save(self, out_dir: str | Path, figures: bool = True, drawer=None) -> dict[str, Path]:
        """Write the CSVs, figures and report.md into `out_dir`, each atomically; returns name -> path. Without
        `figures` (about 2 s of matplotlib on a 2-core CPU), the CSVs and report.md only. A `drawing.Drawer` may draw
        the figures in its helper process: they are on disk once its `wait()` returns."""
        t0, d = time.perf_counter(), Path(out_dir)
        head = f'{self.title} · {self.split} split' + (f' · TTA {self.tta}' if self.tta else '')
        pc, cols = self.per_class, ('precision', 'recall', 'f1', 'accuracy')
        rows = self.top_loss_rows() if self.n_top else []
        f = {'confusion.csv': _write_csv(d / 'confusion.csv', ['actual \\ predicted', *self.classes],
                                         [[c, *row] for c, row in zip(self.classes, self.confusion.tolist())]),
             'per_class.csv': _write_csv(d / 'per_class.csv', ['class', *cols, 'support'],
                                         [[c, *(pc[k][i] for k in cols), int(pc['support'][i])]
                                          for i, c in enumerate(self.classes)]),
             'most_confused.csv': _write_csv(d / 'most_confused.csv', ['actual', 'predicted', 'count'],
                                             self.most_confused())}
        if rows: f['top_losses.csv'] = _write_csv(d / 'top_losses.csv', list(rows[0]), [list(r.values()) for r in rows])
        if figures: f.update(self._figures(d, head, rows, drawer))
        # Whatever this call did not write must not be left from an earlier one: the folder is one consistent set.
        for name in FILES:
            if name not in f and name != 'report.md': (d / name).unlink(missing_ok=True)
        f['report.md'] = atomic_write_bytes(d / 'report.md', _report(self, head, figures).encode())
        self.seconds['write'] = time.perf_counter() - t0  # tables, CSVs, figures and report, all derived here
        self.files = {k: Path(v) for k, v in f.items()}
        return self.files

    def _figures(self, d: Path, head: str, rows: list, drawer=None) -> dict[str, Path]:
        "confusion.png, top_losses.png (when there are top losses) and calibration.png."
        from . import interpret_plots as P
        from .drawing import Drawer
        draw = (drawer or Drawer()).draw
        d.mkdir(parents=True, exist_ok=True)
        draw(P.plot_confusion, self.confusion, self.classes, d / 'confusion.png', title=head)
        draw(P.plot_calibration, self.calibration, self.ece, d / 'calibration.png', title=head)
        f = {'confusion.png': d / 'confusion.png', 'calibration.png': d / 'calibration.png'}
        if rows:
            draw(P.plot_top_losses, self.images([r['index'] for r in rows]), rows, d / 'top_losses.png',
                 title=f'top {len(rows)} losses (plain cross-entropy) · {head}')
            f['top_losses.png'] = d / 'top_losses.png'
        return f


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


def _report(res: RunInterpretation, head: str, figures: bool = True) -> str:
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
              '']
    if not figures: return '\n'.join(lines + ['Figures were not drawn: `cifar-fast interpret RUN_DIR` draws them.', ''])
    lines += ['![confusion matrix](confusion.png)', '']
    if res.n_top: lines += [f'![top {res.n_top} losses](top_losses.png)', '']
    lines += ['![reliability diagram](calibration.png)', '']
    return '\n'.join(lines)


def accuracy(probs: torch.Tensor, targs: torch.Tensor) -> float:
    "Top-1 accuracy as summary.json and `evaluate` report it (a float32 mean, as fastai's `accuracy` metric)."
    return float((probs.argmax(1) == targs).float().mean())


def check_top(top_losses: int, n: int, split: str) -> None:
    "A top-loss grid cannot hold more images than the split has."
    if top_losses > n:
        raise ConfigError(f"top_losses={top_losses} is larger than the {split} split ({n} images); use at most {n}.")


def interpret_predictions(probs, targs, losses, classes, dl, top_losses: int = 16, **kw) -> RunInterpretation:
    "The result object over predictions already computed on `dl` (dataset order)."
    check_top(top_losses, len(targs), kw.get('split', 'test'))
    # Plain tensors: a DataBlock model's outputs arrive as fastai's typed TensorImage, which every op would carry.
    probs, targs, losses = (torch.as_tensor(t).as_subclass(torch.Tensor).cpu() for t in (probs, targs, losses))
    return RunInterpretation(probs, targs, losses, tuple(str(c) for c in classes), dl, n_top=top_losses, **kw)


def predict_split(model, dl, classes, top_losses: int = 16, tta: int = 0, **kw) -> RunInterpretation:
    "Predict `dl` once (with TTA level `tta`) and wrap the result; `seconds['predict']` records the time it took."
    t0 = time.perf_counter()
    probs, targs, losses = predict_loader(model, dl, tta)
    seconds = dict(kw.pop('seconds', {}), predict=time.perf_counter() - t0)
    return interpret_predictions(probs, targs, losses, classes, dl, top_losses, model=model, tta=tta, seconds=seconds,
                                 **kw)

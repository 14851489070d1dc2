"""The interpretation figures: confusion matrix (counts and row-normalised), top-losses grid, reliability diagram.
Pure drawing from arrays already computed by `cifar_fast.interpret`; each call writes one PNG via `save_fig`."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .plots import _plt, save_fig


def _cell_font(n_classes: int) -> float:
    "Annotation size that still fits a cell: 9 pt for CIFAR-10, smaller for more classes, never below 5."
    return max(5., min(9., 90 / n_classes))


def _matrix(ax, m: np.ndarray, classes, fmt, vmax: float, title: str):
    "One annotated heat map: actual classes down, predicted across; text flips to white on dark cells."
    from matplotlib.patches import Rectangle
    n = len(classes)
    ax.imshow(m, cmap='Blues', vmin=0, vmax=max(vmax, 1e-12), interpolation='nearest')
    fs = _cell_font(n)
    for i in range(n):
        for j in range(n):
            v = m[i, j]
            ax.text(j, i, fmt(v), ha='center', va='center', fontsize=fs, color='white' if v > 0.55 * vmax else
                    ('#222222' if v else '#bbbbbb'), fontweight='bold' if i == j else 'normal')
    ax.set_xticks(range(n)); ax.set_yticks(range(n))
    ax.set_xticklabels(classes, rotation=40, ha='right', rotation_mode='anchor', fontsize=fs + 1)
    ax.set_yticklabels(classes, fontsize=fs + 1)
    ax.set_xlabel('predicted', fontsize=10); ax.set_ylabel('actual', fontsize=10)
    ax.set_title(title, fontsize=10)
    ax.set_xticks(np.arange(n + 1) - .5, minor=True); ax.set_yticks(np.arange(n + 1) - .5, minor=True)
    ax.grid(which='minor', color='white', linewidth=1); ax.tick_params(which='minor', length=0)
    for i in range(n):  # outline the diagonal, so the correct predictions stand out whatever their shade
        ax.add_patch(Rectangle((i - .5, i - .5), 1, 1, fill=False, edgecolor='#1a7f37', lw=1.8, zorder=3))


def plot_confusion(cm: np.ndarray, classes, path: str | Path, title: str = '') -> Path:
    "Counts and the row-normalised matrix (each actual class sums to 100%) side by side, class names on both axes."
    plt = _plt()
    n, total = len(classes), int(cm.sum())
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    side = 0.55 * n + 2.2
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(2 * side, side * 0.92))
    acc = np.trace(cm) / max(total, 1)
    _matrix(a1, cm, classes, lambda v: f'{int(v)}' if v else '·', float(cm.max()),
            f'counts ({total:,} images, accuracy {100 * acc:.1f}%)')
    _matrix(a2, 100 * norm, classes, lambda v: f'{v:.0f}' if v >= 0.5 else ('<1' if v else '·'), 100.,
            '% of each actual class (diagonal = recall)')
    if title: fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_fig(fig, path)


def _prob(p: float) -> str:
    "A probability with enough digits to tell a tiny one from zero: 0.42, 0.016, 2.1e-04."
    return f'{p:.2f}' if p >= 0.1 else f'{p:.3f}' if p >= 0.001 else f'{p:.1e}'


def plot_top_losses(images: np.ndarray, rows: list[dict], path: str | Path, title: str = '') -> Path:
    """A grid of the highest-loss images (uint8 N,H,W,3), each titled with its rank, loss, the actual class with its
    probability and the predicted class with its probability (`rows` as in top_losses.csv)."""
    plt = _plt()
    k = len(rows)
    ncols = min(k, max(4, math.ceil(math.sqrt(k))))
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 2.4, nrows * 3.0), squeeze=False)
    for ax in axes.flat: ax.axis('off')
    for ax, img, r in zip(axes.flat, images, rows):
        ax.imshow(img, interpolation='nearest')
        wrong = r['predicted'] != r['actual']
        ax.set_title(f"#{r['rank']}  loss {r['loss']:.2f}  ·  img {r['index']}", fontsize=9)
        # Below the image, one line each: the actual class in green, the prediction in red when it is wrong.
        ax.text(0.5, -0.03, f"actual: {r['actual']}  p={_prob(r['p_actual'])}", transform=ax.transAxes, ha='center',
                va='top', fontsize=9, color='#1a7f37')
        ax.text(0.5, -0.14, f"pred: {r['predicted']}  p={_prob(r['p_predicted'])}", transform=ax.transAxes,
                ha='center', va='top', fontsize=9, color='#c62828' if wrong else '#1a7f37',
                fontweight='bold' if wrong else 'normal')
    # Fixed spacing rather than tight_layout, which ignores the text under each image: room for title + two lines.
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.06 / nrows, top=1 - 0.25 / nrows, hspace=0.5, wspace=0.1)
    if title: fig.suptitle(title, fontsize=11, y=1 - 0.05 / nrows)
    return save_fig(fig, path)


def plot_calibration(cal: dict, ece: float, path: str | Path, title: str = '') -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, the gap to mean confidence shaded,
    images per bin below, and the expected calibration error written on the figure."""
    plt = _plt()
    from matplotlib.ticker import FuncFormatter, NullFormatter
    edges, count, conf, acc = (np.asarray(cal[k]) for k in ('edges', 'count', 'confidence', 'accuracy'))
    lo, w = edges[:-1], np.diff(edges)
    seen = count > 0
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6.6, 7.2), sharex=True, gridspec_kw=dict(height_ratios=[3, 1]))
    a1.plot([0, 1], [0, 1], '--', color='grey', lw=1, label='perfect calibration')
    a1.bar(lo[seen], acc[seen], width=w[seen], align='edge', color='tab:blue', edgecolor='black', lw=.6,
           label='accuracy in bin')
    # The gap is drawn unfilled and on top: above the bar for over-confidence, inside it for under-confidence.
    a1.bar(lo[seen], conf[seen] - acc[seen], bottom=acc[seen], width=w[seen], align='edge', fill=False,
           edgecolor='tab:red', hatch='///', lw=.8, label='gap to mean confidence', zorder=3)
    a1.set_xlim(0, 1); a1.set_ylim(0, 1); a1.set_ylabel('accuracy')
    n = int(count.sum())
    avg_conf, avg_acc = (float((count * v).sum() / max(n, 1)) for v in (conf, acc))
    # Headline and legend sit outside the axes: inside, some model's bars would always end up beneath them.
    a1.set_title(f'ECE = {100 * ece:.2f}%  ({len(lo)} bins, {n:,} images)\nmean confidence {100 * avg_conf:.1f}%, '
                 f'accuracy {100 * avg_acc:.1f}%', fontsize=11, fontweight='bold')
    fig.suptitle('reliability diagram' + (f' · {title}' if title else ''), fontsize=10)
    a2.bar(lo, count, width=w, align='edge', color='tab:grey', edgecolor='black', lw=.6)
    a2.set_yscale('log')  # most images sit in the top bin of a good model: a linear axis hides the rest
    a2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:g}')); a2.yaxis.set_minor_formatter(NullFormatter())
    a2.set_ylim(0.7, count.max() * 4)
    for x, c, wi in zip(lo, count, w):
        if c: a2.text(x + wi / 2, c * 1.15, f'{c}', ha='center', va='bottom', fontsize=7)
    a2.set_xlabel('confidence (max softmax probability)'); a2.set_ylabel('images')
    fig.tight_layout()
    fig.legend(*a1.get_legend_handles_labels(), loc='upper center', bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8.5,
               frameon=False)
    return save_fig(fig, path)

"""Figures written to disk: sample grids and training curves. Headless-safe (Agg), one figure per call, closed after."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    if matplotlib.get_backend().lower() not in ('agg', 'module://matplotlib_inline.backend_inline'):
        matplotlib.use('Agg')  # no window: these functions only write files
    import matplotlib.pyplot as plt
    return plt


def save_fig(fig, path: str | Path) -> Path:
    "Save `fig` atomically (a temporary file renamed into place) and close it."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.stem}.tmp{path.suffix}')
    fig.savefig(tmp, dpi=110, bbox_inches='tight')
    tmp.replace(path)
    _plt().close(fig)
    return path


def sample_grid(x: np.ndarray, y: np.ndarray, classes, path: str | Path, per_class: int = 8, title: str = '') -> Path:
    "A grid with one row per class of `per_class` images (uint8 N,3,H,W), labelled with the class name."
    plt = _plt()
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.9, len(classes) * 0.95))
    axes = np.atleast_2d(axes)
    for ci, name in enumerate(classes):
        idx = np.flatnonzero(y == ci)[:per_class]
        for j, ax in enumerate(axes[ci]):
            ax.set_xticks([]); ax.set_yticks([])
            for s in ax.spines.values(): s.set_visible(False)
            if j < len(idx): ax.imshow(x[idx[j]].transpose(1, 2, 0), interpolation='nearest')
        axes[ci, 0].set_ylabel(name, rotation=0, ha='right', va='center', fontsize=10)
    if title: fig.suptitle(title, fontsize=11)
    return save_fig(fig, path)


def plot_curves(rows: list[dict], path: str | Path, title: str = '') -> Path:
    "Train/valid loss and accuracy per epoch from metrics rows (epoch, train_loss, valid_loss, accuracy)."
    plt = _plt()
    ep = [r['epoch'] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(ep, [r['train_loss'] for r in rows], 'o-', label='train loss')
    a1.plot(ep, [r['valid_loss'] for r in rows], 's-', label='valid loss')
    a1.set_xlabel('epoch'); a1.set_ylabel('loss'); a1.legend(); a1.grid(alpha=.3)
    a2.plot(ep, [100 * r['accuracy'] for r in rows], 'o-', color='tab:green')
    best = int(np.argmax([r['accuracy'] for r in rows]))
    a2.annotate(f"best {100 * rows[best]['accuracy']:.2f}% (epoch {ep[best]})",
                (ep[best], 100 * rows[best]['accuracy']), textcoords='offset points', xytext=(-10, -18), ha='right')
    a2.set_xlabel('epoch'); a2.set_ylabel('accuracy (%)'); a2.grid(alpha=.3)
    if title: fig.suptitle(title)
    for a in (a1, a2): a.xaxis.get_major_locator().set_params(integer=True)
    return save_fig(fig, path)


def plot_lr_find(found: dict, path: str | Path, chosen: str | None = None) -> Path:
    "fastai's lr_find curve (smoothed loss vs lr, log scale) with every suggestion marked."
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    lrs, losses = np.array(found['lrs']), np.array(found['losses'])
    ax.plot(lrs, losses)
    ax.set_xscale('log'); ax.set_xlabel('learning rate'); ax.set_ylabel('loss (smoothed)'); ax.grid(alpha=.3)
    finite = losses[np.isfinite(losses)]
    if len(finite): ax.set_ylim(finite.min() - 0.1 * np.ptp(finite),
                                min(finite.max(), 2.5 * finite[:max(1, len(finite) // 10)].mean()))
    for (name, lr), c in zip(found['suggestions'].items(), ('tab:red', 'tab:orange', 'tab:green', 'tab:purple')):
        y = np.interp(np.log(lr), np.log(lrs), losses) if len(lrs) else 0
        ax.plot([lr], [y], 'o', color=c, ms=8 if name == chosen else 6,
                label=f"{name}: {lr:.2e}" + ('  ← used' if name == chosen else ''))
    ax.legend(); ax.set_title('lr_find')
    return save_fig(fig, path)

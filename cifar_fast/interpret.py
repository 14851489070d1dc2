"""Interpretation of a trained model: a run folder's or a live Learner's predictions on one split, computed once by
`cifar_fast.predictions.predict_loader`; every table, CSV and figure derives from the `RunInterpretation` it returns
(see cifar_fast.predictions for why not fastai's `ClassificationInterpretation` alone)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .data import NO_AUG, FastDL, stratified_subset
from .errors import ConfigError, close_matches
from .inference import load_run, run_dls
from .predictions import RunInterpretation, check_top, predict_split
from .rundir import check_run_dir

SPLITS = ('test', 'train')


# ---- entry points ---------------------------------------------------------------------------------------------

def _check_args(split: str, top_losses: int, tta: int) -> None:
    "Fail before any work on a split, top-loss count or TTA level that cannot be right."
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} does not exist; choose one of {', '.join(SPLITS)}."
                          + close_matches(split, SPLITS))
    if not isinstance(top_losses, int) or isinstance(top_losses, bool) or top_losses < 0:
        raise ConfigError(f"top_losses must be a whole number ≥ 0, got {top_losses!r}.")
    if tta not in (0, 1, 2): raise ConfigError(f"tta must be 0, 1 or 2, got {tta!r}.")


def report_dir(root: str | Path, split: str = 'test', subset: int | None = None) -> Path:
    """Where a report goes by default: root/interpret/ for a whole split (what the end of a run writes, and what
    `cifar-fast interpret` redoes), else beside it, e.g. interpret-subset100/ or interpret-train-subset100/: a quick
    look at part of the data must not replace the full report and its figures."""
    if subset is None: return Path(root) / 'interpret'
    return Path(root) / ('interpret-' + (f'{split}-' if split != 'test' else '') + f'subset{subset}')


def split_dl(dl_or_dls, split: str = 'test', subset: int | None = None):
    """A loader over `split` of DataLoaders ('test' = valid, 'train' without augmentation), or over a given loader, in
    dataset order at the validation batch size; with `subset`, a stratified, fixed subset of it."""
    if hasattr(dl_or_dls, 'loaders'):
        dls = dl_or_dls
        src = dls.valid if split == 'test' else dls.train
        # A DataBlock's training loader augments per item: test_dl re-reads its items with the validation transforms.
        dl = src if isinstance(src, FastDL) or split == 'test' else dls.test_dl(src.items, with_labels=True)
        bs = dls.valid.bs
    else: dl, bs = dl_or_dls, dl_or_dls.bs
    if isinstance(dl, FastDL): dl = dl.new(shuffle=False, drop_last=False, aug=NO_AUG, rank=0, world_size=1, bs=bs)
    if subset is None: return dl
    if not isinstance(dl, FastDL) or dl.dataset.y is None:
        raise ConfigError("subset= needs a fast-engine loader with labels; pass dl= a loader over your subset instead.")
    n_split = len(dl.dataset)
    if not isinstance(subset, int) or isinstance(subset, bool) or not 0 < subset <= n_split:
        raise ConfigError(f"subset must be a whole number in 1..{n_split} (the {split} split's size), got {subset!r}.")
    idx = stratified_subset(dl.dataset.y.cpu().numpy(), subset)
    return dl.new(dataset=dl.dataset.subset(torch.as_tensor(idx, device=dl.dataset.x.device)))


def interpret_run(run_dir: str | Path, split: str = 'test', top_losses: int = 16, tta: int = 0,
                  trust_pickle: bool = False, subset: int | None = None, out_dir: str | Path | None = None,
                  data=None, weights: str = 'selected', device='cpu', save: bool = True) -> RunInterpretation:
    """Interpret a run folder's model (model.pth + recipe.json; export.pkl only with `trust_pickle`) on `split`,
    writing every table and figure to `out_dir` (default `report_dir(run_dir, split, subset)`: RUN_DIR/interpret/,
    or a folder beside it for a subset)."""
    _check_args(split, top_losses, tta)
    run_dir = check_run_dir(run_dir)
    t0 = time.perf_counter()
    r, model = load_run(run_dir, weights, trust_pickle, device)
    # A subset is drawn from the whole split, not from the recipe's own subset of it.
    whole = {('valid_size' if split == 'test' else 'train_size'): None} if subset is not None else {}
    dls = run_dls(r, run_dir, data, device, **whole)
    dl = split_dl(dls, split, subset)
    check_top(top_losses, len(dl.dataset), split)
    res = predict_split(model, dl, dls.vocab, top_losses, tta, split=split, title=f'{run_dir.name} ({r.model})',
                        seconds=dict(load=time.perf_counter() - t0))
    if save: res.save(Path(out_dir) if out_dir else report_dir(run_dir, split, subset))
    return res


def interpret_learner(learn, dl=None, split: str = 'test', top_losses: int = 16, tta: int = 0,
                      subset: int | None = None, out_dir: str | Path | None = None,
                      save: bool = True) -> RunInterpretation:
    """Interpret a live fastai `Learner` on `dl`, or on its `split` ('test' = dls.valid, 'train' without
    augmentation), writing to `out_dir` (default `report_dir(learn.path, split, subset)`). Losses are plain
    cross-entropy whatever `learn.loss_func` is (MixUp, label smoothing)."""
    _check_args(split, top_losses, tta)
    dl = split_dl(learn.dls if dl is None else dl, split, subset)
    check_top(top_losses, len(dl.dataset), split)
    model = getattr(learn, 'raw_model', learn.model)  # uncompiled: no recompiling for the last, smaller batch
    res = predict_split(model, dl, learn.dls.vocab, top_losses, tta, learn=learn, split=split,
                        title=f'{Path(learn.path).name} ({type(model).__name__})')
    if save: res.save(Path(out_dir) if out_dir else report_dir(learn.path, split, subset))
    return res

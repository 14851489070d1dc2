"""One entry point for CIFAR-10 `DataLoaders`: resolve the source, decode once, subset, pick an engine."""
from __future__ import annotations

import random
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from fastai.torch_core import default_device

from ..data_engines import check_engine_options
from ..errors import ConfigError
from ..machine import resolve_channels_last
from . import augment as A
from .cache import CifarArrays, load_arrays
from .datablock import cifar_datablock
from .fast import Augment, CifarTensors, fast_dataloaders
from .sources import image_folder, resolve_source

if TYPE_CHECKING: from ..recipe import Recipe


def stratified_subset(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `size` items with every class represented in proportion (largest remainder), chosen by a
    fixed-seed draw: the same subset on every run and machine, whatever the global seed."""
    n = len(labels)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 0 < size <= n:
        raise ConfigError(f"subset size must be an integer in 1..{n} (the split's size), got {size!r}.")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * size / n
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind='stable')[:size - take.sum()]: take[i] += 1
    rng, out = np.random.default_rng(seed), []
    for c, k in zip(classes, take):
        members = np.flatnonzero(labels == c)
        out.append(members[np.sort(rng.permutation(len(members))[:k])])
    return np.sort(np.concatenate(out))


@dataclass
class CifarData:
    "The decoded dataset and the chosen subsets: what both engines build from."
    arrays: CifarArrays
    source: object
    idx: dict  # split -> np.ndarray of indices into arrays.x[split]

    @property
    def classes(self): return self.arrays.classes


def cifar_data(data=None, train_size: int | None = None, valid_size: int | None = None, skip_bad: bool = False,
               num_workers: int | None = None, progress: bool = True, origin: str = '--data') -> CifarData:
    "Resolve and decode CIFAR-10 (cached), then choose the stratified deterministic subsets."
    src = resolve_source(data, origin)
    arrays = load_arrays(src, skip_bad=skip_bad, num_workers=num_workers, progress=progress)
    for field, sp, size in (('data.train_size', 'train', train_size), ('data.valid_size', 'test', valid_size)):
        if size is not None and size > len(arrays.y[sp]):
            raise ConfigError(f"{field}={size} is larger than the {sp} split of {src} ({len(arrays.y[sp]):,} images): "
                              f"use at most {len(arrays.y[sp])}, or leave it unset for the whole split.")
    idx = {sp: (np.arange(len(arrays.y[sp])) if size is None else stratified_subset(arrays.y[sp], size))
           for sp, size in (('train', train_size), ('test', valid_size))}
    return CifarData(arrays, src, idx)


def cifar_dls(data=None, engine: str = 'fast', bs: int = 512, val_bs: int | None = None,
              train_size: int | None = None, valid_size: int | None = None, aug: Augment = Augment(),
              policy: str | None = None, seed: int | None = None, num_workers: int | None = None,
              skip_bad: bool = False, device=None, path='.', dtype=torch.float32, channels_last: bool = False,
              rank: int = 0, world_size: int = 1, progress: bool = True, stats=A.CIFAR_STATS, origin: str = '--data'):
    """CIFAR-10 `DataLoaders` (train = the 50k training split, valid = the 10k test split).

    Args:
        data: folder, archive or torchvision pickles; default `$CIFAR_FAST_DATA`, then fastai's download.
        engine: 'fast' (device-resident tensors, batch augmentation) or 'datablock' (fastai's DataBlock on files).
        policy: 'trivial' or 'auto' (TrivialAugmentWide/AutoAugment, CIFAR-10 policy): shorthand for
            `aug=Augment(..., policy=...)`; torchvision's per PIL image on the DataBlock engine, batched on the device
            on the fast engine (`data/policy.py`).
        seed: seeds the loaders' own shuffling RNGs (the DataBlock engine's item augmentation follows the
            global RNG: call fastai's `set_seed` for full reproducibility).
        num_workers: decode processes for the first decode, and DataLoader workers for the DataBlock engine.
        stats: (mean, std) per channel that images are normalised with (default: fastai's `cifar_stats`).
        origin: where `data` came from, for messages (an option, a recipe field, a run's recipe.json).
    """
    check_engine_options(engine, aug.alt_flip)  # before the decode: a refusal costs nothing
    if policy is not None:
        if aug.policy not in (None, policy):
            raise ConfigError(f"policy={policy!r} and aug.policy={aug.policy!r} disagree: give the policy once.")
        aug = dataclasses.replace(aug, policy=policy)
    cd = cifar_data(data, train_size, valid_size, skip_bad, num_workers, progress, origin)
    if engine == 'fast':
        a = cd.arrays
        tensors = [CifarTensors(torch.from_numpy(a.x[sp][cd.idx[sp]]), torch.from_numpy(a.y[sp][cd.idx[sp]]),
                                a.classes, split=sp, names=[a.files[sp][i] for i in cd.idx[sp]])
                   for sp in ('train', 'test')]
        dls = fast_dataloaders(*tensors, bs=bs, aug=aug, device=device, val_bs=val_bs, path=path, dtype=dtype,
                               channels_last=channels_last, rank=rank, world_size=world_size, stats=stats)
    else:
        if world_size > 1:
            raise ConfigError("The DataBlock engine is sharded by fastai's DistributedDL: pass world_size=1.")
        root = image_folder(cd.source)
        files = [root / cd.arrays.files[sp][i] for sp in ('train', 'test') for i in cd.idx[sp]]
        dblock = cifar_datablock(cd.classes, aug, stats=stats)
        nw = 0 if num_workers is None else num_workers
        dls = dblock.dataloaders(files, bs=bs, val_bs=val_bs, num_workers=nw, device=device, path=Path(path))
    if seed is not None:
        for i, dl in enumerate(dls.loaders): dl.rng = random.Random(seed + i)
    dls.cifar_source = cd.source  # for the run folder's record of where the data came from
    return dls


def recipe_dls(r: 'Recipe', device=None, rank: int = 0, world_size: int = 1, progress: bool = True, source=None,
               engine: str | None = None, stats=A.CIFAR_STATS, origin: str | None = None,
               channels_last: bool | None = None, source_origin: str | None = None, **data_changes):
    """A recipe's DataLoaders: the one way training, evaluation and interpretation build them. Build them after
    seeding: each fastai DataLoader draws its RNG when created. `source`, `engine` and `data_changes` (DataConfig
    fields) override the recipe's data settings, e.g. where the images are now; `origin` names where the recipe came
    from in messages about its data source, `source_origin` where `source` came from (default '--data').
    `channels_last`: the run's resolved choice (default: the recipe's, resolved for `device`)."""
    d = dataclasses.replace(r.data, **data_changes)
    engine = engine or d.engine
    if channels_last is None: channels_last = resolve_channels_last(r.channels_last, device or default_device())
    aug = Augment(translate=d.translate, pad_mode=d.pad_mode, flip=d.flip, alt_flip=d.alt_flip, cutout=d.cutout,
                  policy=d.policy)
    # The recipe's batch size is the global batch: each of `world_size` processes takes its share. The fast engine
    # shards itself by rank; DataBlock loaders are sharded by fastai's DistributedDL (see distributed.py).
    shards = (rank, world_size) if engine == 'fast' else (0, 1)
    return cifar_dls(source or d.source, engine=engine, bs=d.batch_size // world_size, val_bs=d.val_batch_size,
                     train_size=d.train_size, valid_size=d.valid_size, aug=aug, num_workers=d.num_workers,
                     skip_bad=d.skip_bad,
                     device=device, rank=shards[0], world_size=shards[1], channels_last=channels_last,
                     progress=progress, stats=stats,
                     origin=((source_origin or '--data') if source
                             else f"data.source{' in ' + origin if origin else ''}"))

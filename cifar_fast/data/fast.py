"""The fast engine: CIFAR-10 as uint8 tensors resident on the training device, augmented a batch at a time there.

It is a fastai `DataLoader`/`DataLoaders`, so `Learner`, `show_batch`, `lr_find`, `get_preds`, `predict` and
`ClassificationInterpretation` work unchanged. Batches are plain tensors, not fastai's typed `TensorImage`:
typed tensors route every op of the model's forward through Python `__torch_function__`, which costs more than a
small net's GPU step. Types are added back only when decoding for display.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.data.transforms import Category, CategoryMap
from fastai.torch_core import TensorCategory, TensorImage
from fastcore.foundation import L

from ..errors import DataError
from . import augment as A
from . import policy as P


@dataclass(frozen=True)
class Augment:
    "Batch augmentation settings of the fast engine (all applied on the batch's device)."
    translate: int = 4  # max shift in pixels: pad-and-random-crop
    pad_mode: str = 'reflect'  # 'reflect' or 'zeros'
    flip: bool = True
    alt_flip: bool = False  # airbench's alternating flip instead of an independent coin per epoch
    cutout: int = 0  # side of the cutout square in pixels; 0 = off
    policy: str | None = None  # 'trivial' (TrivialAugmentWide) or 'auto' (AutoAugment, CIFAR-10), after crop and flip

    def __post_init__(self): P.check_policy(self.policy)


NO_AUG = Augment(translate=0, flip=False)


class CifarTensors:
    "One split as tensors: images uint8 (N,3,32,32), labels int64, the vocab; what a fast `DataLoader` indexes."
    def __init__(self, x: torch.Tensor, y: torch.Tensor | None, vocab, split: str = 'test', names=None):
        self.x, self.y, self.split, self.names = x, y, split, names
        self.vocab = vocab if isinstance(vocab, CategoryMap) else CategoryMap(list(vocab), sort=False)

    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        return (TensorImage(self.x[i]),) + (() if self.y is None else (TensorCategory(self.y[i]),))
    @property
    def c(self): return len(self.vocab)
    @property
    def items(self): return [(self.split, i) for i in range(len(self))]  # what fastai's Interpretation indexes
    def to(self, device): self.x, self.y = self.x.to(device), None if self.y is None else self.y.to(device); return self
    def new_empty(self):
        "No images, for `Learner.export`: cloned, since a view of no elements still pickles its whole storage."
        empty = lambda t: None if t is None else t[:0].cpu().clone()
        return CifarTensors(empty(self.x), empty(self.y), self.vocab, self.split)
    def subset(self, idxs):
        names = None if self.names is None else [self.names[int(i)] for i in idxs]
        return CifarTensors(self.x[idxs], None if self.y is None else self.y[idxs], self.vocab, self.split, names)

    @contextmanager
    def set_split_idx(self, i):
        "fastai's `Learner.tta` sets 0 to ask for training-time augmentation of a validation set."
        old, self.split_idx = getattr(self, 'split_idx', None), i
        try: yield self
        finally: self.split_idx = old


class FastDL(DataLoader):
    "A fastai `DataLoader` over `CifarTensors`: shuffles, shards by rank, augments and normalises whole batches."
    def __init__(self, dataset: CifarTensors, bs: int = 512, shuffle: bool = False, drop_last: bool = False,
                 aug: Augment = NO_AUG, dtype=torch.float32, channels_last: bool = False, rank: int = 0,
                 world_size: int = 1, epoch: int = 0, flip_base=None, device=None, stats=A.CIFAR_STATS, **kwargs):
        "`stats`: the (mean, std) per channel the images are normalised with; the run folder records them."
        kwargs.pop('num_workers', None)  # batches are made on the device: worker processes have nothing to do
        self.aug, self.dtype, self.channels_last = aug, dtype, channels_last
        self.rank, self.world_size = rank, world_size
        self.stats = stats
        self.epoch, self.flip_base = epoch, flip_base
        super().__init__(dataset, bs=bs, shuffle=shuffle, drop_last=drop_last, num_workers=0,
                         n=-(-len(dataset) // world_size), device=device, **kwargs)
        if device is not None: self.to(device)

    def to(self, device):
        self.device = device
        if device is not None: self.dataset.to(self.device)
        return self

    def new(self, dataset=None, cls=None, **kwargs):
        "Like fastai's `new`, keeping the fast engine's settings (fastai's `get_preds` and `tta` call this)."
        kw = dict(aug=self.aug, dtype=self.dtype, channels_last=self.channels_last, rank=self.rank,
                  world_size=self.world_size, epoch=self.epoch, flip_base=self.flip_base, stats=self.stats)
        return super().new(dataset=dataset, cls=cls, **{**kw, **kwargs})

    def get_idxs(self):
        "This rank's indices: a permutation (drawn from the loader's fastai RNG) or 0..N-1, padded and strided by rank."
        n = len(self.dataset)
        if self.shuffle:
            idxs = torch.randperm(n, generator=torch.Generator().manual_seed(self.rng.randint(0, 2**63 - 1)))
        else: idxs = torch.arange(n)
        if self.world_size > 1:  # pad by wrapping so every rank gets as many samples, like torch's DistributedSampler
            idxs = torch.cat([idxs, idxs[:self.n * self.world_size - n]])[self.rank::self.world_size]
        return idxs

    @property
    def active_aug(self) -> Augment:
        "The augmentation in force: `aug`, or the default training one while fastai's `tta` sets split_idx 0."
        return Augment() if self.aug == NO_AUG and getattr(self.dataset, 'split_idx', None) == 0 else self.aug

    def _draw_aug(self, idxs: torch.Tensor, aug: Augment):
        "All of one epoch's augmentation randomness, drawn on the CPU (device-independent) and moved once."
        g, n = torch.Generator().manual_seed(self.rng.randint(0, 2**63 - 1)), len(idxs)
        shifts = A.draw_shifts(n, aug.translate, g) if aug.translate else None
        if aug.alt_flip:
            if self.flip_base is None or len(self.flip_base) != len(self.dataset):
                self.flip_base = A.draw_flips(len(self.dataset), g)
            flips = A.alternating_flip_mask(self.flip_base, self.epoch)[idxs]
        else: flips = A.draw_flips(n, g) if aug.flip else None
        centers = A.draw_centers(n, self.dataset.x.shape[-1], g) if aug.cutout else None
        # Drawn last, so the other draws of a seed are the same with or without a policy. Op indices and magnitudes stay
        # on the CPU: each batch is grouped by op there, and the device never has to report back (no sync).
        ops, mags = P.draw_policy(aug.policy, n, g, tuple(self.dataset.x.shape[-2:])) if aug.policy else (None, None)
        return [None if t is None else t.to(self.device) for t in (shifts, flips, centers)] + [ops, mags]

    def __iter__(self):
        self.randomize()
        self.before_iter()
        idxs, aug = torch.as_tensor(self.get_idxs()), self.active_aug
        self.last_idxs = idxs  # which samples this epoch served, in order (for checks of sharding)
        draws = self._draw_aug(idxs, aug) if aug != NO_AUG else [None] * 5
        idxs = idxs.to(self.dataset.x.device)
        for i in range(len(self)):
            sl = slice(i * self.bs, min((i + 1) * self.bs, len(idxs)))
            yield self.after_batch(self._make_batch(idxs[sl], aug, *(None if t is None else t[sl] for t in draws)))
        self.after_iter()
        if self.shuffle: self.epoch += 1

    def _make_batch(self, idx, aug: Augment, shifts=None, flips=None, centers=None, ops=None, mags=None):
        ds = self.dataset
        x = ds.x[idx]
        if shifts is not None: x = A.translate(x, shifts, aug.pad_mode)
        if flips is not None: x = A.flip(x, flips)
        # On uint8, as torchvision's policies (their ops clamp and truncate to 0-255), and after crop and flip as the
        # DataBlock engine orders them (fastai's CropPad/FlipItem order 0, RandomCrop 1, the policy 5).
        if ops is not None: x = P.apply_policy(x, ops, mags)
        x = A.normalize(x, *self.stats, dtype=self.dtype)
        if centers is not None: x = A.cutout(x, centers, aug.cutout)
        if self.channels_last: x = x.contiguous(memory_format=torch.channels_last)
        return (x,) if ds.y is None else (x, ds.y[idx])

    # ---- decoding for display, mirroring fastai's TfmdDL API ---------------------------------------------------
    @property
    def n_inp(self) -> int: return 1

    def decode(self, b):
        "Typed CPU batch: images back to [0,1] `TensorImage`s, labels as `TensorCategory`."
        x = TensorImage(A.denormalize(b[0].float().cpu(), *self.stats))
        return (x,) + tuple(TensorCategory(t.cpu()) for t in b[1:])

    def decode_batch(self, b, max_n: int = 9, full: bool = True):
        "List of (image, class name...) tuples, as fastai's `TfmdDL.decode_batch` returns."
        return self._decode_batch(self.decode(b), max_n, full)

    def _decode_batch(self, b, max_n=9, full=True):
        x, *ys = b
        vocab = self.dataset.vocab
        return L((x[i],) + tuple(Category(vocab[int(y[i])]) for y in ys) for i in range(min(len(x), max_n)))

    def _pre_show_batch(self, b, max_n=9):
        b = self.decode(b)
        return b[0], (b[1] if len(b) > 1 else None), self._decode_batch(b, max_n)

    def show_batch(self, b=None, max_n: int = 9, ctxs=None, show: bool = True, unique: bool = False, **kwargs):
        "Show `max_n` images with their labels (defaults to `one_batch`)."
        from fastai.data.core import show_batch
        import fastai.vision.data  # noqa: F401  registers show_batch for TensorImage
        if b is None: b = self.one_batch()
        if not show: return self._pre_show_batch(b, max_n=max_n)
        show_batch(*self._pre_show_batch(b, max_n=max_n), ctxs=ctxs, max_n=max_n, **kwargs)

    def show_results(self, b, out, max_n: int = 9, ctxs=None, show: bool = True, **kwargs):
        "Show `max_n` images with targets and predictions (`out` are decoded class indices)."
        from fastai.data.core import show_results
        import fastai.vision.data  # noqa: F401
        x, y, its = self.show_batch(b, max_n=max_n, show=False)
        _, _, outs = self.show_batch((b[0], out), max_n=max_n, show=False)
        res = (x, y, its, outs.itemgot(slice(1, None)))
        if not show: return res
        show_results(*res, ctxs=ctxs, max_n=max_n, **kwargs)


class CifarDataLoaders(DataLoaders):
    "fastai `DataLoaders` of the fast engine, with `test_dl` for `predict` and fastai's `Interpretation`."
    def test_dl(self, test_items, rm_type_tfms=None, with_labels: bool = False, **kwargs):
        "A loader over `test_items`: (split, index) pairs from `items`, image paths, PIL images or HWC uint8 arrays."
        items = list(test_items)
        if items and isinstance(items[0], tuple) and len(items[0]) == 2 and isinstance(items[0][0], str):
            dss = {dl.dataset.split: dl.dataset for dl in self.loaders}
            xs, ys = zip(*[(dss[s].x[i], dss[s].y[i]) for s, i in items])
            ds = CifarTensors(torch.stack(xs).cpu(), torch.stack(ys).cpu() if with_labels else None, self.vocab)
        else: ds = CifarTensors(torch.stack([_to_uint8_chw(o) for o in items]), None, self.vocab)
        return self.valid.new(ds, shuffle=False, drop_last=False, aug=NO_AUG, rank=0, world_size=1, **kwargs)

    @property
    def vocab(self): return self.train.dataset.vocab


def _to_uint8_chw(o) -> torch.Tensor:
    "One image (path, PIL image, HWC uint8 array or CHW uint8 tensor) as a (3,32,32) uint8 tensor."
    from PIL import Image
    from .cache import decode_image
    if isinstance(o, torch.Tensor) and o.dtype == torch.uint8 and o.shape == (3, 32, 32): return o.cpu()
    if isinstance(o, Image.Image): o = np.asarray(o.convert('RGB'))
    elif not isinstance(o, np.ndarray):
        arr, status = decode_image(o)
        if arr is None: raise DataError(f"Image {o} {status}.")
        o = arr
    if o.shape != (32, 32, 3) or o.dtype != np.uint8:
        raise DataError(f"Expected a 32×32 RGB uint8 image, got an array of shape {o.shape} and dtype {o.dtype}.")
    return torch.from_numpy(np.ascontiguousarray(o.transpose(2, 0, 1)))


def fast_dataloaders(train: CifarTensors, valid: CifarTensors, bs: int = 512, aug: Augment = Augment(),
                     device=None, val_bs: int | None = None, path='.', **kwargs) -> CifarDataLoaders:
    "Training (shuffled, augmented, last partial batch dropped) and validation loaders on `device`."
    from fastai.torch_core import default_device
    device = default_device() if device is None else device
    trn = FastDL(train, bs=bs, shuffle=True, drop_last=True, aug=aug, device=device, **kwargs)
    # Validation is not sharded: every rank scores the whole test set (cheap next to training), so the accuracy each
    # rank logs equals a single-process evaluation of the same weights exactly, with no gather and no padding to trim.
    val_kw = {**kwargs, 'rank': 0, 'world_size': 1}
    val = FastDL(valid, bs=val_bs or 2 * bs, shuffle=False, drop_last=False, aug=NO_AUG, device=device, **val_kw)
    return CifarDataLoaders(trn, val, path=path, device=device)

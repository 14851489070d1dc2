"""The fastai DataBlock engine: CIFAR-10 image files through fastai's standard vision pipeline."""
from __future__ import annotations

import torch
from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.transforms import GrandparentSplitter, Normalize, parent_label
from fastai.torch_core import TensorImage
from fastai.vision.augment import CropPad, FlipItem, RandomCrop
from fastai.vision.core import PILImage
from fastai.vision.data import ImageBlock
from fasttransform import Transform

from ..data_engines import check_engine_options
from . import augment as A
from .fast import Augment

# fastai names reflect padding 'reflection'
_PAD_MODES = {'reflect': 'reflection', 'zeros': 'zeros'}


class Cutout(Transform):
    "Batch cutout for the DataBlock engine, training only; the maths is `augment.cutout`."
    split_idx, order = 0, 99  # after Normalize (order 99 too, listed first), so the square is filled with the mean

    def __init__(self, size: int): self.size = size

    def encodes(self, x: TensorImage):
        centers = torch.randint(0, x.shape[-1], (len(x), 2), device=x.device)
        return A.cutout(x, centers, self.size)


class TorchvisionAugment(Transform):
    "A torchvision policy (TrivialAugmentWide, AutoAugment) on PIL images, training only."
    split_idx, order = 0, 5

    def __init__(self, policy: str):
        import torchvision.transforms as T
        if policy == 'trivial': self.tfm = T.TrivialAugmentWide()
        elif policy == 'auto': self.tfm = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)
        else: raise ValueError(f"policy must be 'trivial' or 'auto', not {policy!r}")
        self.policy = policy

    def encodes(self, x: PILImage): return PILImage(self.tfm(x))


def cifar_datablock(classes, aug: Augment = Augment(), get_items=None, stats=A.CIFAR_STATS) -> DataBlock:
    """DataBlock for fastai's CIFAR layout: `GrandparentSplitter(train/test)`, `parent_label`, pad-and-random-crop,
    flip, optional TrivialAugment/AutoAugment (`aug.policy`, torchvision's, per PIL image) and cutout, normalised with
    `stats` (fastai's `cifar_stats`)."""
    check_engine_options('datablock', aug.alt_flip)  # cifar_dls checked already; this guards direct callers
    item_tfms = []
    if aug.policy: item_tfms.append(TorchvisionAugment(aug.policy))
    # Padding to 32+2t and a random 32 crop; on the test split RandomCrop takes the centre, i.e. the original image.
    if aug.translate: item_tfms += [CropPad(32 + 2 * aug.translate, pad_mode=_PAD_MODES[aug.pad_mode]), RandomCrop(32)]
    if aug.flip: item_tfms.append(FlipItem(0.5))
    batch_tfms = [Normalize.from_stats(*stats)]
    if aug.cutout: batch_tfms.append(Cutout(aug.cutout))
    return DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=list(classes), sort=False)), get_items=get_items,
                     splitter=GrandparentSplitter(train_name='train', valid_name='test'), get_y=parent_label,
                     item_tfms=item_tfms, batch_tfms=batch_tfms)

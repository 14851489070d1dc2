"""VGG for 32×32 images: stacks of 3×3 conv-BN-ReLU with a max-pool after each of five stages, then a small head."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .registry import register_model

__all__ = ['VGG', 'VGG_STAGES']

_VGG = ('Simonyan & Zisserman 2014 (arXiv:1409.1556) configs A/B/D/E, with BN; 512-512-10 head as in '
        'github.com/szagoruyko/cifar.torch, models/vgg_bn_drop.lua, less its first dropout and hidden BN')

# Convs per stage for configs A, B, D and E of the VGG paper's table 1; the stage widths are 64/128/256/512/512.
VGG_STAGES = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
_WIDTHS = (64, 128, 256, 512, 512)


def _conv_bn_relu(ni: int, nf: int) -> nn.Sequential:
    "3×3 conv (with bias, as the paper's and kuangliu/pytorch-cifar's VGGs), BN, ReLU."
    return nn.Sequential(nn.Conv2d(ni, nf, 3, padding=1), nn.BatchNorm2d(nf), nn.ReLU(inplace=True))


class VGG(nn.Module):
    "VGG-`depth` with BN; five 2×2 max-pools take 32×32 to 1×1, so the head sees 512 features."
    def __init__(self, depth: int = 16, num_classes: int = 10, head: str = 'mlp', hidden: int = 512,
                 dropout: float | None = None, init: str = 'kaiming'):
        super().__init__()
        if depth not in VGG_STAGES: raise ConfigError(f"VGG depth must be one of {sorted(VGG_STAGES)}, got {depth}.")
        if init not in ('kaiming', 'default'): raise ConfigError(f"init must be 'kaiming' or 'default', got {init!r}.")
        layers, ni = [], 3
        for n, nf in zip(VGG_STAGES[depth], _WIDTHS):
            for _ in range(n):
                layers.append(_conv_bn_relu(ni, nf))
                ni = nf
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        # A no-op at 32×32 (the map is already 1×1); it keeps larger inputs working.
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        if head == 'mlp':
            # The VGG paper's FC-ReLU-dropout classifier cut to one hidden FC of 512, the width of CIFAR's pooled
            # features, like Zagoruyko's cifar.torch vgg_bn_drop.lua (which adds a dropout before it and a BN after
            # it); 0.5 is the VGG paper's dropout rate for its FC layers (sec. 3.1).
            p = 0.5 if dropout is None else dropout
            self.head = nn.Sequential(nn.Linear(ni, hidden), nn.ReLU(inplace=True), nn.Dropout(p),
                                      nn.Linear(hidden, num_classes))
        elif head == 'linear':
            # One FC as in kuangliu/pytorch-cifar; no dropout unless asked for.
            self.head = nn.Sequential(nn.Dropout(dropout or 0.), nn.Linear(ni, num_classes))
        else:
            raise ConfigError(f"VGG head must be 'mlp' or 'linear', got {head!r}.")
        if init == 'kaiming': self._init()

    def _init(self) -> None:
        # As torchvision's VGG: He-normal convs (arXiv:1502.01852) with zero bias, small-normal FCs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.features(x))))


def _vgg(depth: int, num_classes: int = 10, head: str = 'mlp', hidden: int = 512, dropout: float | None = None,
         init: str = 'kaiming') -> VGG:
    "VGG-`depth` with BN; its parameters with a default are the options of vgg11…vgg19 (depth is the name's)."
    return VGG(depth, num_classes, head=head, hidden=hidden, dropout=dropout, init=init)


# Declared counts are for the default MLP head (512→512→10); head='linear' removes 262,656 (512×512 + 512), so
# vgg16 with head='linear' has 14,728,266 as kuangliu/pytorch-cifar's VGG16.

@register_model(family='vgg', params=9_493_770, source=_VGG, builder=_vgg)
def vgg11(num_classes: int = 10, **kwargs) -> VGG:
    "VGG-11 (config A) with BN: 9.49M params (9.23M with head='linear')."
    return _vgg(11, num_classes, **kwargs)


@register_model(family='vgg', params=9_678_666, source=_VGG, builder=_vgg)
def vgg13(num_classes: int = 10, **kwargs) -> VGG:
    "VGG-13 (config B) with BN: 9.68M params (9.42M with head='linear')."
    return _vgg(13, num_classes, **kwargs)


@register_model(family='vgg', params=14_990_922, source=_VGG, builder=_vgg)
def vgg16(num_classes: int = 10, **kwargs) -> VGG:
    "VGG-16 (config D) with BN: 14.99M params (14.73M with head='linear')."
    return _vgg(16, num_classes, **kwargs)


@register_model(family='vgg', params=20_303_178, source=_VGG, builder=_vgg)
def vgg19(num_classes: int = 10, **kwargs) -> VGG:
    "VGG-19 (config E) with BN: 20.30M params (20.04M with head='linear')."
    return _vgg(19, num_classes, **kwargs)

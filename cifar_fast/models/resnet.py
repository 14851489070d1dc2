"""ResNets for 32×32 images: He et al.'s CIFAR family, two ResNet-18 layouts and Page's DAWNBench ResNet-9."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .registry import register_model

__all__ = ['ConvBN', 'ShortcutA', 'BasicBlock', 'CifarResNet', 'ResNet', 'ResNet9', 'init_resnet_']

_HE = 'He et al. 2016, Deep Residual Learning for Image Recognition (arXiv:1512.03385), sec. 4.2'
_KUANGLIU = ('github.com/kuangliu/pytorch-cifar, models/resnet.py ResNet18: He et al. 2016 (arXiv:1512.03385) '
             'ResNet-18 with a 3x3 CIFAR stem')
_HE18 = ('He et al. 2016 (arXiv:1512.03385), table 1 ResNet-18 with one basic block per stage instead of two, and its '
         '7x7/2 stem without the max-pool')
_PAGE = 'D. Page, How to train your ResNet (myrtle.ai 2018), github.com/davidcpage/cifar10-fast, dawn.py'


class ConvBN(nn.Sequential):
    "A bias-free conv (the BN right after it has the bias) followed by BatchNorm."
    def __init__(self, ni: int, nf: int, ks: int = 3, stride: int = 1):
        super().__init__(OrderedDict(conv=nn.Conv2d(ni, nf, ks, stride, padding=ks // 2, bias=False),
                                     bn=nn.BatchNorm2d(nf)))


class ShortcutA(nn.Module):
    "He et al.'s option A: identity, subsampled by `stride`, with zero channels appended; no parameters."
    def __init__(self, ni: int, nf: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, nf - ni

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        # F.pad's pairs run from the last dim backwards: (W, W, H, H, C_before, C_after).
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))


class BasicBlock(nn.Module):
    "Two 3×3 conv-BN layers plus a shortcut, ReLU after the sum (He et al. 2016, fig. 2)."
    def __init__(self, ni: int, nf: int, stride: int = 1, shortcut: str = 'B'):
        super().__init__()
        self.conv1, self.act1 = ConvBN(ni, nf, 3, stride), nn.ReLU(inplace=True)
        self.conv2, self.act2 = ConvBN(nf, nf, 3), nn.ReLU(inplace=True)
        if shortcut not in ('A', 'B'): raise ConfigError(f"shortcut must be 'A' or 'B', got {shortcut!r}.")
        if stride == 1 and ni == nf: self.shortcut = nn.Identity()
        elif shortcut == 'A': self.shortcut = ShortcutA(ni, nf, stride)
        else: self.shortcut = ConvBN(ni, nf, 1, stride)  # option B: 1×1 projection where the shape changes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act1(self.conv1(x)))
        return self.act2(out + self.shortcut(x))


def _stage(ni: int, nf: int, n: int, stride: int, shortcut: str) -> nn.Sequential:
    "`n` basic blocks, the first changing `ni`→`nf` channels and downsampling by `stride`."
    return nn.Sequential(*[BasicBlock(ni if i == 0 else nf, nf, stride if i == 0 else 1, shortcut) for i in range(n)])


def init_resnet_(model: nn.Module, init: str = 'kaiming', zero_init_residual: bool = False) -> nn.Module:
    "Kaiming-normal convs (or PyTorch's defaults); optionally zero the last BN scale of each residual branch."
    if init not in ('kaiming', 'default'): raise ConfigError(f"init must be 'kaiming' or 'default', got {init!r}.")
    for m in model.modules():
        # He et al. 2015 (arXiv:1502.01852): variance 2/fan keeps ReLU activations at scale; fan_out as torchvision.
        if init == 'kaiming' and isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
    if zero_init_residual:
        # Goyal et al. 2017 (arXiv:1706.02677): each block starts as its shortcut alone, which eases early training.
        for m in model.modules():
            if isinstance(m, (BasicBlock, _Residual)): nn.init.zeros_(m.conv2.bn.weight)
    return model


class CifarResNet(nn.Module):
    "He et al. 2016's CIFAR ResNet: 3×3 stem, three stages of `n` basic blocks (16/32/64 channels), 6n+2 layers."
    def __init__(self, n: int, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64),
                 shortcut: str = 'A', zero_init_residual: bool = False, init: str = 'kaiming'):
        super().__init__()
        self.stem = nn.Sequential(ConvBN(3, widths[0]), nn.ReLU(inplace=True))
        # Stage i halves the map (32→16→8) as it widens, except the first, which keeps the stem's width.
        ni, stages = widths[0], []
        for i, nf in enumerate(widths):
            stages.append(_stage(ni, nf, n, 1 if i == 0 else 2, shortcut))
            ni = nf
        self.stages = nn.Sequential(*stages)
        self.pool, self.flatten, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ni, num_classes)
        init_resnet_(self, init, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


class ResNet(nn.Module):
    "Four stages of basic blocks (64/128/256/512) with 1×1 projection shortcuts, He et al.'s ImageNet layout."
    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, stem: str = '3x3',
                 widths: tuple[int, ...] = (64, 128, 256, 512), dropout: float = 0., zero_init_residual: bool = False,
                 init: str = 'kaiming'):
        super().__init__()
        if stem == '3x3': conv = ConvBN(3, widths[0], 3)  # CIFAR stem: keeps the 32×32 map
        elif stem == '7x7': conv = ConvBN(3, widths[0], 7, stride=2)  # ImageNet stem without its max-pool: 32→16
        else: raise ConfigError(f"stem must be '3x3' or '7x7', got {stem!r}.")
        self.stem = nn.Sequential(conv, nn.ReLU(inplace=True))
        ni, stages = widths[0], []
        for i, (n, nf) in enumerate(zip(layers, widths)):
            stages.append(_stage(ni, nf, n, 1 if i == 0 else 2, 'B'))
            ni = nf
        self.stages = nn.Sequential(*stages)
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.drop, self.fc = nn.Dropout(dropout), nn.Linear(ni, num_classes)
        init_resnet_(self, init, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.flatten(self.pool(self.stages(self.stem(x))))))


def _conv_bn_relu(ni: int, nf: int) -> nn.Sequential:
    "Page's unit: 3×3 conv, BN, ReLU."
    return nn.Sequential(OrderedDict(conv=ConvBN(ni, nf), act=nn.ReLU(inplace=True)))


class _Residual(nn.Module):
    "x + conv2(conv1(x)) with conv-BN-ReLU units and no activation after the sum (Page's `residual`)."
    def __init__(self, c: int):
        super().__init__()
        self.unit1, self.unit2 = _conv_bn_relu(c, c), _conv_bn_relu(c, c)

    @property
    def conv2(self) -> ConvBN: return self.unit2.conv  # the branch's last conv-BN, for zero_init_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.unit2(self.unit1(x))


class ResNet9(nn.Module):
    "Page's DAWNBench ResNet-9: prep 64, three conv-pool layers (128/256/512), residuals after the 1st and 3rd."
    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int, int] = (64, 128, 256, 512),
                 scale: float = 0.125, zero_init_residual: bool = False, init: str = 'kaiming'):
        super().__init__()
        prep, c1, c2, c3 = widths
        self.prep = _conv_bn_relu(3, prep)
        self.layer1 = nn.Sequential(_conv_bn_relu(prep, c1), nn.MaxPool2d(2), _Residual(c1))  # 32→16
        self.layer2 = nn.Sequential(_conv_bn_relu(c1, c2), nn.MaxPool2d(2))                    # 16→8
        self.layer3 = nn.Sequential(_conv_bn_relu(c2, c3), nn.MaxPool2d(2), _Residual(c3))  # 8→4
        self.pool, self.flatten = nn.AdaptiveMaxPool2d(1), nn.Flatten()  # Page's MaxPool2d(4) on the 4×4 map
        self.fc = nn.Linear(c3, num_classes, bias=False)  # bias-free, as in Page's dawn.py
        # Page's dawn.py ends in Mul(0.125). Why it helps: the max-pooled BN-ReLU features are of order one, so the
        # classifier's raw logits start large and saturate the softmax; a fixed 1/8 acts as a softmax temperature
        # and shrinks the gradients reaching the classifier, which suits his high learning rate. `scale=1` removes it.
        self.scale = scale
        init_resnet_(self, init, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.fc(self.flatten(self.pool(x))) * self.scale


def _cifar_resnet(depth: int, num_classes: int = 10, shortcut: str = 'A', zero_init_residual: bool = False,
                  init: str = 'kaiming') -> CifarResNet:
    "He et al.'s CIFAR ResNet-`depth` (6n+2 layers); its parameters with a default are the options of resnet20…110."
    if (depth - 2) % 6 or depth < 8: raise ConfigError(f"CIFAR ResNet depth must be 6n+2 with n ≥ 1, got {depth}.")
    return CifarResNet((depth - 2) // 6, num_classes, shortcut=shortcut, zero_init_residual=zero_init_residual,
                       init=init)


def _resnet(layers: tuple[int, ...], stem: str, num_classes: int = 10, dropout: float = 0.,
            zero_init_residual: bool = False, init: str = 'kaiming') -> ResNet:
    "A four-stage ResNet with `layers` blocks and `stem`; its parameters with a default are resnet18*'s options."
    return ResNet(layers, num_classes, stem=stem, dropout=dropout, zero_init_residual=zero_init_residual, init=init)


# He et al.'s CIFAR nets: n blocks per stage, 6n+2 layers; counts include BN and the 64→10 classifier. The paper's
# CIFAR experiments use option A (sec. 4.2), so that is the default; shortcut='B' adds two 1×1 conv-BN projections
# (2,752 params: 16→32 and 32→64), e.g. 272,474 for resnet20.

@register_model(family='resnet', params=269_722, source=_HE, builder=_cifar_resnet)
def resnet20(num_classes: int = 10, **kwargs) -> CifarResNet:
    "ResNet-20 for CIFAR (n=3), option-A shortcuts: 0.27M params."
    return _cifar_resnet(20, num_classes, **kwargs)


@register_model(family='resnet', params=464_154, source=_HE, builder=_cifar_resnet)
def resnet32(num_classes: int = 10, **kwargs) -> CifarResNet:
    "ResNet-32 for CIFAR (n=5), option-A shortcuts: 0.46M params."
    return _cifar_resnet(32, num_classes, **kwargs)


@register_model(family='resnet', params=658_586, source=_HE, builder=_cifar_resnet)
def resnet44(num_classes: int = 10, **kwargs) -> CifarResNet:
    "ResNet-44 for CIFAR (n=7), option-A shortcuts: 0.66M params."
    return _cifar_resnet(44, num_classes, **kwargs)


@register_model(family='resnet', params=853_018, source=_HE, builder=_cifar_resnet)
def resnet56(num_classes: int = 10, **kwargs) -> CifarResNet:
    "ResNet-56 for CIFAR (n=9), option-A shortcuts: 0.85M params."
    return _cifar_resnet(56, num_classes, **kwargs)


@register_model(family='resnet', params=1_727_962, source=_HE, builder=_cifar_resnet)
def resnet110(num_classes: int = 10, **kwargs) -> CifarResNet:
    "ResNet-110 for CIFAR (n=18), option-A shortcuts: 1.73M params."
    return _cifar_resnet(110, num_classes, **kwargs)


@register_model(family='resnet', params=4_910_922, source=_HE18, builder=_resnet)
def resnet18_5m(num_classes: int = 10, **kwargs) -> ResNet:
    "7×7/2 stem (no max-pool), one basic block per stage (64/128/256/512), projection shortcuts: 4.91M params."
    # He et al.'s ResNet-18 has [2, 2, 2, 2] blocks (11.69M at 1000 classes); one per stage brings it under 5M, and
    # dropping the 3×3/2 max-pool keeps a 2×2 map at the end of a 32×32 input instead of 1×1.
    # 4,910,922 = stem 9,536 + blocks 73,984 / 230,144 / 919,040 / 3,673,088 + FC 5,130; maps 16→16→8→4→2.
    return _resnet((1, 1, 1, 1), '7x7', num_classes, **kwargs)


@register_model(family='resnet', params=11_173_962, source=_KUANGLIU, builder=_resnet)
def resnet18(num_classes: int = 10, **kwargs) -> ResNet:
    "CIFAR ResNet-18: 3×3 stem 64, [2, 2, 2, 2] basic blocks, projection shortcuts: 11.17M params."
    return _resnet((2, 2, 2, 2), '3x3', num_classes, **kwargs)


# The only ResNet-9, so its signature is its own and needs no builder; ResNet9's `widths` stays fixed at Page's.
@register_model(family='resnet', params=6_573_120, source=_PAGE)
def resnet9(num_classes: int = 10, scale: float = 0.125, zero_init_residual: bool = False,
            init: str = 'kaiming') -> ResNet9:
    "Page's DAWNBench ResNet-9 with logits scaled by `scale`: 6.57M params."
    return ResNet9(num_classes, scale=scale, zero_init_residual=zero_init_residual, init=init)

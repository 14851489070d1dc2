"""Wide ResNets (Zagoruyko & Komodakis 2016): pre-activation basic blocks, widths 16k/32k/64k, depth 6n+4."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .registry import register_model

__all__ = ['PreActBlock', 'WideResNet', 'wide_resnet']

_WRN = 'Zagoruyko & Komodakis 2016, Wide Residual Networks (arXiv:1605.07146), table 1'


class PreActBlock(nn.Module):
    "BN-ReLU-conv3×3, BN-ReLU-dropout-conv3×3, plus the input (or a 1×1 conv of it where the shape changes)."
    def __init__(self, ni: int, nf: int, stride: int = 1, dropout: float = 0.):
        super().__init__()
        self.bn1, self.act1 = nn.BatchNorm2d(ni), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(ni, nf, 3, stride, padding=1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(nf), nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)  # between the convs, where the WRN paper (sec. 2.4) puts it
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, padding=1, bias=False)
        self.shortcut = None if stride == 1 and ni == nf else nn.Conv2d(ni, nf, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.act1(self.bn1(x))
        out = self.conv2(self.drop(self.act2(self.bn2(self.conv1(o)))))
        # The projection reads the pre-activated input, as in the authors' code: the block's first BN-ReLU then
        # serves both paths, and the identity path stays untouched where no projection is needed.
        return out + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    "WRN-`depth`-`k`: 3×3 stem 16, three stages of (depth-4)/6 pre-act blocks, final BN-ReLU-pool-FC."
    def __init__(self, depth: int = 28, k: float = 10, num_classes: int = 10, dropout: float = 0.,
                 zero_init_residual: bool = False, init: str = 'kaiming'):
        super().__init__()
        if (depth - 4) % 6 or depth < 10: raise ConfigError(f"WRN depth must be 6n+4 with n ≥ 1, got {depth}.")
        if k <= 0: raise ConfigError(f"WRN widening factor k must be positive, got {k}.")
        if init not in ('kaiming', 'default'): raise ConfigError(f"init must be 'kaiming' or 'default', got {init!r}.")
        n = (depth - 4) // 6
        # The paper's k is an integer; for a fractional k, round() gives the closest integer width (exact for every
        # registered k: 16 × 3.5 = 56).
        widths = [round(w * k) for w in (16, 32, 64)]
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        ni, stages = 16, []
        for i, nf in enumerate(widths):
            stride = 1 if i == 0 else 2  # 32→32→16→8
            stages.append(nn.Sequential(*[PreActBlock(ni if j == 0 else nf, nf, stride if j == 0 else 1, dropout)
                                          for j in range(n)]))
            ni = nf
        self.stages = nn.Sequential(*stages)
        # Pre-activation blocks leave their sum un-normalised, so the head normalises once before pooling.
        self.bn, self.act = nn.BatchNorm2d(ni), nn.ReLU(inplace=True)
        self.pool, self.flatten, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ni, num_classes)
        self._init(init, zero_init_residual)

    def _init(self, init: str, zero_init_residual: bool) -> None:
        for m in self.modules():
            # He et al. 2015 (arXiv:1502.01852), as the WRN authors' code initialises its convs.
            if init == 'kaiming' and isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        if zero_init_residual:  # after the loop above, which would re-initialise the zeroed convs
            # A pre-activation branch ends in a conv, not a BN: zeroing that conv makes each block the identity.
            for m in self.modules():
                if isinstance(m, PreActBlock): nn.init.zeros_(m.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.stages(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


def wide_resnet(depth: int, k: float, num_classes: int = 10, dropout: float = 0., zero_init_residual: bool = False,
                init: str = 'kaiming') -> WideResNet:
    "Any WRN-`depth`-`k` (depth = 6n+4, fractional `k` allowed); its parameters with a default are the wrn* options."
    return WideResNet(depth, k, num_classes, dropout=dropout, zero_init_residual=zero_init_residual, init=init)


@register_model(family='wide_resnet', params=2_748_890, source=_WRN, builder=wide_resnet)
def wrn16_4(num_classes: int = 10, **kwargs) -> WideResNet:
    "WRN-16-4: 2.75M params."
    return wide_resnet(16, 4, num_classes, **kwargs)


@register_model(family='wide_resnet', params=10_961_370, source=_WRN, builder=wide_resnet)
def wrn16_8(num_classes: int = 10, **kwargs) -> WideResNet:
    "WRN-16-8: 10.96M params."
    return wide_resnet(16, 8, num_classes, **kwargs)


@register_model(family='wide_resnet', params=1_467_610, source=_WRN, builder=wide_resnet)
def wrn28_2(num_classes: int = 10, **kwargs) -> WideResNet:
    "WRN-28-2: 1.47M params."
    return wide_resnet(28, 2, num_classes, **kwargs)


# The paper uses integer k only; k=4 gives WRN-28 5,849,050 params, over the 5M budget, so this one narrows it.
@register_model(family='wide_resnet', params=4_480_474, builder=wide_resnet,
                source=_WRN + "; k=3.5 (widths 56/112/224) is this project's choice, not the paper's, to fit 5M params")
def wrn28_3_5(num_classes: int = 10, **kwargs) -> WideResNet:
    "WRN-28-3.5 (widths 56/112/224), within the 5M budget: 4.48M params."
    return wide_resnet(28, 3.5, num_classes, **kwargs)


@register_model(family='wide_resnet', params=36_479_194, source=_WRN, builder=wide_resnet)
def wrn28_10(num_classes: int = 10, **kwargs) -> WideResNet:
    "WRN-28-10: 36.48M params."
    return wide_resnet(28, 10, num_classes, **kwargs)


@register_model(family='wide_resnet', params=8_949_210, source=_WRN, builder=wide_resnet)
def wrn40_4(num_classes: int = 10, **kwargs) -> WideResNet:
    "WRN-40-4: 8.95M params."
    return wide_resnet(40, 4, num_classes, **kwargs)

"""airbench-style nets for speed runs: 2×2 patch-whitening stem, three conv-pool-BN-GELU groups, scaled linear head.

After Keller Jordan's airbench (github.com/KellerJordan/cifar10-airbench, airbench94.py and airbench95.py). Only the
network and its initialisers live here; the training tricks that go with it (freezing the whitening weights,
training its bias for a few epochs, a larger LR for BN biases, lookahead-EMA, TTA) belong to the training code.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .registry import register_model

__all__ = ['whitening_weights', 'dirac_init_', 'ConvGroup', 'FastNet']

_AIRBENCH = 'K. Jordan, airbench (github.com/KellerJordan/cifar10-airbench)'


def _patches(x: torch.Tensor, k: int) -> torch.Tensor:
    "Each k×k patch (stride 1) of `x` (N, C, H, W) as rows of length C·k·k, in conv-weight order (C, kh, kw)."
    if x.dim() != 4: raise ConfigError(f"Expected images or patches shaped (N, C, H, W), got {tuple(x.shape)}.")
    if x.shape[-2:] == (k, k): return x.reshape(len(x), -1)  # already patches
    # unfold gives (N, C, H', W', k, k); move C next to the patch dims so each row matches a conv filter's layout.
    p = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5)
    return p.reshape(-1, x.shape[1] * k * k)


@torch.no_grad()
def whitening_weights(patches_or_images: torch.Tensor, eps: float = 5e-4, kernel_size: int = 2) -> torch.Tensor:
    "Conv weights (2·C·k², C, k, k) whitening k×k patches: covariance eigenvectors / sqrt(eigval+eps), and negated."
    x = _patches(patches_or_images, kernel_size).float()
    # airbench's estimate: the uncentred second moment, since its inputs are already normalised to mean ~0 per
    # channel. eigh runs in float64 because 1/sqrt(eigval) magnifies any error in the smallest eigenvalues.
    cov = (x.T @ x / len(x)).double()
    eigval, eigvec = torch.linalg.eigh(cov)  # ascending; columns are eigenvectors
    eigval, eigvec = eigval.flip(0), eigvec.flip(1)  # largest-variance direction first, as airbench orders them
    c, k = patches_or_images.shape[1], kernel_size
    filters = (eigvec.T / torch.sqrt(eigval.clamp_min(0) + eps)[:, None]).reshape(-1, c, k, k)
    # Both signs, so the GELU after the whitening conv passes each direction's positive and negative halves.
    dtype = patches_or_images.dtype if patches_or_images.is_floating_point() else torch.float32
    return torch.cat([filters, -filters]).to(dtype)


@torch.no_grad()
def dirac_init_(conv: nn.Conv2d) -> nn.Conv2d:
    "Make `conv`'s first in_channels filters the identity (and zero its bias), leaving the others as they are."
    # airbench does this to every conv: the net has no skip connections, so this is its identity path at
    # initialisation. With fewer outputs than inputs, only the first out_channels inputs get one.
    w = conv.weight
    n = min(w.shape[0], w.shape[1])
    nn.init.dirac_(w[:n])
    if conv.bias is not None: nn.init.zeros_(conv.bias)
    return conv


def _batchnorm(c: int, momentum: float, eps: float, train_scale: bool) -> nn.BatchNorm2d:
    "BatchNorm with airbench's settings; its scale is kept at 1 and frozen unless `train_scale`."
    bn = nn.BatchNorm2d(c, eps=eps, momentum=momentum)
    # airbench's BatchNorm(weight=False): only the shift is learnt; the scale stays at its initial 1.
    bn.weight.requires_grad_(train_scale)
    return bn


def _conv(ni: int, nf: int, dirac: bool) -> nn.Conv2d:
    "Bias-free 3×3 'same' conv, identity-initialised on its first `ni` filters when `dirac`."
    conv = nn.Conv2d(ni, nf, 3, padding=1, bias=False)
    return dirac_init_(conv) if dirac else conv


class ConvGroup(nn.Module):
    "airbench's unit: conv, 2×2 max-pool, BN, GELU, conv, BN, GELU (pooling first: BN and GELU see a quarter of it)."
    def __init__(self, ni: int, nf: int, bn_momentum: float = 0.4, bn_eps: float = 1e-12, train_bn_scale: bool = False,
                 dirac: bool = True):
        super().__init__()
        self.conv1, self.pool = _conv(ni, nf, dirac), nn.MaxPool2d(2)
        self.norm1, self.act1 = _batchnorm(nf, bn_momentum, bn_eps, train_bn_scale), nn.GELU()
        self.conv2 = _conv(nf, nf, dirac)
        self.norm2, self.act2 = _batchnorm(nf, bn_momentum, bn_eps, train_bn_scale), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    "Whitening conv (k×k, no padding) + GELU, three ConvGroups, global max-pool, bias-free linear, logits × `scale`."
    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256), whiten_kernel: int = 2,
                 whiten_width: int | None = None, scale: float = 1 / 9, bn_momentum: float = 0.4, bn_eps: float = 1e-12,
                 train_bn_scale: bool = False, dirac: bool = True):
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 3 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ConfigError(f"widths must be three positive ints, got {widths!r}.")
        # 2·C·k² = 24 for RGB and k=2: one filter per eigenvector of the 12-dim patch covariance, and its negative.
        whiten_width = whiten_width or 2 * 3 * whiten_kernel ** 2
        self.whiten = nn.Conv2d(3, whiten_width, whiten_kernel, padding=0, bias=True)  # 32→31
        # airbench initialises every conv this way, the stem included; init_whitening() later overwrites its weight.
        if dirac: dirac_init_(self.whiten)
        else: nn.init.zeros_(self.whiten.bias)
        self.act = nn.GELU()
        kw = dict(bn_momentum=bn_momentum, bn_eps=bn_eps, train_bn_scale=train_bn_scale, dirac=dirac)
        self.layers = nn.Sequential(ConvGroup(whiten_width, widths[0], **kw),   # 31→15
                                    ConvGroup(widths[0], widths[1], **kw),      # 15→7
                                    ConvGroup(widths[1], widths[2], **kw))      # 7→3
        # airbench's MaxPool2d(3) on the final 3×3 map is a global max-pool; adaptive keeps other sizes working.
        self.pool, self.flatten = nn.AdaptiveMaxPool2d(1), nn.Flatten()
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        # airbench multiplies the logits by 1/9 (its 'scaling_factor'), a fixed softmax temperature for the GELU
        # features; stored as a plain float, not a parameter, so no optimiser changes it.
        self.scale = scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> FastNet:
        "Set the whitening conv from the patch covariance of (normalised) training `images`, as airbench does."
        w = whitening_weights(images, eps, kernel_size=self.whiten.kernel_size[0])
        if w.shape != self.whiten.weight.shape:
            raise ConfigError(f"Whitening gives {tuple(w.shape)} filters but the stem conv is "
                              f"{tuple(self.whiten.weight.shape)}: leave whiten_width at 2·C·k² to use it.")
        self.whiten.weight.copy_(w)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.act(self.whiten(x)))
        return self.head(self.flatten(self.pool(x))) * self.scale


# bn_momentum is PyTorch's convention (weight of the new batch): airbench's 'batchnorm_momentum' 0.6 is the weight of
# the old running value, i.e. momentum=1-0.6=0.4 here.

# Each entrypoint fixes only the default widths; the other options are FastNet's parameters (whiten_kernel included:
# init_whitening follows the stem's kernel size).

@register_model(family='fastnet', params=1_972_792, source=_AIRBENCH + ', airbench94.py (widths 64/256/256)',
                builder=FastNet)
def fastnet94(num_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256), **kwargs) -> FastNet:
    "airbench94's net (94% in ~10 epochs with its recipe): 1.97M params."
    return FastNet(num_classes, widths, **kwargs)


@register_model(family='fastnet', params=4_606_520, source=_AIRBENCH + ', airbench95.py (widths 128/384/384)',
                builder=FastNet)
def fastnet95(num_classes: int = 10, widths: tuple[int, int, int] = (128, 384, 384), **kwargs) -> FastNet:
    "airbench95's wider net (95% in 15 epochs with its recipe): 4.61M params."
    return FastNet(num_classes, widths, **kwargs)


@register_model(family='fastnet', params=295_096, source=_AIRBENCH + ', narrowed to 32/64/128 for CPU runs',
                builder=FastNet)
def fastnet_cpu(num_classes: int = 10, widths: tuple[int, int, int] = (32, 64, 128), **kwargs) -> FastNet:
    "The airbench net at widths 32/64/128, small enough to train on a laptop CPU: 0.29M params."
    return FastNet(num_classes, widths, **kwargs)

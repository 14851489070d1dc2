"""Pure batch augmentation maths on (N,C,H,W) tensors, on whatever device they live; randomness is drawn by the
caller with an explicit `torch.Generator`, so every function here is deterministic and testable alone."""
from __future__ import annotations

import functools

import torch
from fastai.vision.data import cifar_stats

# fastai's own CIFAR-10 channel statistics, so both engines normalise identically (fastai.vision.data.cifar_stats).
CIFAR_MEAN, CIFAR_STD = cifar_stats
CIFAR_STATS = (tuple(CIFAR_MEAN), tuple(CIFAR_STD))


def draw_shifts(n: int, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    "Per-image (dy, dx) integer shifts in [-max_shift, max_shift], shape (n, 2)."
    return torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator, dtype=torch.int64)


def draw_flips(n: int, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    "Per-image boolean flip decisions with probability `p`."
    return torch.rand(n, generator=generator) < p


def draw_centers(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    "Per-image (row, col) cutout centres anywhere in a `size`×`size` image, shape (n, 2)."
    return torch.randint(0, size, (n, 2), generator=generator, dtype=torch.int64)


def _source_index(shift: torch.Tensor, length: int, pad_mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    "For output pixel i of a crop shifted by `shift`, the source pixel i+shift mapped back inside the image."
    idx = torch.arange(length, device=shift.device)[None] + shift[:, None]  # (N, L)
    if pad_mode == 'reflect':  # reflect without repeating the edge pixel, like F.pad(mode='reflect')
        idx = idx.abs()
        return torch.where(idx > length - 1, 2 * (length - 1) - idx, idx), None
    valid = (idx >= 0) & (idx < length)
    return idx.clamp(0, length - 1), valid


def translate(x: torch.Tensor, shifts: torch.Tensor, pad_mode: str = 'reflect') -> torch.Tensor:
    """Shift each image by `shifts[i] = (dy, dx)` pixels, filling with `pad_mode` ('reflect' or 'zeros'):
    the same as padding by max|shift| and cropping at offset pad+shift, without materialising the padded batch."""
    if pad_mode not in ('reflect', 'zeros'):
        raise ValueError(f"pad_mode must be 'reflect' or 'zeros', not {pad_mode!r}")
    n, c, h, w = x.shape
    shifts = shifts.to(x.device)
    rows, rvalid = _source_index(shifts[:, 0], h, pad_mode)
    cols, cvalid = _source_index(shifts[:, 1], w, pad_mode)
    out = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    if pad_mode == 'zeros':
        out = out * (rvalid[:, None, :, None] & cvalid[:, None, None, :]).to(out.dtype)
    return out


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    "Mirror left-right the images where `mask` is true."
    return torch.where(mask.to(x.device)[:, None, None, None], x.flip(-1), x)


def alternating_flip_mask(base: torch.Tensor, epoch: int) -> torch.Tensor:
    """airbench's alternating flip: epoch 0 flips each image by its random `base` draw, later epochs flip exactly
    the images not flipped the epoch before, so every image is seen both ways every two epochs."""
    return base ^ bool(epoch % 2)


def cutout(x: torch.Tensor, centers: torch.Tensor, size: int, value: float = 0.) -> torch.Tensor:
    "Fill a `size`×`size` square centred at `centers[i]` (clipped at the borders) with `value` (DeVries & Taylor 2017)."
    n, c, h, w = x.shape
    centers = centers.to(x.device)
    lo = centers - size // 2
    r, cc = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    mr = (r[None] >= lo[:, :1]) & (r[None] < lo[:, :1] + size)  # (N, H)
    mc = (cc[None] >= lo[:, 1:]) & (cc[None] < lo[:, 1:] + size)  # (N, W)
    return x.masked_fill((mr[:, :, None] & mc[:, None, :])[:, None], value)


def normalize(x: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD, dtype=torch.float32) -> torch.Tensor:
    """uint8 images to normalised floats with the same operations, in the same order, as fastai's
    `IntToFloatTensor` then `Normalize`, so the result is bitwise equal to the DataBlock engine's in float32."""
    m, s = _stats_on(tuple(mean), tuple(std), x.device)
    return ((x.float().div_(255.) - m) / s).to(dtype)


@functools.lru_cache(maxsize=16)
def _stats_on(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (1,C,1,1) mean and std tensors on `device`, made once: built for every batch they were two tensors from
    Python data a batch, each a copy from pageable host memory on a GPU."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def denormalize(x: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    "Normalised images back to floats in [0, 1], for showing them."
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() * s + m).clamp(0, 1)

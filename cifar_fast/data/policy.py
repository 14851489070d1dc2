"""TrivialAugmentWide and AutoAugment (CIFAR-10 policy) on whole uint8 batches, on whatever device they live.

torchvision draws one op per image in Python and runs it on that image alone: 1-2k images/s on a 2-core CPU
(docs/benchmarks.md), which would starve a GPU. Here the randomness of many images is drawn at once on the CPU with
an explicit generator (`draw_policy`), so a seed gives the same augmentation on every device; a batch is then sorted by
op and each op runs once on its contiguous slice, with per-image magnitudes, and the five geometric ops share one
`grid_sample` (`apply_policy`).

The op list, magnitude bins, probabilities and signs are those of torchvision 0.29's `transforms/autoaugment.py`
(`TrivialAugmentWide()`, `AutoAugment(AutoAugmentPolicy.CIFAR10)`, nearest interpolation, fill 0), and each op gives
the pixels `torchvision.transforms.v2.functional` gives one uint8 image: tests/test_policy_augment.py checks both."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from ..errors import ConfigError

POLICIES = ('trivial', 'auto')
# One index space for both policies: TrivialAugmentWide's 14 ops in torchvision's order, then AutoAugment's Invert.
# The geometric ops are contiguous (1..5) so that a batch sorted by op warps them all in one call.
OPS = ('Identity', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate', 'Brightness', 'Color', 'Contrast',
       'Sharpness', 'Posterize', 'Solarize', 'AutoContrast', 'Equalize', 'Invert')
OP = {name: i for i, name in enumerate(OPS)}
GEOMETRIC = tuple(range(OP['ShearX'], OP['Rotate'] + 1))
SIGNED = ('ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate', 'Brightness', 'Color', 'Contrast', 'Sharpness')

# AutoAugment's CIFAR-10 policy (Cubuk et al. 2019, table 8 of arXiv:1805.09501; torchvision's
# AutoAugmentPolicy.CIFAR10): 25 sub-policies of two (op, probability, magnitude bin of 10) steps, applied in order.
CIFAR10_POLICY = (
    (('Invert', 0.1, None), ('Contrast', 0.2, 6)), (('Rotate', 0.7, 2), ('TranslateX', 0.3, 9)),
    (('Sharpness', 0.8, 1), ('Sharpness', 0.9, 3)), (('ShearY', 0.5, 8), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.5, None), ('Equalize', 0.9, None)), (('ShearY', 0.2, 7), ('Posterize', 0.3, 7)),
    (('Color', 0.4, 3), ('Brightness', 0.6, 7)), (('Sharpness', 0.3, 9), ('Brightness', 0.7, 9)),
    (('Equalize', 0.6, None), ('Equalize', 0.5, None)), (('Contrast', 0.6, 7), ('Sharpness', 0.6, 5)),
    (('Color', 0.7, 7), ('TranslateX', 0.5, 8)), (('Equalize', 0.3, None), ('AutoContrast', 0.4, None)),
    (('TranslateY', 0.4, 3), ('Sharpness', 0.2, 6)), (('Brightness', 0.9, 6), ('Color', 0.2, 8)),
    (('Solarize', 0.5, 2), ('Invert', 0.0, None)), (('Equalize', 0.2, None), ('AutoContrast', 0.6, None)),
    (('Equalize', 0.2, None), ('Equalize', 0.6, None)), (('Color', 0.9, 9), ('Equalize', 0.6, None)),
    (('AutoContrast', 0.8, None), ('Solarize', 0.2, 8)), (('Brightness', 0.1, 3), ('Color', 0.7, 0)),
    (('Solarize', 0.4, 5), ('AutoContrast', 0.9, None)), (('TranslateY', 0.9, 9), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.9, None), ('Solarize', 0.8, 3)), (('Equalize', 0.8, None), ('Invert', 0.1, None)),
    (('TranslateY', 0.7, 9), ('AutoContrast', 0.9, None)),
)


def check_policy(policy) -> None:
    "Refuse anything but None, 'trivial' or 'auto', naming the value."
    if policy is not None and policy not in POLICIES:
        raise ConfigError(f"policy={policy!r}: allowed values are None, 'trivial' (TrivialAugmentWide) or 'auto' "
                          f"(AutoAugment, CIFAR-10 policy).")


def magnitude_bins(policy: str, hw: tuple[int, int] = (32, 32)) -> torch.Tensor:
    """(len(OPS), bins) float32: each op's unsigned magnitudes, torchvision's augmentation space for `policy`
    (31 bins for TrivialAugmentWide, 10 for AutoAugment; zeros for ops without a magnitude). `hw` sizes AutoAugment's
    translations (150/331 of the side, from the paper's 331-pixel images); TrivialAugmentWide's are fixed (32)."""
    check_policy(policy)
    wide = policy == 'trivial'
    n = 31 if wide else 10
    out = torch.zeros(len(OPS), n)
    for ops, top in ((('ShearX', 'ShearY'), 0.99 if wide else 0.3), (('Rotate',), 135. if wide else 30.),
                     (('Brightness', 'Color', 'Contrast', 'Sharpness'), 0.99 if wide else 0.9),
                     (('TranslateX',), 32. if wide else 150. / 331. * hw[1]),
                     (('TranslateY',), 32. if wide else 150. / 331. * hw[0])):
        for op in ops: out[OP[op]] = torch.linspace(0., top, n)
    # Bits kept, 8 down to 2 (wide) or 4: the same float arithmetic as torchvision, so the rounding agrees.
    out[OP['Posterize']] = (8 - (torch.arange(n) / ((n - 1) / (6 if wide else 4))).round().int()).float()
    # Thresholds in pixel values, as torchvision.transforms (v1, which the DataBlock engine runs) spells them. v2 uses
    # 255·linspace(1, 0), which in 3 of the 31 wide bins lands just above 119, 102 and 51, so those values stay.
    out[OP['Solarize']] = torch.linspace(255., 0., n)
    return out


def _policy_table() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    "CIFAR10_POLICY as tensors (25, 2): op indices, probabilities, magnitude bins (0 where the op has none)."
    ops = torch.tensor([[OP[op] for op, _, _ in sub] for sub in CIFAR10_POLICY])
    probs = torch.tensor([[p for _, p, _ in sub] for sub in CIFAR10_POLICY])
    bins = torch.tensor([[b or 0 for _, _, b in sub] for sub in CIFAR10_POLICY])
    return ops, probs, bins


def draw_policy(policy: str, n: int, generator: torch.Generator, hw: tuple[int, int] = (32, 32)):
    """Per-image op indices (int64) and signed magnitudes (float32), both (n, steps) on the CPU: one step for
    TrivialAugmentWide, two for AutoAugment (a skipped step is Identity). The distributions are torchvision's: a
    uniform op and bin (wide), or a uniform sub-policy whose steps each run with their probability; signed ops are
    negated with probability 1/2."""
    bins = magnitude_bins(policy, hw)
    if policy == 'trivial':  # Identity..Equalize: TrivialAugmentWide has no Invert
        ops = torch.randint(0, OP['Invert'], (n, 1), generator=generator)
        idx = torch.randint(0, bins.shape[1], (n, 1), generator=generator)
    else:
        sub_ops, sub_probs, sub_bins = _policy_table()
        sub = torch.randint(0, len(CIFAR10_POLICY), (n,), generator=generator)
        run = torch.rand(n, 2, generator=generator) <= sub_probs[sub]  # `<=` as torchvision: p=0 runs with prob ~0
        ops, idx = torch.where(run, sub_ops[sub], OP['Identity']), sub_bins[sub]
    signed = torch.tensor([op in SIGNED for op in OPS])
    flip = (torch.rand(ops.shape, generator=generator) < 0.5) & signed[ops]
    mags = bins[ops, idx]
    return ops, torch.where(flip, -mags, mags)


# ---- the ops: a uint8 batch and one magnitude per image (torchvision's magnitude, as its `_apply_op` takes) ---------

def _per_image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.device, torch.float32, non_blocking=True).view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, mags: torch.Tensor) -> torch.Tensor:
    """torchvision's uint8 blend with factor 1+m: x·(1+m) + other·(−m), clamped and truncated. `addcmul` rounds like
    torchvision's `add_(other, alpha=-m)` (both fused: equal on 1M random floats here, where a multiply then an add
    differed in 2% of them); with a multiply then an add, truncation turned last-bit differences into off-by-one
    pixels and 3 tests of tests/test_policy_augment.py failed."""
    m = _per_image(mags, x)
    return x.float().mul_(1 + m).addcmul_(other, -m).clamp_(0, 255).to(torch.uint8)


def brightness(x, mags): return x.float().mul_(1 + _per_image(mags, x)).clamp_(0, 255).to(torch.uint8)


def color(x, mags):
    "Saturation: blend with the (floored) luma image."
    return _blend(x, TF.rgb_to_grayscale(x).float(), mags)


def contrast(x, mags):
    "Blend with each image's mean luma (of the floored uint8 luma, as torchvision)."
    return _blend(x, TF.rgb_to_grayscale(x).float().mean(dim=(-3, -2, -1), keepdim=True), mags)


def sharpness(x, mags):
    """Blend the inner pixels with PIL's smoothing filter (1s around a 5, over 13), rounded; the 1-pixel border
    stays, as in PIL and torchvision. The filter is summed from 9 shifted views rather than a grouped conv2d (4× faster
    on CPU); the sum is exact and k/13 is never within 1/26 of a half, so the rounded result equals torchvision's."""
    out = x.float()
    h, w = x.shape[-2:]
    blurred = out[..., 1:-1, 1:-1] * 4
    for dy in range(3):
        for dx in range(3): blurred += out[..., dy:h - 2 + dy, dx:w - 2 + dx]
    blurred = blurred.div_(13.).round_()
    inner = out[..., 1:-1, 1:-1]
    inner.addcmul_(blurred.sub_(inner), _per_image(-mags, x))
    return out.clamp_(0, 255).to(torch.uint8)


def posterize(x, mags):
    "Keep the top `int(m)` bits of every channel value."
    bits = mags.to(torch.int64)
    mask = (256 - (1 << (8 - bits))).to(torch.uint8)  # 8 bits: 0xFF, the image unchanged
    return x & mask.to(x.device, non_blocking=True).view(-1, 1, 1, 1)


def solarize(x, mags):
    "Invert the channel values at or above the threshold m (0-255)."
    # For integer pixels, x >= m is x >= ceil(m): compared in uint8, without a float copy of the batch.
    thr = mags.ceil().clamp(0, 255).to(torch.uint8).to(x.device, non_blocking=True).view(-1, 1, 1, 1)
    return torch.where(x >= thr, 255 - x, x)


def autocontrast(x, mags=None): return TF.autocontrast(x)  # per image and channel on a batch already
def equalize(x, mags=None): return TF.equalize(x)  # per image and channel on a batch already
def invert(x, mags=None): return TF.invert(x)
def identity(x, mags=None): return x


def affine_theta(ops: torch.Tensor, mags: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, 2, 3) float32 inverse affine maps (output pixel → source pixel, coordinates centred on the image), built as
    torchvision's `_get_inverse_affine_matrix` builds them, for images whose op is ShearX/Y, TranslateX/Y or Rotate
    (others get the identity). In float64 on the CPU, like torchvision's Python floats, whatever the batch's device."""
    ops, m = ops.cpu(), mags.detach().cpu().double()
    h, w = hw
    zero = torch.zeros_like(m)
    on = lambda name, v: torch.where(ops == OP[name], v, zero)
    # torchvision: shear by degrees(atan(m)) about the top-left corner (center=[0, 0]); translate by int(m) pixels;
    # rotate(angle) calls the affine helper with −angle (its two conventions run opposite ways).
    sx = torch.deg2rad(torch.rad2deg(torch.atan(on('ShearX', m))))
    sy = torch.deg2rad(torch.rad2deg(torch.atan(on('ShearY', m))))
    tx, ty = on('TranslateX', m.trunc()), on('TranslateY', m.trunc())
    rot = torch.deg2rad(on('Rotate', -torch.remainder(m, 360.)))  # torchvision takes the angle mod 360 first
    shear = (ops == OP['ShearX']) | (ops == OP['ShearY'])
    cx, cy = torch.where(shear, -0.5 * w, 0.), torch.where(shear, -0.5 * h, 0.)
    # Forward map = translate · about the centre (rotate · shear_y · shear_x); its 2×2 part [[a, b], [c, d]] has
    # determinant 1, so the inverse is [[d, −b], [−c, a]], then the translations undone in reverse order.
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    ex, ey = cx + tx, cy + ty
    theta = torch.stack([d, -b, cx - d * ex + b * ey, -c, a, cy + c * ex - a * ey], 1)
    return theta.float().view(-1, 2, 3)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each image by its own inverse map `theta` (N, 2, 3), nearest pixel, zeros outside: torchvision v2's
    `affine_image`/`rotate_image` on uint8 with fill=None, the grid built the same way but for the whole batch."""
    n, _, h, w = x.shape
    theta = theta.to(x.device, non_blocking=True)
    base = torch.ones(1, h, w, 3, device=x.device)
    base[..., 0] = torch.linspace((1. - w) * 0.5, (w - 1.) * 0.5, w, device=x.device)
    base[..., 1] = torch.linspace((1. - h) * 0.5, (h - 1.) * 0.5, h, device=x.device).unsqueeze(-1)
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], device=x.device)
    # A bmm, as torchvision's `_affine_grid`, not an elementwise sum: the same kernel rounds the same way, and at ties
    # (a 45° rotation puts a diagonal of pixel centres exactly between two pixels) the last bit picks the pixel.
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(scaled).view(n, h, w, 2)
    # torchvision rounds before the cast; nearest sampling of integer pixels gives integers, so the cast alone is exact.
    return F.grid_sample(x.float(), grid, mode='nearest', padding_mode='zeros', align_corners=False).to(torch.uint8)


def geometric(x, ops, mags): return warp(x, affine_theta(ops, mags, x.shape[-2:]))


# Every op but the geometric ones, by name (torchvision's "color" ops, plus Identity).
_COLOUR = {'Identity': identity, 'Brightness': brightness, 'Color': color, 'Contrast': contrast,
           'Sharpness': sharpness, 'Posterize': posterize, 'Solarize': solarize, 'AutoContrast': autocontrast,
           'Equalize': equalize, 'Invert': invert}


def _check_uint8(x: torch.Tensor):
    "The ops clamp and truncate to 0-255 as torchvision does on uint8: a float batch would be silently wrong."
    if x.dtype != torch.uint8: raise TypeError(f"policy ops take uint8 images (N, 3, H, W), got {x.dtype}.")


def apply_op(x: torch.Tensor, op: str, mags: torch.Tensor) -> torch.Tensor:
    "Op `op` on every image of the uint8 batch `x` (N, 3, H, W), image i with magnitude `mags[i]`."
    if op not in OP: raise ConfigError(f"op={op!r} is not a policy op: one of {', '.join(OPS)}.")
    _check_uint8(x)
    if OP[op] in GEOMETRIC: return geometric(x, torch.full((len(x),), OP[op]), mags)
    return _COLOUR[op](x, mags)


def apply_ops(x: torch.Tensor, ops: torch.Tensor, mags: torch.Tensor) -> torch.Tensor:
    """One step: image i gets op `OPS[ops[i]]` with magnitude `mags[i]`. `ops` and `mags` are best left on the CPU,
    where the grouping is computed: from a GPU they would be read back, a sync per batch."""
    _check_uint8(x)
    ops, mags = ops.cpu(), mags.cpu()
    if (ops == OP['Identity']).all(): return x
    order = torch.argsort(ops, stable=True)
    ends = [0] + torch.bincount(ops, minlength=len(OPS)).cumsum(0).tolist()  # sorted images of op k: ends[k]:ends[k+1]
    dev_order = order.to(x.device, non_blocking=True)
    xs, so, sm = x[dev_order], ops[order], mags[order]
    smd = sm.to(x.device, non_blocking=True)
    parts, k = [], 0
    while k < len(OPS):
        last = GEOMETRIC[-1] if k in GEOMETRIC else k
        lo, hi = ends[k], ends[last + 1]
        if hi > lo:
            sl = slice(lo, hi)
            parts.append(geometric(xs[sl], so[sl], sm[sl]) if k in GEOMETRIC else _COLOUR[OPS[k]](xs[sl], smd[sl]))
        k = last + 1
    out = torch.empty_like(x)
    out[dev_order] = torch.cat(parts)
    return out


def apply_policy(x: torch.Tensor, ops: torch.Tensor, mags: torch.Tensor) -> torch.Tensor:
    "Every step of `draw_policy`'s (N, steps) draws in turn (AutoAugment's two steps are applied in order)."
    for s in range(ops.shape[1]): x = apply_ops(x, ops[:, s], mags[:, s])
    return x

"""The batched TrivialAugmentWide/AutoAugment (cifar_fast/data/policy.py) against torchvision: the same op list, bins,
probabilities and signs, and pixel for pixel the same images as torchvision.transforms.v2.functional gives each image
alone; plus known answers worked out by hand, and the policy in the fast engine's batches."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from cifar_fast.data import policy as P
from cifar_fast.data.fast import Augment, CifarTensors, FastDL
from cifar_fast.errors import ConfigError

NEAREST = InterpolationMode.NEAREST


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, 32, 32) of the kinds the ops treat differently: smooth colour images (upsampled 4×4 noise),
    noise, grey images (r = g = b) and one flat image (autocontrast and equalize leave it as it is)."""
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 255, size=32, mode='bilinear', align_corners=False)
    x = smooth.round().to(torch.uint8)
    x[1::4] = torch.randint(0, 256, x[1::4].shape, generator=g, dtype=torch.uint8)
    x[2::4] = x[2::4, :1].expand(-1, 3, -1, -1)
    x[0] = 77
    return x


def _torchvision(img: torch.Tensor, op: str, m: float) -> torch.Tensor:
    "One image through torchvision v2's functional, with the arguments torchvision's `_apply_op` derives from m."
    affine = dict(angle=0., scale=1., interpolation=NEAREST, fill=None)
    if op == 'ShearX': return TF.affine(img, translate=[0, 0], shear=[math.degrees(math.atan(m)), 0.], center=[0, 0],
                                        **affine)
    if op == 'ShearY': return TF.affine(img, translate=[0, 0], shear=[0., math.degrees(math.atan(m))], center=[0, 0],
                                        **affine)
    if op == 'TranslateX': return TF.affine(img, translate=[int(m), 0], shear=[0., 0.], **affine)
    if op == 'TranslateY': return TF.affine(img, translate=[0, int(m)], shear=[0., 0.], **affine)
    if op == 'Rotate': return TF.rotate(img, m, interpolation=NEAREST, fill=None)
    if op == 'Brightness': return TF.adjust_brightness(img, 1. + m)
    if op == 'Color': return TF.adjust_saturation(img, 1. + m)
    if op == 'Contrast': return TF.adjust_contrast(img, 1. + m)
    if op == 'Sharpness': return TF.adjust_sharpness(img, 1. + m)
    if op == 'Posterize': return TF.posterize(img, int(m))
    if op == 'Solarize': return TF.solarize(img, m)
    if op == 'AutoContrast': return TF.autocontrast(img)
    if op == 'Equalize': return TF.equalize(img)
    if op == 'Invert': return TF.invert(img)
    assert op == 'Identity'
    return img


def _reference(x, ops, mags):
    "Each image alone through torchvision, step after step."
    out = []
    for img, steps, ms in zip(x, ops.tolist(), mags.tolist()):
        for k, m in zip(steps, ms): img = _torchvision(img, P.OPS[k], m)
        out.append(img)
    return torch.stack(out)


# ---- the same augmentation space as torchvision ---------------------------------------------------------------------

def test_ops_bins_and_signs_are_torchvisions():
    space = T.TrivialAugmentWide()._augmentation_space(31)
    assert list(space) == list(P.OPS[:14])  # TrivialAugmentWide's ops, in its order
    for policy, space in (('trivial', space), ('auto', T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)
                                                ._augmentation_space(10, (32, 32)))):
        bins = P.magnitude_bins(policy)
        for op, (mags, signed) in space.items():
            assert signed == (op in P.SIGNED), op
            expected = mags.float() if mags.ndim else torch.zeros(bins.shape[1])
            assert torch.equal(bins[P.OP[op]], expected), (policy, op)


def test_autoaugment_cifar10_policy_is_torchvisions():
    assert P.CIFAR10_POLICY == tuple(tuple(s) for s in T.AutoAugment(T.AutoAugmentPolicy.CIFAR10).policies)


def test_unknown_policy_or_op_names_the_value():
    with pytest.raises(ConfigError, match=r"policy='rand'.*'trivial'.*'auto'"): P.magnitude_bins('rand')
    with pytest.raises(ConfigError, match=r"policy='rand'"): Augment(policy='rand')
    with pytest.raises(ConfigError, match=r"op='Blur'.*Identity"): P.apply_op(_images(2), 'Blur', torch.zeros(2))
    with pytest.raises(TypeError, match='uint8.*float32'):
        P.apply_policy(_images(2).float(), *P.draw_policy('trivial', 2, torch.Generator().manual_seed(0)))


# ---- every op, every bin and sign, against torchvision ---------------------------------------------------------------

# TrivialAugmentWide has no Invert
@pytest.mark.parametrize('policy,op', [('trivial', op) for op in P.OPS[:-1]] + [('auto', op) for op in P.OPS])
def test_each_op_equals_torchvision_per_image(policy, op):
    """One batch holds every magnitude of the op's bins, both signs where signed, one per image; each image must equal
    torchvision on that image alone. Exact, geometric ops included: the warp builds its grid with the same bmm
    (tolerance 0 pixels; nearest sampling would differ only at exact ties, e.g. 45° rotations)."""
    mags = P.magnitude_bins(policy)[P.OP[op]]
    if op in P.SIGNED: mags = torch.cat([mags, -mags[1:]])
    else: mags = mags.unique().repeat(8 // len(mags.unique()) + 1)  # ops without a magnitude: 9 images all the same
    x = _images(len(mags), seed=P.OP[op])
    out = P.apply_op(x, op, mags)
    ref = _reference(x, torch.full((len(x), 1), P.OP[op]), mags[:, None])
    assert out.dtype == torch.uint8 and out.shape == x.shape
    bad = [f'm={m:g}' for m, o, r in zip(mags.tolist(), out, ref) if not torch.equal(o, r)]
    assert not bad, f'{op} differs from torchvision at {bad}'


@pytest.mark.parametrize('policy', P.POLICIES)
def test_a_drawn_batch_equals_torchvision_image_by_image(policy):
    "Mixed ops in one batch: the sort by op and the way back put every image where it was, each step in order."
    x = _images(96, seed=1)
    ops, mags = P.draw_policy(policy, len(x), torch.Generator().manual_seed(2))
    assert ops.shape == mags.shape == (len(x), 1 if policy == 'trivial' else 2)
    assert torch.equal(P.apply_policy(x, ops, mags), _reference(x, ops, mags))


# ---- known answers, by hand ------------------------------------------------------------------------------------------

def _flat(v: int, n: int = 1) -> torch.Tensor: return torch.full((n, 3, 32, 32), v, dtype=torch.uint8)


def test_identity_leaves_the_batch_alone():
    x = _images(4)
    assert torch.equal(P.apply_op(x, 'Identity', torch.zeros(4)), x)
    assert P.apply_ops(x, torch.zeros(4, dtype=torch.int64), torch.zeros(4)) is x  # nothing to do, nothing copied


def test_brightness_scales_pixels_clamps_and_truncates():
    x = torch.cat([_flat(100), _flat(200), _flat(101)])
    out = P.apply_op(x, 'Brightness', torch.tensor([0.5, 0.5, -0.5]))[:, :, 0, 0]
    assert out.tolist() == [[150] * 3, [255] * 3, [50] * 3]  # 100·1.5; 200·1.5 clamped; 101·0.5 = 50.5 truncated


def test_solarize_inverts_at_and_above_the_threshold():
    x = torch.tensor([0, 127, 128, 200, 255], dtype=torch.uint8).view(1, 1, 1, 5).expand(1, 3, 32, 5)
    out = P.apply_op(x, 'Solarize', torch.tensor([128.]))
    assert out[0, 0, 0].tolist() == [0, 127, 127, 55, 0]


def test_posterize_keeps_the_top_bits():
    out = P.apply_op(_flat(0b10110111, 2), 'Posterize', torch.tensor([3., 8.]))
    assert out[0, 0, 0, 0] == 0b10100000 and out[1, 0, 0, 0] == 0b10110111  # 8 bits: unchanged


def test_invert_and_autocontrast():
    x = torch.tensor([50, 75, 100], dtype=torch.uint8).view(1, 1, 1, 3).expand(1, 3, 32, 3)
    assert torch.equal(P.apply_op(x, 'Invert', torch.zeros(1)), 255 - x)
    # Each channel stretched: (v − 50)·255/50, truncated. 100 gives 254, not 255: torchvision divides by the float32
    # 50/255, which makes it 254.99998 (PIL would give 255); 75 gives 127.5, truncated.
    assert P.apply_op(x, 'AutoContrast', torch.zeros(1))[0, 0, 0].tolist() == [0, 127, 254]


def test_translate_moves_by_whole_pixels_and_fills_zeros():
    x = _images(2, seed=3)
    right = P.apply_op(x, 'TranslateX', torch.tensor([5.9, 5.9]))  # torchvision takes int(m): 5 pixels
    assert torch.equal(right[..., 5:], x[..., :-5]) and (right[..., :5] == 0).all()
    up = P.apply_op(x, 'TranslateY', torch.tensor([-3., -3.]))
    assert torch.equal(up[..., :-3, :], x[..., 3:, :]) and (up[..., -3:, :] == 0).all()


def test_rotate_by_90_turns_the_image_counterclockwise():
    x = _images(2, seed=4)
    out = P.apply_op(x, 'Rotate', torch.tensor([90., -90.]))
    assert torch.equal(out[0], torch.rot90(x[0], 1, dims=(-2, -1)))
    assert torch.equal(out[1], torch.rot90(x[1], -1, dims=(-2, -1)))


def test_shear_x_slides_each_row_by_its_distance_from_the_top():
    "ShearX m about the top-left corner: output (row y, column c) reads input column c + m·y, nearest."
    x = _images(1, seed=5)
    out = P.apply_op(x, 'ShearX', torch.tensor([0.25]))
    for y in (0, 4, 8, 28):
        shift = y // 4  # row centres sit at y + 0.5: 0.25·(y + 0.5) rounds to y/4 for these rows
        assert torch.equal(out[0, :, y, :32 - shift], x[0, :, y, shift:]), y


# ---- the draws -------------------------------------------------------------------------------------------------------

def test_trivial_augment_draws_ops_bins_and_signs_uniformly():
    n = 14_000
    ops, mags = P.draw_policy('trivial', n, torch.Generator().manual_seed(0))
    counts = torch.bincount(ops[:, 0], minlength=len(P.OPS)).float()
    assert counts[P.OP['Invert']] == 0
    counts = counts[:14]
    chi2 = ((counts - n / 14) ** 2 / (n / 14)).sum()
    assert chi2 < 34.5, counts  # 13 degrees of freedom: 34.5 is the 0.1% critical value
    rot = mags[ops[:, 0] == P.OP['Rotate'], 0]
    assert 0.45 < (rot < 0).float().mean() < 0.55  # signed: half negative
    assert len(rot.abs().unique()) == 31 and rot.abs().max() == 135  # every bin drawn, up to the widest


def test_autoaugment_runs_each_step_with_its_probability():
    n = 25_000
    ops, _ = P.draw_policy('auto', n, torch.Generator().manual_seed(0))
    probs = torch.tensor([[p for _, p, _ in sub] for sub in P.CIFAR10_POLICY])
    ran = (ops != P.OP['Identity']).float().mean(0)
    assert torch.allclose(ran, probs.mean(0), atol=0.01)  # sub-policies uniform, each step kept with its p (±3σ)
    # AutoContrast leads sub-policies 4, 18 and 22 with p = 0.5, 0.8, 0.9: (0.5 + 0.8 + 0.9) / 25 = 0.088 of images.
    assert (ops[:, 0] == P.OP['AutoContrast']).float().mean() == pytest.approx(0.088, abs=0.006)


def test_a_seed_gives_the_same_draws():
    a, b, c = (P.draw_policy('auto', 100, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[0], c[0])


# ---- in the fast engine ---------------------------------------------------------------------------------------------

def _loader(policy, seed, **aug):
    ds = CifarTensors(_images(64, seed=9), torch.arange(64) % 10, [str(i) for i in range(10)])
    dl = FastDL(ds, bs=32, shuffle=True, aug=Augment(policy=policy, **aug), device='cpu')
    dl.rng.seed(seed)
    return torch.cat([b[0] for b in dl])


@pytest.mark.parametrize('policy', P.POLICIES)
def test_fast_engine_batches_are_reproducible_for_a_seed(policy):
    a, b, c, plain = _loader(policy, 0), _loader(policy, 0), _loader(policy, 1), _loader(None, 0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a != plain).flatten(1).any(1).float().mean() > 0.5  # the policy changed most images


def test_a_policy_leaves_the_other_draws_of_a_seed_as_they_were():
    "Crop and flip draws come first: images whose policy op is a no-op (Identity, ~1/14) match the run without it."
    with_policy, without = _loader('trivial', 0, translate=2, cutout=8), _loader(None, 0, translate=2, cutout=8)
    same = (with_policy == without).flatten(1).all(1).float().mean()
    assert 0.02 < same < 0.3


def test_datablock_engine_keeps_torchvisions_per_image_policy(synthetic):
    from cifar_fast.data.datablock import TorchvisionAugment
    from cifar_fast.data.loaders import cifar_dls
    dls = cifar_dls(synthetic, engine='datablock', bs=8, device='cpu', policy='auto', seed=0)
    tfms = [t for t in dls.train.after_item.fs if isinstance(t, TorchvisionAugment)]
    assert [t.policy for t in tfms] == ['auto'] and isinstance(tfms[0].tfm, T.AutoAugment)
    assert dls.train.one_batch()[0].shape == (8, 3, 32, 32)

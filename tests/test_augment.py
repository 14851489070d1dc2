"""The pure batch maths behind the fast engine, checked against straightforward references."""
import pytest
import torch
import torch.nn.functional as F

from cifar_fast.data import augment as A


@pytest.fixture
def x():
    return torch.randint(0, 256, (16, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.mark.parametrize('pad_mode,torch_mode', [('reflect', 'reflect'), ('zeros', 'constant')])
def test_translate_equals_pad_then_crop(x, pad_mode, torch_mode):
    r = 4
    shifts = A.draw_shifts(len(x), r, torch.Generator().manual_seed(1))
    out = A.translate(x, shifts, pad_mode)
    padded = F.pad(x.float(), (r, r, r, r), mode=torch_mode)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        ref = padded[i, :, r + dy:r + dy + 32, r + dx:r + dx + 32]
        assert torch.equal(out[i].float(), ref)
    assert out.dtype == torch.uint8


def test_shifts_cover_the_range():
    s = A.draw_shifts(10_000, 2, torch.Generator().manual_seed(0))
    assert s.min() == -2 and s.max() == 2


def test_flip_only_masked(x):
    mask = torch.tensor([True, False] * 8)
    out = A.flip(x, mask)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


def test_alternating_flip_flips_each_image_on_alternate_epochs():
    base = A.draw_flips(1000, torch.Generator().manual_seed(0))
    masks = torch.stack([A.alternating_flip_mask(base, e) for e in range(6)])
    assert torch.equal(masks[0], base)
    assert (masks[1:] != masks[:-1]).all()  # every image changes state every epoch
    assert (masks.sum(0) == 3).all()  # flipped in exactly half of the epochs
    assert 0.4 < base.float().mean() < 0.6


def test_cutout_zeroes_exactly_the_clipped_square():
    x = torch.ones(2, 3, 32, 32)
    out = A.cutout(x, torch.tensor([[10, 10], [0, 31]]), size=8)
    assert (out[0, :, 6:14, 6:14] == 0).all() and out[0].sum() == 3 * (32 * 32 - 64)
    assert (out[1, :, 0:4, 27:32] == 0).all() and out[1].sum() == 3 * (32 * 32 - 4 * 5)


def test_normalize_matches_fastai_pipeline(x):
    from fastai.data.transforms import IntToFloatTensor, Normalize
    from fastai.torch_core import TensorImage
    ref = Normalize.from_stats(A.CIFAR_MEAN, A.CIFAR_STD, cuda=False)(IntToFloatTensor()(TensorImage(x)))
    assert torch.equal(A.normalize(x), ref.as_subclass(torch.Tensor))
    assert torch.allclose(A.denormalize(A.normalize(x)) * 255, x.float(), atol=1e-3)
    assert A.normalize(x, dtype=torch.bfloat16).dtype == torch.bfloat16

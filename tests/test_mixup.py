"""MixUpCutMix: it picks MixUp with probability `p`, else CutMix, and the loss it trains on weights each image's two
labels by how much of each image the model was shown. Every expectation is read back from the mixed pixels, not
from the callback's own state: each test image carries its identity in its pixels."""
import math

import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import CutMix, MixUp
from fastai.callback.progress import ProgressCallback  # noqa: F401  (adds Learner.no_bar)
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from torch import nn

from cifar_fast.callback.mixup import MixUpCutMix, mix_callbacks
from cifar_fast.callback.restore import SwapsState

N, H, W = 16, 8, 8  # N images, each its own class; 64 pixels, so channel 0 can hold a one-hot of the image's index


def tagged_images(n: int = N) -> torch.Tensor:
    """Image k: channel 0 is one-hot at pixel k (MixUp turns it into λ at k and 1−λ at the partner's pixel);
    channel 1 is the constant (k+1)/n (CutMix pastes the partner's value over the box)."""
    x = torch.zeros(n, 3, H, W)
    x[:, 0].view(n, -1)[torch.arange(n), torch.arange(n)] = 1.
    x[:, 1] = (torch.arange(n, dtype=torch.float32) + 1).div(n).view(n, 1, 1)
    return x


def read_mix(xm: torch.Tensor, y: torch.Tensor, n: int = N) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(kind, λ, partner label) for each image of a mixed batch, from its pixels alone; λ is the share of the image
    that is its own (the weight its own label should get). A CutMix batch keeps channel 1 on the grid {k/n}."""
    c1 = xm[:, 1].reshape(len(xm), -1)
    on_grid = torch.allclose(c1 * n, (c1 * n).round(), atol=1e-4)
    if on_grid:  # CutMix: own value where the image was kept, the partner's inside the box
        own = ((y + 1).float() / n).view(-1, 1)
        kept = (c1 - own).abs() < 0.5 / n
        lam = kept.float().mean(1)
        other = torch.where(kept, torch.full_like(c1, -1.), c1).amax(1)  # the pasted value (-1: nothing pasted)
        partner = torch.where(other > 0, (other * n).round().long() - 1, y)
        return 'cutmix', lam, partner
    c0 = xm[:, 0].reshape(len(xm), -1)
    lam = c0[torch.arange(len(xm)), y]  # own pixel: λ·1 + (1−λ)·0, or 1 when the partner is the image itself
    rest = c0.clone(); rest[torch.arange(len(xm)), y] = -1.
    partner = torch.where(lam < 1, rest.argmax(1), y)
    return 'mixup', lam, partner


def cross_entropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    "Per-row −log softmax(pred)[target], written out."
    return pred.logsumexp(1) - pred[torch.arange(len(pred)), target]


class Spy(Callback):
    "Records what the model saw and the loss it was trained on."
    order = MixUpCutMix.order + 1  # after the mixing
    def before_fit(self): self.seen = []
    def after_loss(self):
        if self.training:
            self.seen.append((self.xb[0].detach().clone(), self.yb[0].clone(), self.pred.detach().clone(),
                              self.learn.loss.detach().clone()))


def tiny_learner(cb, bs: int = 8, n_batches: int = 6) -> Learner:
    x = tagged_images().repeat(n_batches * bs // N, 1, 1, 1)
    y = torch.arange(N).repeat(n_batches * bs // N)
    ds = list(zip(x, y))
    dls = DataLoaders(DataLoader(ds, bs=bs, shuffle=True), DataLoader(ds[:bs], bs=bs))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * H * W, N))
    return Learner(dls, model, loss_func=CrossEntropyLossFlat(), cbs=[cb, Spy()])


def mix_once(cb: MixUpCutMix, learn: Learner, bs: int = 8) -> tuple[str, torch.Tensor, torch.Tensor]:
    "One call of the callback's before_batch on a fresh batch, read back from the pixels."
    if not hasattr(cb, 'stack_y'): cb.before_train()  # as fit would: integer targets, so the loss is mixed, not y
    y = torch.randperm(N)[:bs]
    learn.xb, learn.yb = (tagged_images()[y].clone(),), (y,)
    cb.before_batch()
    return read_mix(learn.xb[0], y)


def test_read_mix_recovers_known_mixes():
    "The decoder the other tests rely on, on batches mixed by hand with known λ and partners."
    x, y = tagged_images()[:4], torch.arange(4)
    lam, perm = torch.tensor([0.9, 0.6, 0.75, 0.5]), torch.tensor([1, 0, 2, 3])  # image 2 and 3 mix with themselves
    xm = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm]
    kind, got, partner = read_mix(xm, y)
    assert kind == 'mixup' and torch.equal(partner, perm)
    assert torch.allclose(got, torch.tensor([0.9, 0.6, 1., 1.]))  # an image mixed with itself is all its own
    xc = x.clone(); xc[..., 2:6, 0:4] = x[perm][..., 2:6, 0:4]  # a 4×4 box: 16 of 64 pixels pasted
    kind, got, partner = read_mix(xc, y)
    assert kind == 'cutmix' and torch.equal(partner, perm)
    assert torch.allclose(got, torch.tensor([0.75, 0.75, 1., 1.]))


@pytest.mark.parametrize('p', [0.0, 0.3, 1.0])
def test_switches_between_mixup_and_cutmix_with_probability_p(p):
    torch.manual_seed(0)
    cb = MixUpCutMix(mixup=0.4, cutmix=1.0, p=p)
    learn = tiny_learner(cb)
    n = 600
    kinds = [mix_once(cb, learn)[0] for _ in range(n)]
    k = kinds.count('mixup')
    # Binomial(n, p): within 4 standard deviations (a fair draw falls outside with probability < 1e-4); p = 0 and
    # p = 1 give only one kind.
    assert abs(k - n * p) <= 4 * math.sqrt(n * p * (1 - p)), f'{k} MixUp batches of {n} at p={p}'
    if p == 0: assert k == 0
    if p == 1: assert k == n


def test_mixup_lambda_and_cutmix_box_follow_the_papers():
    """MixUp (Zhang et al. 2018): per-image λ ~ Beta(α, α), taken as max(λ, 1−λ) by fastai, so λ ∈ [0.5, 1].
    CutMix (Yun et al. 2019, eq. 2 and sec. 3.1): one box per batch, λ = 1 − box area / image area."""
    torch.manual_seed(1)
    cb = MixUpCutMix(p=0.5)
    learn = tiny_learner(cb)
    seen = {'mixup': 0, 'cutmix': 0}
    for _ in range(200):
        kind, lam, partner = mix_once(cb, learn)
        seen[kind] += 1
        moved = partner != learn.yb[0]
        if kind == 'mixup':
            assert ((lam >= 0.5 - 1e-6) & (lam <= 1 + 1e-6)).all()
        elif moved.any():  # the same rectangle pasted into every image that has another partner
            c1, y = learn.xb[0][moved, 1], learn.yb[0][moved]
            pasted = (c1 - ((y + 1).float() / N).view(-1, 1, 1)).abs() > 0.5 / N
            assert (pasted == pasted[0]).all()
            rows, cols = pasted[0].any(1).sum(), pasted[0].any(0).sum()
            assert pasted[0].sum() == rows * cols and torch.allclose(lam[moved], 1 - rows * cols / (H * W))
    assert min(seen.values()) > 50, seen


@pytest.mark.parametrize('p,kinds', [(1.0, {'mixup'}), (0.0, {'cutmix'}), (0.5, {'mixup', 'cutmix'})],
                         ids=['mixup', 'cutmix', 'switch'])
def test_loss_weights_each_label_by_its_share_of_the_image(p, kinds):
    """loss = mean over images of λ·CE(pred, y) + (1−λ)·CE(pred, y_partner), with λ and the partner read from the
    pixels the model saw and the cross-entropy written out here."""
    torch.manual_seed(2)
    cb = MixUpCutMix(mixup=0.4, cutmix=1.0, p=p)
    learn = tiny_learner(cb)
    spy = learn.cbs.filter(lambda c: isinstance(c, Spy))[0]
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 0.1)
    seen, mixed = set(), 0
    for xm, y, pred, loss in spy.seen:
        kind, lam, partner = read_mix(xm, y)
        seen.add(kind)
        expected = (lam * cross_entropy(pred, y) + (1 - lam) * cross_entropy(pred, partner)).mean()
        assert float(loss) == pytest.approx(float(expected), rel=1e-5, abs=1e-6), kind
        plain = cross_entropy(pred, y).mean()
        mixed += not math.isclose(float(loss), float(plain), rel_tol=1e-4)
    assert len(spy.seen) == 12 and mixed >= 6  # the mixed loss is not the plain one
    assert seen == kinds
    assert type(learn.loss_func) is CrossEntropyLossFlat  # restored after fit


def test_validation_batches_are_not_mixed():
    torch.manual_seed(3)
    learn = tiny_learner(MixUpCutMix(p=0.5))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.1)
    xb, yb = learn.dls.valid.one_batch()
    expected = cross_entropy(learn.model(xb).detach(), yb).mean()
    assert float(learn.validate()[0]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize('mixup,cutmix,expected', [(0.4, 0., [MixUp]), (0., 1., [CutMix]), (0.4, 1., [MixUpCutMix]),
                                                   (0., 0., [])])
def test_mix_callbacks_picks_fastais_callback_when_one_is_on(mixup, cutmix, expected):
    cbs = mix_callbacks(mixup, cutmix, p=0.3)
    # fastai's own MixUp/CutMix, each with the restore of callback.restore (SwapsState) added
    assert len(cbs) == len(expected)
    assert all(isinstance(c, t) and isinstance(c, SwapsState) for c, t in zip(cbs, expected))
    if expected == [MixUpCutMix]: assert cbs[0].p == 0.3

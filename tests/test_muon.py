"""Muon for conv filters (speed.muon): MuonSGD steps exactly as torch.optim.Muon on the flattened filters and torch's
SGD on the rest, keeps its state across a checkpoint, and trains and resumes through the Learner."""
import io

import pytest
import torch
from torch import nn

from cifar_fast.errors import ConfigError
from cifar_fast.optim import BIAS_GROUP, MUON_GROUP, REST_GROUP, MuonSGD, muon_splitter, normalize_filters_
from cifar_fast.recipe import DataConfig, Recipe, SpeedConfig
from helpers import assert_resume_matches


def net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3, bias=False),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))


def grads(model, seed: int):
    "Fill every gradient from a fixed seed (the same 'batch' for two optimisers under test)."
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters(): p.grad = torch.randn(p.shape, generator=g)


def test_normalize_filters_sets_the_norm_to_root_out_channels():
    w = torch.randn(16, 4, 3, 3) * 7
    normalize_filters_(w)
    assert w.norm().item() == pytest.approx(4.0, rel=1e-5)


def test_splitter_groups_biases_filters_rest():
    m = net()
    groups = muon_splitter(m)
    assert [len(g) for g in groups] == [1, 2, 3]  # BN bias | two conv filters | BN weight, head weight and bias
    assert all(p.ndim == 4 for p in groups[MUON_GROUP]) and groups[BIAS_GROUP][0] is m[1].bias
    with pytest.raises(ConfigError, match='no 4-D conv'): muon_splitter(nn.Linear(3, 2))


@pytest.mark.parametrize('channels_last', [False, True])
def test_steps_match_torch_muon_on_flattened_filters_and_sgd_on_the_rest(channels_last):
    m, ref = net(), net()
    if channels_last: m = m.to(memory_format=torch.channels_last)
    opt = MuonSGD(muon_splitter(m), lr=0.1, momentum=0.85, weight_decay=1e-3, muon_momentum=0.6, muon_ns_steps=3)
    opt.param_groups[MUON_GROUP]['lr'] = 0.24  # what fastai's scheduler does: set it on the group dict
    # the reference: torch's Muon on 2-D copies of the filters (normalised first, as airbench), torch's SGD on the rest
    groups = muon_splitter(ref)
    flat = [nn.Parameter(p.detach().reshape(len(p), -1).clone()) for p in groups[MUON_GROUP]]
    muon = torch.optim.Muon(flat, lr=0.24, momentum=0.6, nesterov=True, weight_decay=0., ns_steps=3)
    sgd = torch.optim.SGD(groups[BIAS_GROUP] + groups[REST_GROUP], lr=0.1, momentum=0.85, nesterov=True,
                          weight_decay=1e-3)
    for step in range(3):
        grads(m, step); grads(ref, step)
        opt.step()
        for f, p in zip(flat, groups[MUON_GROUP]):
            f.grad = p.grad.reshape(len(p), -1)
            with torch.no_grad(): f.mul_(len(f) ** 0.5 / f.norm())
        muon.step(); sgd.step()
        with torch.no_grad():
            for f, p in zip(flat, groups[MUON_GROUP]): p.copy_(f.view(p.shape))
    for a, b in zip(m.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6), 'MuonSGD drifted from torch.optim.Muon/SGD'
    assert m[0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last  # layout kept
    assert not torch.equal(m[0].weight, net()[0].weight)  # and the filters did move


def test_state_dict_round_trip_continues_identically():
    a, b = net(), net()
    opt_a = MuonSGD(muon_splitter(a), lr=0.1)
    grads(a, 0); opt_a.step()
    b.load_state_dict(a.state_dict())
    opt_b = MuonSGD(muon_splitter(b), lr=0.1)
    buf = io.BytesIO(); torch.save(opt_a.state_dict(), buf); buf.seek(0)  # as a checkpoint does: no shared tensors
    opt_b.load_state_dict(torch.load(buf, weights_only=True))  # momentum buffers of both optimisers carried over
    assert opt_b.param_groups[REST_GROUP] is opt_b.sgd.param_groups[-1]  # fastai's hyperparameters still reach SGD
    grads(a, 1); grads(b, 1); opt_a.step(); opt_b.step()
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    sgd_state = torch.optim.SGD(b.parameters(), lr=.1).state_dict()
    with pytest.raises(ConfigError, match='speed.muon off'): opt_b.load_state_dict(sgd_state)


def test_zero_grad_clears_filters_too():
    m = net()
    opt = MuonSGD(muon_splitter(m), lr=0.1)
    grads(m, 0); opt.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_recipe_needs_sgd_for_the_rest():
    with pytest.raises(ConfigError, match="opt='sgd'"): Recipe(opt='adam', speed=SpeedConfig(muon=True))


@pytest.fixture
def muon_recipe(synthetic):
    return Recipe(name='m', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=3, lr=0.02, seed=0,
                  data=DataConfig(source=str(synthetic), batch_size=32),
                  speed=SpeedConfig(muon=True, muon_lr=0.05, bias_lr_scale=4, whiten=True, whiten_bias_epochs=1))


def test_muon_recipe_trains_with_per_group_hypers_and_resumes_exactly(muon_recipe, tmp_path):
    full = assert_resume_matches(muon_recipe, tmp_path, epoch=1, it=1)  # Muon's momentum buffers come back too
    hy = full.learn.opt.hypers
    assert hy[MUON_GROUP]['lr'] / hy[REST_GROUP]['lr'] == pytest.approx(0.05 / 0.02)
    assert hy[BIAS_GROUP]['lr'] / hy[REST_GROUP]['lr'] == pytest.approx(4)
    assert hy[MUON_GROUP]['mom'] == 0.6 and hy[REST_GROUP]['mom'] > 0.94  # one_cycle moves SGD's only
    assert hy[MUON_GROUP]['wd'] == 0 and full.summary['test_accuracy'] is not None

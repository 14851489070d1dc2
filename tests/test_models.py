"""The model zoo: every registered model builds, counts what it declares, trains a step, and survives fastai/timm."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from cifar_fast.errors import ConfigError
from cifar_fast.models import (TIMM_PREFIX, create_model, list_models, model_info, models_table, register_model,
                               validate_model)
from cifar_fast.models import registry, timm_adapter
from cifar_fast.models.timm_adapter import add_to_timm
from cifar_fast.models.fastnet import FastNet, dirac_init_, whitening_weights
from cifar_fast.models.registry import count_macs, count_params
from cifar_fast.models.resnet import BasicBlock, CifarResNet
from cifar_fast.models.wide_resnet import PreActBlock, wide_resnet

ALL = list_models()
# The parameter counts these networks are quoted with (in millions, two decimals) and the options they were quoted
# for; each entrypoint's exact count and its source are declared where it is registered.
QUOTED_PARAMS = {
    'resnet20': (0.27, {}), 'resnet32': (0.46, {}), 'resnet44': (0.66, {}), 'resnet56': (0.85, {}),
    'resnet110': (1.73, {}), 'resnet18_5m': (4.91, {}), 'resnet18': (11.17, {}), 'resnet9': (6.57, {}),
    'wrn28_3_5': (4.48, {}), 'wrn16_8': (10.96, {}), 'wrn40_4': (8.95, {}), 'wrn28_10': (36.48, {}),
    'vgg16': (14.73, dict(head='linear')),
}
# Small, fast nets covering every family, for the tests that train.
SMALL = ['resnet20', 'resnet18_5m', 'resnet9', 'wrn16_4', 'vgg11', 'fastnet_cpu']
# The options each entrypoint named in its signature before entrypoints passed **kwargs on to family builders, plus
# FastNet's whiten_kernel, which its builder adds; a change here changes what recipes may set.
FASTNET_OPTIONS = ('widths', 'whiten_kernel', 'whiten_width', 'scale', 'bn_momentum', 'bn_eps', 'train_bn_scale',
                   'dirac')
OPTIONS = {'resnet': ('shortcut', 'zero_init_residual', 'init'), 'resnet18': ('dropout', 'zero_init_residual', 'init'),
           'resnet9': ('scale', 'zero_init_residual', 'init'), 'wrn': ('dropout', 'zero_init_residual', 'init'),
           'vgg': ('head', 'hidden', 'dropout', 'init'), 'fastnet': FASTNET_OPTIONS}
# A valid non-default value for every option above, to show each one reaches a builder that takes it.
SAMPLE = dict(shortcut='B', zero_init_residual=True, init='default', dropout=0.1, scale=1., head='linear', hidden=64,
              widths=(8, 16, 32), whiten_kernel=3, whiten_width=16, bn_momentum=0.1, bn_eps=1e-5, train_bn_scale=True,
              dirac=False)


@functools.lru_cache(maxsize=None)
def built(name: str) -> nn.Module:
    "Each registered model built once (seed 0) for the whole file; the big ones take a while."
    return create_model(name, seed=0)


def options_of(name: str) -> tuple[str, ...]:
    "The expected options of `name`, by the OPTIONS key its name starts with (the longest that matches)."
    return OPTIONS[max((k for k in OPTIONS if name.startswith(k)), key=len)]


def forget(name: str) -> None:
    "Remove `name` from our registry and TIMM_PREFIX + name from timm's, which has no API for it."
    from timm.models import _registry as timm_registry
    registry._models.pop(name, None)
    registry._measure.cache_clear()
    timm_name = TIMM_PREFIX + name
    fn = timm_registry._model_entrypoints.pop(timm_name, None)
    if fn is None: return
    timm_registry._module_to_models[timm_registry._model_to_module.pop(timm_name)].discard(timm_name)
    names = getattr(sys.modules[fn.__module__], '__all__', [])  # timm.models.register_model appended it there
    if timm_name in names: names.remove(timm_name)


@contextlib.contextmanager
def registered(name: str, fn, **decl):
    "Register `fn` as `name` for the length of a with-block, then remove it from both registries."
    try:
        yield register_model(name, **{**dict(family='test', params=0, source='this test'), **decl})(fn)
    finally:
        forget(name)


def batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    "A fixed batch of `n` normal 32×32 images with labels 0..n-1."
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 10


# ---- every registered model ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ALL)
def test_declared_params_equal_measured(name):
    assert count_params(built(name)) == registry._models[name].params


@pytest.mark.parametrize('name', sorted(QUOTED_PARAMS))
def test_params_match_quoted(name):
    millions, kw = QUOTED_PARAMS[name]
    n = count_params(create_model(name, **kw) if kw else built(name))
    # 0.5%, or the quoted figure's own rounding (±0.005M at two decimals), whichever is looser: He et al.'s 0.46M
    # for ResNet-32 is 464,154 rounded, 0.9% off the rounded figure.
    assert abs(n / 1e6 - millions) <= max(0.005 * millions, 0.005), f'{name}: {n:,} vs {millions}M'


@pytest.mark.parametrize('name', ALL)
def test_forward_backward(name):
    model, (x, y) = built(name).train(), batch(2)
    try:
        out = model(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        F.cross_entropy(out, y).backward()
        for pname, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and torch.isfinite(p.grad).all(), f'{name}.{pname} got no gradient'
            else:  # only airbench's BN scales are frozen by design (train_bn_scale=False)
                assert isinstance(model, FastNet) and pname.endswith(('norm1.weight', 'norm2.weight')), pname
    finally:
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize('name', ALL)
def test_channels_last_matches_contiguous(name):
    model, (x, _) = built(name).eval(), batch(2, seed=1)
    with torch.no_grad():
        ref = model(x)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        out = cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-4 * max(1., ref.abs().max().item()))


@pytest.mark.parametrize('name', ALL)
def test_seeded_construction_is_repeatable_and_private(name):
    state = torch.get_rng_state()
    again = create_model(name, seed=0)
    assert torch.equal(state, torch.get_rng_state()), 'a seeded build must not advance the global RNG'
    for (k, a), b in zip(again.named_parameters(), built(name).parameters()):
        assert torch.equal(a, b), k
    other = create_model(name, seed=1)
    assert any(not torch.equal(a, b) for a, b in zip(other.parameters(), again.parameters()))


@pytest.mark.parametrize('name', ALL)
def test_options_and_unknown_kwarg(name, monkeypatch):
    entry = registry._models[name]
    assert entry.options == options_of(name)
    validate_model(name, {opt: SAMPLE[opt] for opt in entry.options})

    def must_not_build(**kwargs): raise AssertionError('create_model built the model before checking its options')
    monkeypatch.setitem(registry._models, name, dataclasses.replace(entry, fn=must_not_build))
    with pytest.raises(ConfigError, match=rf"{name}'.*no option 'dropuot'.*accepts: num_classes, seed, "):
        create_model(name, dropuot=0.1)
    # The arguments an entrypoint fixes (a depth, a widening factor) are not options either.
    for fixed in ('depth', 'k', 'layers', 'stem', 'n'):
        with pytest.raises(ConfigError, match=f"no option '{fixed}'"): create_model(name, **{fixed: 1})


@pytest.mark.parametrize('name', SMALL)
def test_one_sgd_step_lowers_loss(name):
    kw = dict(dropout=0.) if name == 'vgg11' else {}  # dropout would make the two losses incomparable
    model, (x, y) = create_model(name, seed=0, **kw).train(), batch(8)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    with torch.no_grad(): after = F.cross_entropy(model(x), y)
    assert after < loss.item(), f'{name}: {loss.item():.4f} -> {after.item():.4f}'


# ---- registry: errors, info, table ---------------------------------------------------------------------------------

def test_unknown_name_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"'resnet21'.*Did you mean: .*resnet20"): create_model('resnet21')


def test_unknown_kwarg_names_it_and_lists_accepted():
    with pytest.raises(ConfigError, match=r"'zero_init'.*zero_init_residual.*accepts: num_classes, seed, shortcut"):
        create_model('resnet20', zero_init=True)
    with pytest.raises(ConfigError, match=r"'wrn28_3_5' has no option 'dropuot'.*Did you mean: dropout"):
        create_model('wrn28_3_5', dropuot=0.3)


def test_validate_model():
    state = torch.get_rng_state()
    validate_model('wrn28_10', dict(dropout=0.3, num_classes=100, seed=1))  # 36M params, on the meta device
    validate_model('timm/resnet18', {})
    assert torch.equal(state, torch.get_rng_state()), 'validating must not draw from the global RNG'
    for name, kw, match in [('resnet21', {}, "Unknown model 'resnet21'.*Did you mean: .*resnet20"),
                            ('timm/resnet181', {}, "Unknown timm model 'resnet181'"),
                            ('tim/resnet18', {}, "namespace 'tim'"),
                            ('vgg11', dict(heads='linear'), "'vgg11' has no option 'heads'.*Did you mean: head"),
                            ('vgg11', dict(head='conv'), "head must be 'mlp' or 'linear'"),
                            ('resnet20', dict(num_classes=0), 'num_classes must be a positive int'),
                            ('fastnet_cpu', dict(widths=3), "'fastnet_cpu' cannot be built with .*widths"),
                            ('timm/resnet18', dict(foo=1), "rejected the options \\['foo'\\]")]:
        with pytest.raises(ConfigError, match=match): validate_model(name, kw)


def test_bad_values_raise_config_error():
    for bad in (dict(init='xavier'), dict(shortcut='C'), dict(num_classes=0)):
        with pytest.raises(ConfigError): create_model('resnet20', **bad)
    with pytest.raises(ConfigError, match='6n\\+4'): wide_resnet(27, 2)
    with pytest.raises(ConfigError, match='head'): create_model('vgg11', head='conv')
    with pytest.raises(ConfigError, match='widths'): create_model('fastnet_cpu', widths=(32, 64))
    with pytest.raises(ConfigError, match="namespace 'tim'"): create_model('tim/resnet18')


def test_duplicate_registration_raises():
    with pytest.raises(ConfigError, match="'resnet20' is already registered"):
        register_model('resnet20', family='x', params=0, source='test')(lambda num_classes=10: nn.Linear(1, 1))
    with pytest.raises(ConfigError, match='lowercase'):
        register_model('timm/Tiny', family='x', params=0, source='test')(lambda num_classes=10: nn.Linear(1, 1))
    assert 'timm/Tiny' not in list_models()


def test_register_a_new_model_end_to_end():
    def tiny_linear(num_classes: int = 10, bias: bool = True) -> nn.Module:
        "One linear layer on the flattened image."
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes, bias=bias))
    with registered('tiny_linear', tiny_linear, params=3 * 32 * 32 * 10 + 10):
        assert 'tiny_linear' in list_models('tiny_*')
        assert create_model('tiny_linear', num_classes=3)(batch(2)[0]).shape == (2, 3)
        info = model_info('tiny_linear')
        assert info['params'] == info['declared_params'] and info['macs'] == 3 * 32 * 32 * 10
        assert info['description'] == 'One linear layer on the flattened image.'
        with pytest.raises(ConfigError, match="'bais'.*Did you mean: bias"): create_model('tiny_linear', bais=False)
    assert 'tiny_linear' not in list_models() and not timm.is_model(TIMM_PREFIX + 'tiny_linear')


def test_register_with_a_builder_checks_its_options():
    def tiny_builder(width: int, num_classes: int = 10, bias: bool = True) -> nn.Module:
        return nn.Linear(width, num_classes, bias=bias)

    def tiny_wide(num_classes: int = 10, **kwargs) -> nn.Module: return tiny_builder(8, num_classes, **kwargs)
    with pytest.raises(ConfigError, match=r"'tiny_wide'.*\*\*kwargs.*builder="):
        register_model('tiny_wide', family='test', params=0, source='this test')(tiny_wide)
    assert 'tiny_wide' not in list_models() and not timm.is_model(TIMM_PREFIX + 'tiny_wide')
    with registered('tiny_wide', tiny_wide, builder=tiny_builder):
        assert registry._models['tiny_wide'].options == ('bias',)  # width has no default: the entrypoint fixes it
        assert create_model('tiny_wide', bias=False).bias is None
        with pytest.raises(ConfigError, match="no option 'width'"): create_model('tiny_wide', width=3)


def test_count_macs_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=4),
                        nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    assert count_macs(net) == 32 * 32 * 8 * 27 + 32 * 32 * 8 * 2 * 9 + 8 * 32 * 32 * 10
    assert net.training, 'count_macs must restore the training mode'


def test_model_info_and_table():
    info = model_info('resnet20')
    assert info['family'] == 'resnet' and info['params'] == info['declared_params'] == 269_722
    # By hand: stem 32²·16·27; stage 1 six convs of 32²·16·144; stages 2 and 3 each 2.36M·5 + 1.18M for the strided
    # first conv (a quarter of the positions, twice the channels in); FC 64·10.
    assert info['macs'] == 32 * 32 * 16 * 27 + 6 * 32 * 32 * 16 * 144 + 2 * (5 * 2_359_296 + 1_179_648) + 640
    rows = {r['name']: r for r in models_table()}
    assert sorted(rows) == ALL
    assert rows['resnet18_5m']['fits_5m'] and not rows['resnet18']['fits_5m']
    assert all(r['fits_5m'] == (r['params'] <= 5_000_000) and r['macs'] > 0 for r in rows.values())
    assert set(rows['vgg16']) == {'name', 'family', 'params', 'macs', 'source', 'fits_5m'}


# ---- family details ------------------------------------------------------------------------------------------------

def test_resnet_options():
    assert count_params(create_model('resnet20', shortcut='B')) == 272_474  # two 1×1 conv-BN projections
    z = create_model('resnet20', zero_init_residual=True)
    assert all((b.conv2.bn.weight == 0).all() for b in z.modules() if isinstance(b, BasicBlock))
    x = torch.randn(2, 16, 8, 8)
    block = z.stages[0][0].eval()
    torch.testing.assert_close(block(x), x.relu())  # a zero-init block with an identity shortcut is just ReLU
    a, b = create_model('resnet20', seed=0), create_model('resnet20', seed=0, init='default')
    assert not torch.equal(a.stem[0].conv.weight, b.stem[0].conv.weight)
    r9 = create_model('resnet9', scale=1., zero_init_residual=True)
    assert r9.scale == 1. and (r9.layer1[2].unit2.conv.bn.weight == 0).all()
    assert isinstance(built('resnet56'), CifarResNet)


def test_wide_resnet_options():
    m = create_model('wrn16_4', dropout=0.3, zero_init_residual=True)
    assert any(isinstance(d, nn.Dropout) and d.p == 0.3 for d in m.modules())
    assert all((b.conv2.weight == 0).all() for b in m.modules() if isinstance(b, PreActBlock))
    assert m.stages[0][0].conv1.out_channels == 64 and wide_resnet(28, 3.5).stages[2][0].conv1.out_channels == 224


def test_whitening_weights_whiten_patches():
    g = torch.Generator().manual_seed(0)
    # Correlated channels and neighbouring pixels, like natural images.
    x = F.avg_pool2d(torch.randn(64, 3, 18, 18, generator=g), 3, 1)
    x = torch.einsum('ij,njhw->nihw', torch.tensor([[1., .5, .2], [.3, 1., .4], [.1, .6, 1.]]), x)
    w = whitening_weights(x, eps=1e-8)
    assert w.shape == (24, 3, 2, 2) and torch.equal(w[12:], -w[:12])
    out = F.conv2d(x, w[:12]).permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(out.T @ out / len(out), torch.eye(12), atol=1e-3, rtol=0)
    patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 2, 2)
    torch.testing.assert_close(whitening_weights(patches, eps=1e-8).abs(), w.abs(), atol=1e-3, rtol=1e-3)
    norms = w[:12].flatten(1).norm(dim=1)
    assert (norms[1:] >= norms[:-1] - 1e-4).all(), 'largest-variance direction first, so the smallest filter first'


def test_dirac_init_and_fastnet_whitening():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    before = conv.weight[4:].clone()
    x = torch.randn(2, 4, 8, 8)
    out = dirac_init_(conv)(x)
    torch.testing.assert_close(out[:, :4], x)
    assert torch.equal(conv.weight[4:], before)
    net = create_model('fastnet_cpu')
    images = torch.randn(16, 3, 32, 32)
    net.init_whitening(images, eps=5e-4)
    torch.testing.assert_close(net.whiten.weight, whitening_weights(images, eps=5e-4))
    narrow = create_model('fastnet_cpu', whiten_width=16)
    with pytest.raises(ConfigError, match='whiten_width'): narrow.init_whitening(images)
    assert not net.layers[0].norm1.weight.requires_grad and net.layers[0].norm1.bias.requires_grad


# ---- timm in both directions ---------------------------------------------------------------------------------------

def test_timm_names_do_not_clash():
    theirs = [n for n in timm.list_models() if timm.models.model_entrypoint(n).__module__ != timm_adapter.__name__]
    assert not [n for n in theirs if n.startswith(TIMM_PREFIX)]
    assert {TIMM_PREFIX + n for n in ALL} <= set(timm.list_models())
    before = timm.models.model_entrypoint(TIMM_PREFIX + 'resnet20')
    assert add_to_timm('resnet20') == TIMM_PREFIX + 'resnet20', 'adding again must be a no-op'
    assert timm.models.model_entrypoint(TIMM_PREFIX + 'resnet20') is before


def test_registration_never_shadows_a_timm_name():
    def cifar_zz_taken(pretrained=False, **kwargs): return nn.Linear(1, 1)
    timm.models.register_model(cifar_zz_taken)  # someone else's model under our prefix
    try:
        with pytest.raises(ConfigError, match="timm already has a model 'cifar_zz_taken'"):
            register_model('zz_taken', family='test', params=0, source='test')(lambda num_classes=10: nn.Linear(1, 1))
        assert 'zz_taken' not in list_models(), 'a name timm refuses is not registered here either'
        assert timm.models.model_entrypoint('cifar_zz_taken') is cifar_zz_taken
    finally:
        forget('zz_taken')
    assert not timm.is_model('cifar_zz_taken')


@pytest.mark.parametrize('name', ALL)
def test_timm_create_model_round_trip(name):
    # Built on the meta device: the structure is what is compared, and meta costs no memory or init maths.
    with torch.device('meta'):
        ours, theirs = create_model(name, num_classes=7), timm.create_model(TIMM_PREFIX + name, num_classes=7)
    assert type(theirs) is type(ours) and count_params(theirs) == count_params(ours)
    assert {k: v.shape for k, v in theirs.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert list(theirs.parameters())[-1].shape[0] == 7, 'num_classes must reach the head (its weight or bias)'


def test_model_registered_after_import_is_in_timm_at_once():
    name = 'zz_after_import'  # unique: no built-in or timm model has it

    def zz_after_import(num_classes: int = 10, width: int = 4) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, width), nn.Linear(width, num_classes))
    assert not timm.is_model(TIMM_PREFIX + name)
    with registered(name, zz_after_import):
        m = timm.create_model(TIMM_PREFIX + name, num_classes=3, width=5, seed=0)
        assert m(batch(2)[0]).shape == (2, 3) and m[1].out_features == 5
        for k, v in create_model(name, num_classes=3, width=5, seed=0).state_dict().items():
            assert torch.equal(v, m.state_dict()[k]), k
        with pytest.raises(ConfigError, match="no option 'widht'"): timm.create_model(TIMM_PREFIX + name, widht=5)
    assert not timm.is_model(TIMM_PREFIX + name) and name not in list_models()


def test_timm_create_model_builds_ours():
    m = timm.create_model(f'{TIMM_PREFIX}resnet20', num_classes=7)
    assert isinstance(m, CifarResNet) and m(batch(2)[0]).shape == (2, 7)
    with pytest.raises(ConfigError, match='pretrained'): timm.create_model(f'{TIMM_PREFIX}resnet20', pretrained=True)


def test_timm_architectures_through_create_model():
    assert create_model('timm/resnet18', seed=0).eval()(batch(2)[0]).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"'resnet181'.*Did you mean: resnet18"): create_model('timm/resnet181')


# ---- fastai ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def dls(tmp_path_factory):
    from fastai.vision.all import ImageDataLoaders
    from cifar_fast.data.synthetic import make_synthetic_cifar
    path = make_synthetic_cifar(tmp_path_factory.mktemp('cifar'), n_train=8, n_test=4)
    return ImageDataLoaders.from_folder(path, train='train', valid='test', bs=16, num_workers=0)


@pytest.mark.filterwarnings('ignore:load_learner:UserWarning')  # fastai's pickle warning: we load our own file
@pytest.mark.parametrize('name', ['resnet20', 'fastnet_cpu'])
def test_learner_fit_predict_export_roundtrip(name, dls, tmp_path):
    from fastai.vision.all import Learner, accuracy, load_learner
    learn = Learner(dls, create_model(name, seed=0), path=tmp_path, metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    assert len(learn.recorder.values) == 1 and all(map(lambda v: v == v, learn.recorder.values[0]))
    with learn.no_bar(): preds, targs = learn.get_preds()
    assert preds.shape == (40, 10) and torch.isfinite(preds).all()
    torch.testing.assert_close(preds.sum(1), torch.ones(40))  # get_preds applies the loss's softmax
    learn.export('export.pkl')
    loaded = load_learner(tmp_path / 'export.pkl', cpu=True)
    xb, _ = dls.valid.one_batch()
    with torch.no_grad():
        a, b = learn.model.eval()(xb), loaded.model.eval()(xb)
    assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))

"""airbench's techniques as pure functions and thin callbacks: whitening, TTA, lookahead, decoupled hyperparameters,
the BatchNorm-bias lr, fewer host syncs; and every speed recipe runs a short epoch."""
import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from fastai.callback.core import Callback

from cifar_fast.callback.speed import ProgressiveResize, downscale, lookahead_decay, lookahead_update, training_images
from cifar_fast.models.fastnet import whitening_weights
from cifar_fast.optim import decoupled_hypers, norm_bias_splitter
from cifar_fast.errors import ConfigError
from cifar_fast.recipe import DataConfig, Recipe, SpeedConfig
from cifar_fast.data import recipe_dls
from cifar_fast.machine import Choices
from cifar_fast.training import build_learner, train
from cifar_fast.tta import TTAModel, tta_views, view
from helpers import assert_resume_matches

ROOT = Path(__file__).resolve().parents[1]


def test_whitening_weights_are_the_patch_covariance_eigendecomposition():
    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = x * torch.tensor([1., 2., .5]).view(1, 3, 1, 1)
    w = whitening_weights(x, eps=1e-6)
    patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    cov = patches.T @ patches / len(patches)
    val, vec = torch.linalg.eigh(cov)
    ref = (vec / torch.sqrt(val + 1e-6)).T.flip(0).reshape(12, 3, 2, 2)
    first = w[:12].double()
    assert w.shape == (24, 3, 2, 2) and torch.allclose(w[12:], -w[:12])
    # sign is free
    for a, b in zip(first, ref): assert torch.allclose(a, b, atol=1e-4) or torch.allclose(a, -b, atol=1e-4)
    out = torch.nn.functional.conv2d(x.double(), first)  # the whitened patches have identity covariance
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    assert torch.allclose(flat.T @ flat / len(flat), torch.eye(12, dtype=torch.float64), atol=1e-3)


def test_tta_is_the_weighted_sum_of_the_views():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        assert torch.allclose(TTAModel(model, 1)(x), 0.5 * model(x) + 0.5 * model(x.flip(-1)), atol=1e-6)
        pad = nn.functional.pad(x, (1, 1, 1, 1), mode='reflect')
        up, down = pad[:, :, 0:32, 0:32], pad[:, :, 2:34, 2:34]  # airbench's two one-pixel translations
        mirror = lambda t: 0.5 * model(t) + 0.5 * model(t.flip(-1))
        ref = 0.5 * mirror(x) + 0.25 * mirror(up) + 0.25 * mirror(down)
        assert torch.allclose(TTAModel(model, 2)(x), ref, atol=1e-5)
    assert sum(w for *_, w in tta_views(2)) == pytest.approx(1.0)
    assert torch.equal(view(x, (-1, -1), False), up)


def test_lookahead_update_and_decay_schedule():
    model = nn.Linear(3, 2)
    avg = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    w = {k: v.clone() for k, v in model.state_dict().items()}
    lookahead_update(avg, model, decay=0.75)
    for k, v in model.state_dict().items():
        assert torch.allclose(avg[k], 0.25 * w[k]) and torch.equal(v, avg[k])  # averaged, then copied back
    assert lookahead_decay(50, 100, every=5, base=0.95, power=3) == pytest.approx(0.95 ** 5 * 0.5 ** 3)
    assert lookahead_decay(100, 100) == pytest.approx(0.95 ** 5)


def test_decoupled_hypers_match_airbench_formulas():
    lr, wd = decoupled_hypers(11.5, 0.0153, 0.85, 1024, reduction='sum')
    kilostep = 1024 * (1 + 1 / 0.15)
    assert lr == pytest.approx(11.5 / kilostep) and lr * wd == pytest.approx(0.0153 * 1024 / kilostep)
    lr_mean, wd_mean = decoupled_hypers(11.5, 0.0153, 0.85, 512)
    assert lr_mean == pytest.approx(512 * 11.5 / kilostep)  # a mean loss needs the batch size put back
    assert lr_mean * wd_mean == pytest.approx(0.0153 * 512 / kilostep)  # same decay per step either way


@pytest.fixture
def fast_recipe(synthetic):
    return Recipe(name='s', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=3, lr=0.02, seed=0,
                  data=DataConfig(source=str(synthetic), batch_size=32))


def test_bias_lr_scale_puts_norm_biases_in_their_own_group(fast_recipe, tmp_path):
    r = fast_recipe.replace(speed=SpeedConfig(bias_lr_scale=64), epochs=1)
    groups = norm_bias_splitter(build_learner(r, recipe_dls(r, 'cpu'), tmp_path, Choices('fp32')).model)
    assert groups[0] and all(p.ndim == 1 for p in groups[0]) and len(groups[0]) + len(groups[1]) > len(groups[0])
    res = train(r, runs_root=tmp_path)
    hy = res.learn.opt.hypers
    assert hy[0]['lr'] == pytest.approx(64 * hy[1]['lr']) and hy[0]['wd'] == pytest.approx(hy[1]['wd'] / 64)


def test_whitening_init_is_frozen_and_its_bias_trains_only_first_epochs(fast_recipe, tmp_path):
    r = fast_recipe.replace(speed=SpeedConfig(whiten=True, whiten_bias_epochs=1), epochs=2)
    res = train(r, runs_root=tmp_path)
    stem = res.learn.raw_model.whiten
    expected = whitening_weights(training_images(res.learn.dls, 5000))
    assert torch.allclose(stem.weight, expected, atol=1e-5)  # set from the data, then never trained
    assert not stem.weight.requires_grad and not stem.bias.requires_grad  # bias frozen after epoch 1


def test_whiten_without_a_whitening_stem_is_refused_by_one_check(fast_recipe, tmp_path):
    "Before a run folder exists (preflight, on a meta-device build) and for a built model, one check says the same."
    from cifar_fast.callback.speed import init_whitening
    from cifar_fast.errors import ConfigError
    from cifar_fast.models import create_model
    r = fast_recipe.replace(model='resnet20', model_kwargs={}, speed=SpeedConfig(whiten=True))
    with pytest.raises(ConfigError, match=r"speed.whiten=True needs a model with a whitening stem.*'resnet20'"):
        train(r, runs_root=tmp_path / 'runs')
    assert not (tmp_path / 'runs').exists() or not any((tmp_path / 'runs').iterdir())  # refused before any folder
    with pytest.raises(ConfigError, match=r"speed.whiten=True needs a model with a whitening stem.*'CifarResNet'"):
        init_whitening(create_model('resnet20'), dls=None)  # refused before it reads any data


def test_lazy_sync_gives_the_same_epoch_metrics(fast_recipe, tmp_path):
    def rows(r, d):
        train(r, runs_root=d)
        with open(next(d.iterdir()) / 'metrics.csv') as f:
            return [{k: v for k, v in row.items() if k != 'seconds'} for row in csv.DictReader(f)]
    lazy = fast_recipe.replace(speed=SpeedConfig(sync_every=4))
    assert rows(fast_recipe, tmp_path / 'a') == rows(lazy, tmp_path / 'b')


def test_lookahead_run_and_resume_match(fast_recipe, tmp_path):
    r = fast_recipe.replace(epochs=4, speed=SpeedConfig(lookahead=True, lookahead_start=1, lookahead_every=2))
    assert_resume_matches(r, tmp_path, epoch=2, it=0)


def test_summary_says_lookahead_averaged_only_once_averaging_began(fast_recipe, tmp_path):
    "Lookahead averages from epoch lookahead_start + 1 (1-based): a shorter run's weights are the raw ones."
    r = fast_recipe.replace(tta=0, speed=SpeedConfig(lookahead=True, lookahead_start=1, lookahead_every=2))
    assert train(r.replace(epochs=1), runs_root=tmp_path / 'a').summary['weights_average'] is None
    assert train(r.replace(epochs=2), runs_root=tmp_path / 'b').summary['weights_average'] == 'lookahead'


def test_downscale_keeps_dtype_and_memory_format_and_averages_pixels():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32) % 7
    y = downscale(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last), 16)
    assert y.shape == (2, 3, 16, 16) and y.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=torch.channels_last)
    flat = torch.full((1, 3, 32, 32), 0.25)
    assert torch.allclose(downscale(flat, 24), torch.full((1, 3, 24, 24), 0.25))  # a flat image stays flat
    assert downscale(x, 32) is x  # full size: untouched
    # antialiased: a checkerboard (the highest frequency there is) averages out instead of aliasing into a pattern,
    # which plain bilinear sampling to 24 px leaves at up to ±0.44
    i = torch.arange(32)
    board = ((i[:, None] + i[None, :]) % 2 * 2 - 1).float().expand(1, 3, 32, 32)
    assert downscale(board, 16).abs().max() < 0.05 and downscale(board, 24).abs().max() < 0.2


def test_progressive_resize_trains_small_first_and_always_validates_full_size(fast_recipe, tmp_path):
    seen = []

    class Sizes(Callback):
        order = ProgressiveResize.order + 1  # the batch as the model gets it
        def before_batch(self): seen.append((self.epoch, self.training, tuple(self.xb[0].shape[-2:])))

    r = fast_recipe.replace(epochs=2, tta=0, speed=SpeedConfig(low_res=16, low_res_epochs=1))
    res = train(r, runs_root=tmp_path, extra_cbs=[Sizes()])
    assert {s for e, t, s in seen if t and e == 0} == {(16, 16)}  # the first epoch trains at 16 px
    assert {s for e, t, s in seen if t and e == 1} == {(32, 32)}  # then at full size
    assert {s for e, t, s in seen if not t} == {(32, 32)}  # validation always at full size
    assert res.summary['epochs'] == 2 and res.summary['test_accuracy'] is not None


@pytest.mark.parametrize('speed, match', [
    (dict(low_res=24), r'speed.low_res=24 and speed.low_res_epochs=0: progressive resizing needs both'),
    (dict(low_res_epochs=2), r'speed.low_res=0 and speed.low_res_epochs=2'),
    (dict(low_res=32, low_res_epochs=2), r'speed.low_res=32: a side in pixels from 8 to 31'),
    (dict(low_res=4, low_res_epochs=2), r'speed.low_res=4: a side in pixels from 8 to 31')])
def test_progressive_resize_settings_are_checked_with_the_recipe(speed, match):
    with pytest.raises(ConfigError, match=match): Recipe(speed=SpeedConfig(**speed))


def test_compile_by_mode_caches_under_cifar_fast_matches_eager_and_reports_its_time(fast_recipe, tmp_path, monkeypatch):
    import json
    monkeypatch.delenv('TORCHINDUCTOR_CACHE_DIR', raising=False)
    monkeypatch.setenv('CIFAR_FAST_CACHE', str(tmp_path / 'cache'))
    # fp32 NCHW: the test is about the cache folder, and autocast makes more for Inductor to compile. A mode by name
    # reaches torch.compile (on a CPU 'reduce-overhead' compiles as the default mode: CUDA graphs need a GPU).
    res = train(fast_recipe.replace(compile='reduce-overhead', epochs=1, tta=0, precision='fp32', channels_last=False),
                runs_root=tmp_path / 'runs')
    cache = tmp_path / 'cache' / 'inductor'
    env = json.loads((res.run_dir / 'env.json').read_text())
    assert env['compile_cache'] == str(cache) and env['choices']['compile']['value'] == 'reduce-overhead'
    assert any(f.is_file() for f in cache.rglob('*'))  # Inductor wrote its compiled graphs there
    assert res.summary['compile_seconds'] > 0 and res.summary['test_accuracy'] is not None
    # the compiled model computes what the eager one does (its eval graph was compiled for the validation already)
    learn = res.learn
    assert learn.model is not learn.raw_model
    x = learn.dls.valid.one_batch()[0]
    with torch.no_grad():
        torch.testing.assert_close(learn.model.eval()(x), learn.raw_model.eval()(x), rtol=1e-4, atol=1e-5)


def test_weight_ema_is_the_hand_computed_average_and_is_what_gets_validated(fast_recipe, tmp_path):
    from fastai.callback.core import Callback

    class Capture(Callback):  # the raw weights right after each optimiser step, as the average sees them
        order = 66
        def before_fit(self): self.seen = []
        def after_step(self):
            self.seen.append({k: v.detach().clone() for k, v in self.learn.raw_model.state_dict().items()})
    cap = Capture()
    r = fast_recipe.replace(epochs=2, speed=SpeedConfig(ema=0.9, ema_warmup=False))
    res = train(r, runs_root=tmp_path, extra_cbs=[cap])
    avg = dict(cap.seen[0])  # timm's first update copies the weights (decay 0 at step 1)
    for w in cap.seen[1:]:
        avg = {k: 0.9 * avg[k] + 0.1 * w[k] if w[k].is_floating_point() else w[k] for k in w}
    final = torch.load(res.run_dir / 'model.pth', weights_only=True)['last']
    assert all(torch.allclose(final[k].float(), avg[k].float(), atol=1e-5) for k in avg)
    assert not all(torch.allclose(final[k].float(), cap.seen[-1][k].float()) for k in avg)  # not the raw weights
    rows = list(csv.DictReader(open(res.run_dir / 'metrics.csv')))
    assert float(rows[-1]['accuracy']) == pytest.approx(res.summary['test_accuracy'], abs=1e-6)  # validated = evaluated


def test_weight_ema_run_and_resume_match(fast_recipe, tmp_path):
    assert_resume_matches(fast_recipe.replace(epochs=3, speed=SpeedConfig(ema=0.95)), tmp_path, epoch=2, it=0)

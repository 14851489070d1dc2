"""Training runs on the synthetic fixture: the run folder, reproducibility, interrupt/resume, lr_find, mixing,
divergence and precision."""
import csv
import signal

import pytest
import torch
from fastai.callback.core import Callback
from PIL import Image

from cifar_fast.recipe import DataConfig, Recipe
from cifar_fast.rundir import read_json, run_state
from helpers import SignalAt
from cifar_fast.data import recipe_dls
from cifar_fast.errors import TrainingDiverged
from cifar_fast.machine import Choices
from cifar_fast.training import build_learner, run_lr_find, train

SMALL = dict(widths=[8, 16, 32])  # fastnet_cpu narrowed: an epoch of the fixture in well under a second


@pytest.fixture
def recipe(synthetic):
    return Recipe(name='t', model='fastnet_cpu', model_kwargs=SMALL, epochs=3, lr=0.02, seed=0,
                  data=DataConfig(source=str(synthetic), batch_size=32))


def _metrics(run_dir, drop=('seconds',)):
    "metrics.csv as text without the wall-clock column (the one thing a rerun cannot reproduce)."
    with open(run_dir / 'metrics.csv') as f: rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_run_folder_holds_every_file(recipe, tmp_path):
    res = train(recipe.replace(tta=1), runs_root=tmp_path)
    d = res.run_dir
    assert d.parent == tmp_path and d.name.startswith('t-')
    for f in ('recipe.json', 'env.json', 'metrics.csv', 'summary.json', 'model.pth', 'export.pkl', 'curves.png',
              'console.log', 'status.json', 'checkpoints/last.pth'):
        assert (d / f).is_file() and (d / f).stat().st_size > 0, f
    rj = read_json(d / 'recipe.json')
    assert rj['recipe']['model'] == 'fastnet_cpu' and len(rj['hash']) == 12
    env = read_json(d / 'env.json')
    for k in ('python', 'torch', 'fastai', 'timm', 'wandb', 'device', 'cpu', 'precision', 'seed', 'command', 'git'):
        assert k in env, k
    rows = _metrics(d, drop=())
    assert [r['epoch'] for r in rows] == ['1', '2', '3'] and list(rows[0]) == ['epoch', 'train_loss', 'valid_loss',
                                                                              'accuracy', 'lr', 'seconds']
    s = read_json(d / 'summary.json')
    assert s['epochs'] == 3 and 0 <= s['test_accuracy'] <= 1 and s['test_accuracy_tta'] is not None
    assert s['test_accuracy'] == pytest.approx(float(rows[-1]['accuracy']), abs=1e-6)
    assert s['train_images_per_sec'] > 0 and s['params'] > 0
    w = torch.load(d / 'model.pth', weights_only=True)
    assert set(w) >= {'best', 'last', 'best_epoch'}
    assert Image.open(d / 'curves.png').size[0] > 100
    assert run_state(d) == 'complete' and 'test accuracy' in (d / 'console.log').read_text()
    assert not any(recipe.data.source in str(p) for p in d.rglob('*'))  # nothing written next to the data...
    assert not list((tmp_path.parent).glob('**/synthetic*/**/*.pth'))  # ...nor inside the dataset


def test_same_recipe_and_seed_give_identical_metrics(recipe, tmp_path):
    a = train(recipe, runs_root=tmp_path / 'a').run_dir
    b = train(recipe, runs_root=tmp_path / 'b').run_dir
    assert _metrics(a) == _metrics(b)
    wa, wb = (torch.load(d / 'model.pth', weights_only=True)['last'] for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_interrupt_then_resume_equals_uninterrupted(recipe, tmp_path, sig):
    r = recipe.replace(epochs=4, mixup=0.4)  # MixUp draws from the torch RNG: resume must restore it exactly
    full = train(r, runs_root=tmp_path / 'full').run_dir
    res = train(r, runs_root=tmp_path / 'cut', extra_cbs=[SignalAt(2, 1, sig)])
    d = res.run_dir
    assert res.summary['state'] == 'interrupted' and run_state(d) == 'interrupted'
    assert not (d / 'summary.json').exists() and len(_metrics(d)) == 2  # epochs 0 and 1 completed
    assert 'resume' in read_json(d / 'status.json')['resume']
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
    train(None, resume=d)
    assert run_state(d) == 'complete' and _metrics(d) == _metrics(full)
    wa, wb = (torch.load(x / 'model.pth', weights_only=True)['last'] for x in (full, d))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_complete_or_unstarted_runs(recipe, tmp_path):
    from cifar_fast.errors import ConfigError
    d = train(recipe.replace(epochs=1), runs_root=tmp_path).run_dir
    with pytest.raises(ConfigError, match='already complete'): train(None, resume=d)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ConfigError, match='not a run folder'): train(None, resume=tmp_path / 'empty')


def test_lr_find_leaves_weights_optimiser_and_rngs_unchanged(recipe, tmp_path):
    dls = recipe_dls(recipe, 'cpu')
    learn = build_learner(recipe, dls, tmp_path, Choices('fp32'))
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    rng, dl_rng = torch.get_rng_state(), dls.train.rng.getstate()
    found = run_lr_find(learn, num_it=30)
    assert set(found['suggestions']) == {'valley', 'slide', 'minimum', 'steep'} and len(found['lrs']) > 10
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(rng, torch.get_rng_state()) and dl_rng == dls.train.rng.getstate()


def test_lr_suggestion_run_is_reproducible_and_equals_the_explicit_lr(recipe, tmp_path):
    r = recipe.replace(lr='valley', epochs=2)
    a = train(r, runs_root=tmp_path / 'a').run_dir
    b = train(r, runs_root=tmp_path / 'b').run_dir
    lr = read_json(a / 'lr_find.json')['lr']
    assert (a / 'lr_find.png').is_file() and lr == read_json(b / 'lr_find.json')['lr']
    c = train(recipe.replace(lr=lr, epochs=2), runs_root=tmp_path / 'c').run_dir
    assert _metrics(a) == _metrics(b) == _metrics(c)


@pytest.mark.parametrize('mix', [dict(mixup=0.4), dict(cutmix=1.0), dict(mixup=0.4, cutmix=1.0)])
def test_mixup_cutmix_and_switch_train_and_restore_the_loss(recipe, tmp_path, mix):
    res = train(recipe.replace(epochs=2, **mix), runs_root=tmp_path)
    assert run_state(res.run_dir) == 'complete'
    assert type(res.learn.loss_func).__name__ == 'PlainCrossEntropyLossFlat'


class _Boom(Callback):
    order = 1  # after MixUp swapped the loss in before_train
    def before_fit(self): self.learner = self.learn  # fastai detaches fit-time callbacks afterwards
    def before_batch(self):
        self.seen_loss = self.learn.loss_func
        if self.epoch == 1: raise RuntimeError('boom')


def test_an_exception_mid_fit_restores_the_loss_and_marks_the_run_failed(recipe, tmp_path):
    boom = _Boom()
    with pytest.raises(RuntimeError, match='boom'):
        train(recipe.replace(mixup=0.4), runs_root=tmp_path, extra_cbs=[boom])
    assert type(boom.seen_loss).__name__ == 'method'  # MixUp's mixed loss was in place…
    assert type(boom.learner.loss_func).__name__ == 'PlainCrossEntropyLossFlat'  # …and is gone after the crash
    d = next(tmp_path.iterdir())
    assert run_state(d) == 'failed' and 'boom' in read_json(d / 'status.json')['error']


class _PoisonLoss(Callback):
    order = 0
    def after_loss(self):
        if self.training and self.epoch == 1: self.learn.loss = self.loss * float('nan')


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(recipe, tmp_path):
    with pytest.raises(TrainingDiverged, match=r'loss became nan at epoch 2.*last good checkpoint \(epoch 1\)'):
        train(recipe, runs_root=tmp_path, extra_cbs=[_PoisonLoss()])
    d = next(tmp_path.iterdir())
    assert run_state(d) == 'diverged' and len(_metrics(d)) == 1
    ck = torch.load(d / 'checkpoints' / 'last.pth', weights_only=True)
    assert ck['epoch'] == 0 and all(torch.isfinite(v).all() for v in ck['model'].values() if v.is_floating_point())


def test_bf16_means_bf16_autocast_on_the_cpu(recipe, tmp_path):
    r = recipe.replace(precision='bf16', epochs=1)
    learn = build_learner(r, recipe_dls(r, 'cpu'), tmp_path, Choices('bf16'))
    dtypes = []
    conv = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad)
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.01)
    assert dtypes and set(dtypes) == {torch.bfloat16}


def test_early_stopping_and_best_checkpoint(recipe, tmp_path):
    res = train(recipe.replace(epochs=6, lr=1e-7, patience=1, checkpoint='best'), runs_root=tmp_path)
    s = res.summary
    assert s['stopped_early'] and s['epochs'] < 6
    from cifar_fast.inference import evaluate_run
    assert evaluate_run(res.run_dir, weights='best')['accuracy'] == pytest.approx(s['best_epoch_accuracy'], abs=1e-6)


@pytest.mark.parametrize('kind', ['one_cycle', 'cosine', 'step', 'flat_cos', 'triangular', 'linear_decay'])
def test_schedules_start_peak_and_end_where_asked(kind):
    from cifar_fast.callback.schedule import lr_schedule
    f = lr_schedule(kind, 1.0, div=10, final_div=100, pct_start=0.25, milestones=(0.5, 0.75), gamma=0.1)
    vals = [float(f(p)) for p in (0.0, 0.25, 0.6, 0.999)]
    expect = dict(one_cycle=(0.1, 1.0, None, 0.01), cosine=(1.0, None, None, 0.0), step=(1.0, 1.0, 0.1, 0.01),
                  flat_cos=(1.0, 1.0, None, 0.01), triangular=(0.1, 1.0, None, 0.01),
                  linear_decay=(1.0, 0.75, 0.4, 0.0))[kind]
    for v, e in zip(vals, expect):
        if e is not None: assert v == pytest.approx(e, abs=0.02), (kind, vals)
    assert max(vals) <= 1.0 + 1e-6

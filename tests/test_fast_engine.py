"""The fast engine is a fastai DataLoaders: same tensors as the DataBlock engine, and fastai's API works on it."""
import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from cifar_fast.data import augment as A
from cifar_fast.data.fast import Augment, CifarTensors, FastDL
from cifar_fast.data.loaders import cifar_dls


def _stack(dl):
    xs, ys = zip(*[(b[0].as_subclass(torch.Tensor), b[1].as_subclass(torch.Tensor)) for b in dl])
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize('sizes', [(None, None), (50, 30)])
def test_both_engines_yield_identical_validation_tensors(synthetic, sizes):
    kw = dict(bs=16, device='cpu', train_size=sizes[0], valid_size=sizes[1])
    f, d = cifar_dls(synthetic, engine='fast', **kw), cifar_dls(synthetic, engine='datablock', **kw)
    (xf, yf), (xd, yd) = _stack(f.valid), _stack(d.valid)
    assert len(xf) == (sizes[1] or 100) and torch.equal(xf, xd) and torch.equal(yf, yd)
    assert list(f.vocab) == list(d.vocab) == ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
                                               'horse', 'ship', 'truck']
    assert len(f.train) == (sizes[0] or 200) // 16  # last partial batch dropped when training


def _labelled_images(n=100):
    "Images whose every pixel equals 2*label, so a batch proves its labels travel with its images."
    y = torch.arange(n) % 10
    x = (2 * y).to(torch.uint8).view(-1, 1, 1, 1).expand(n, 3, 32, 32).clone()
    return CifarTensors(x, y, [str(i) for i in range(10)])


def test_every_image_once_per_epoch_with_its_label():
    dl = FastDL(_labelled_images(), bs=32, shuffle=True, aug=Augment(translate=2, flip=True, cutout=0), device='cpu')
    seen = []
    for x, y in dl:
        pix = (A.denormalize(x) * 255).round()[:, 0, 0, 0]
        assert torch.equal(pix, 2 * y.float())
        seen.append(y)
    assert len(torch.cat(seen)) == 100 and torch.bincount(torch.cat(seen)).tolist() == [10] * 10


def test_shards_are_disjoint_and_cover():
    ds = _labelled_images(101)
    dls = [FastDL(ds, bs=10, shuffle=True, rank=r, world_size=2, device='cpu') for r in range(2)]
    for dl in dls: dl.rng.seed(7)  # ranks share a seed, so they draw the same permutation
    a, b = (dl.get_idxs() for dl in dls)
    assert len(a) == len(b) == 51
    assert set(a.tolist()) | set(b.tolist()) == set(range(101))
    assert len(set(a.tolist()) & set(b.tolist())) == 1  # one index padded by wrapping, like DistributedSampler


def test_seed_makes_batches_reproducible(synthetic):
    def first(seed):
        return cifar_dls(synthetic, bs=16, device='cpu', seed=seed, aug=Augment(cutout=4)).train.one_batch()
    (x1, y1), (x2, y2), (x3, _) = first(0), first(0), first(1)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)


def test_options_dtype_channels_last_and_bad_engine(synthetic):
    dls = cifar_dls(synthetic, bs=8, device='cpu', dtype=torch.bfloat16, channels_last=True)
    x, _ = dls.train.one_batch()
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    assert dls.train.dataset.x.device.type == 'cpu' and dls.train.dataset.x.dtype == torch.uint8
    from cifar_fast.errors import ConfigError
    with pytest.raises(ConfigError, match="engine must be one of"): cifar_dls(synthetic, engine='turbo')
    with pytest.raises(ConfigError, match=r"policy='rand'"): cifar_dls(synthetic, policy='rand')
    with pytest.raises(ConfigError, match='disagree'):
        cifar_dls(synthetic, policy='auto', aug=Augment(policy='trivial'))


def test_a_recipe_policy_reaches_the_fast_engine(synthetic):
    from cifar_fast.data.loaders import recipe_dls
    from cifar_fast.recipe import DataConfig, Recipe
    dls = recipe_dls(Recipe(data=DataConfig(source=str(synthetic), batch_size=16, policy='trivial')), device='cpu')
    assert dls.train.aug.policy == 'trivial' and dls.valid.aug.policy is None  # validation stays unaugmented
    assert cifar_dls(synthetic, bs=16, device='cpu', policy='auto').train.aug.policy == 'auto'
    # the Recipe's rule (data_engines.check_engine_options), checked before the data is read: no such folder is needed
    from cifar_fast.errors import ConfigError
    with pytest.raises(ConfigError, match=r"^alt_flip=True needs engine='fast'"):
        cifar_dls(synthetic / 'absent', engine='datablock', aug=Augment(alt_flip=True))


@pytest.fixture(scope='module')
def learn(synthetic, tmp_path_factory):
    from fastai.vision.all import CrossEntropyLossFlat, Learner, accuracy
    torch.manual_seed(0)
    dls = cifar_dls(synthetic, bs=32, device='cpu', seed=0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 10))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                    path=tmp_path_factory.mktemp('learn'))
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(6, 3e-2)
    return learn


def test_learner_fits_and_get_preds_keeps_dataset_order(learn):
    assert learn.recorder.values[-1][-1] > 0.3  # accuracy well above chance (0.1) on the synthetic colours
    with learn.no_bar(): preds, targs = learn.get_preds()
    assert preds.shape == (100, 10) and torch.equal(targs, learn.dls.valid.dataset.y)


def test_lr_find_show_batch_and_results(learn):
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with learn.no_bar(), learn.no_logging(): res = learn.lr_find(show_plot=False)
    assert res.valley > 0 and all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())
    plt.close('all')
    learn.dls.show_batch(max_n=4)
    assert len(plt.gcf().axes) == 4 and plt.gcf().axes[0].get_title() in learn.dls.vocab
    with learn.no_bar(): learn.show_results(max_n=4)
    assert len(plt.gcf().axes) >= 4
    plt.close('all')


def test_classification_interpretation_and_top_losses(learn):
    from fastai.interpret import ClassificationInterpretation
    with learn.no_bar():
        interp = ClassificationInterpretation.from_learner(learn)
        cm = interp.confusion_matrix()
        assert cm.sum() == 100 and (cm.sum(1) == 10).all()
        interp.plot_top_losses(4)
    assert len(plt.gcf().axes) == 4
    plt.close('all')


def test_predict_and_export_round_trip(learn, synthetic):
    from fastai.learner import load_learner
    img = synthetic / 'test' / 'cat' / '0001.png'
    with learn.no_bar():
        cls, idx, probs = learn.predict(img)
        assert cls == learn.dls.vocab[int(idx)] and probs.shape == (10,)
        learn.export('export.pkl')
        assert (learn.path / 'export.pkl').stat().st_size < 2_000_000  # no dataset inside the export
        loaded = load_learner(learn.path / 'export.pkl', cpu=True)
        cls2, _, probs2 = loaded.predict(img)
    assert cls2 == cls and torch.allclose(probs, probs2)


def test_fastai_tta_runs(learn):
    with learn.no_bar(): preds, targs = learn.tta(n=2)
    assert preds.shape == (100, 10) and torch.equal(targs, learn.dls.valid.dataset.y)

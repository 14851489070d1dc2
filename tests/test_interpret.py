"""Interpretation on the synthetic fixture: every table checked against an independent computation (counted by hand
in plain Python, since the code under test uses scikit-learn; numpy; a full sort), the files and figures written,
plain cross-entropy after MixUp + label smoothing, the Learner and run-folder paths agreeing, and clear errors on bad
input. One tiny run is trained per module."""
import csv
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cifar_fast.console import confusion_table, per_class_table
from cifar_fast.errors import ConfigError
from cifar_fast.interpret import interpret_learner, interpret_run
from cifar_fast.predictions import FILES, calibration_bins, expected_calibration_error
from cifar_fast.recipe import DataConfig, Recipe
from cifar_fast.training import train

SMALL = dict(widths=[8, 16, 32])  # as in test_train.py: an epoch of the fixture in well under a second
N_TEST, N_CLASSES = 100, 10  # the synthetic fixture: 10 test images per class


def _recipe(synthetic, **kw):
    return Recipe(**{**dict(name='t', model='fastnet_cpu', model_kwargs=SMALL, epochs=3, lr=0.02, seed=0,
                            data=DataConfig(source=str(synthetic), batch_size=32)), **kw})


@pytest.fixture(scope='module')
def trained(synthetic, tmp_path_factory):
    return train(_recipe(synthetic), runs_root=tmp_path_factory.mktemp('runs'), show_progress=False)


@pytest.fixture(scope='module')
def interp(trained):
    "The run interpreted once, with every file written to RUN_DIR/interpret/."
    return interpret_run(trained.run_dir, top_losses=16)


def _read_csv(path):
    with open(path) as f: return list(csv.reader(f))


def _hand_confusion(y, p) -> np.ndarray:
    "Counted one image at a time: the definition, not a library."
    cm = np.zeros((N_CLASSES, N_CLASSES), dtype=int)
    for t, q in zip(y.tolist(), p.tolist()): cm[t][q] += 1
    return cm


def test_confusion_matrix_counts_each_image_once_and_rows_sum_to_supports(interp):
    y, p = interp.targs.numpy(), interp.probs.numpy().argmax(1)
    assert interp.n == N_TEST
    np.testing.assert_array_equal(interp.confusion, _hand_confusion(y, p))
    np.testing.assert_array_equal(interp.confusion.sum(1), np.bincount(y, minlength=N_CLASSES))
    assert interp.accuracy == pytest.approx((p == y).mean())
    rows = _read_csv(interp.files['confusion.csv'])
    assert rows[0][1:] == list(interp.classes) and [r[0] for r in rows[1:]] == list(interp.classes)
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], dtype=int), interp.confusion)


def test_per_class_metrics_equal_their_definitions(interp):
    y, p = interp.targs.numpy(), interp.probs.numpy().argmax(1)
    tp = np.array([sum(1 for t, q in zip(y, p) if t == q == c) for c in range(N_CLASSES)], dtype=float)
    sup, npred = np.bincount(y, minlength=N_CLASSES), np.bincount(p, minlength=N_CLASSES)
    prec, rec = np.where(npred > 0, tp / np.maximum(npred, 1), 0.), np.where(sup > 0, tp / np.maximum(sup, 1), 0.)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.)
    pc = interp.per_class
    for mine, ref in ((pc['precision'], prec), (pc['recall'], rec), (pc['f1'], f1), (pc['support'], sup)):
        np.testing.assert_allclose(mine, ref, atol=1e-12)
    ovr = np.array([((y == c) == (p == c)).mean() for c in range(N_CLASSES)])  # one-vs-rest accuracy
    np.testing.assert_allclose(pc['accuracy'], ovr)
    rows = _read_csv(interp.files['per_class.csv'])
    assert rows[0] == ['class', 'precision', 'recall', 'f1', 'accuracy', 'support']
    np.testing.assert_allclose(np.array([r[1:5] for r in rows[1:]], dtype=float),
                               np.stack([prec, rec, f1, ovr], 1), atol=1e-6)


def test_top_losses_are_sorted_and_the_largest(interp):
    vals, idx = interp.top_losses()
    full = torch.sort(interp.losses, descending=True).values
    assert len(vals) == 16 and torch.all(vals[:-1] >= vals[1:])
    torch.testing.assert_close(vals, full[:16])
    torch.testing.assert_close(interp.losses[idx], vals)
    rows = _read_csv(interp.files['top_losses.csv'])
    header, rows = rows[0], rows[1:]
    assert header == ['rank', 'index', 'name', 'actual', 'predicted', 'loss', 'p_predicted', 'p_actual']
    assert [int(r[1]) for r in rows] == idx.tolist() and all(r[2].startswith('test/') for r in rows)
    for r in rows:  # plain cross-entropy is -log p(actual): the two columns must agree
        assert float(r[5]) == pytest.approx(-np.log(float(r[7])), rel=1e-4, abs=1e-5)
        assert float(r[6]) >= float(r[7]) and (r[3] == r[4]) == (float(r[6]) == float(r[7]))
    # fastai's ClassificationInterpretation over the same losses ranks them identically (no inference re-run).
    fi = interp.fastai_interpretation()
    torch.testing.assert_close(fi.top_losses(16)[0], vals)
    # Images come from the dataset by index, afterwards, exactly as stored.
    imgs = interp.images(idx[:3].tolist())
    np.testing.assert_array_equal(imgs, interp.dl.dataset.x[idx[:3]].permute(0, 2, 3, 1).numpy())


def test_most_confused_is_the_sorted_off_diagonal(interp):
    mc = interp.most_confused()
    cm = interp.confusion.copy()
    np.fill_diagonal(cm, 0)
    assert sum(n for _, _, n in mc) == cm.sum() and all(a != p for a, p, _ in mc)
    assert [n for *_, n in mc] == sorted((n for *_, n in mc), reverse=True)
    for a, p, n in mc: assert cm[interp.classes.index(a), interp.classes.index(p)] == n
    rows = _read_csv(interp.files['most_confused.csv'])
    assert rows[0] == ['actual', 'predicted', 'count'] and [(a, p, int(n)) for a, p, n in rows[1:]] == mc


def test_every_file_is_written_and_every_png_opens(interp, trained):
    out = trained.run_dir / 'interpret'
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob('.*tmp*'))  # atomic writes left no temporary files behind
    min_size = {'confusion.png': (1200, 550), 'top_losses.png': (700, 700), 'calibration.png': (500, 550)}
    for name, (w, h) in min_size.items():
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.format == 'PNG' and im.size[0] >= w and im.size[1] >= h, (name, im.size)
            assert im.size[0] < 4000 and im.size[1] < 4000, (name, im.size)
    report = (out / 'report.md').read_text()
    assert f'{100 * interp.accuracy:.2f}%' in report and f'{100 * interp.ece:.2f}%' in report
    for name in FILES[1:]: assert f']({name})' in report, name


def _ece_loop(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    "Textbook ECE (Guo et al. 2017): bins (lo, hi], weighted |accuracy − confidence|, one bin at a time."
    conf, correct = probs.max(1), (probs.argmax(1) == y)
    edges, ece = np.linspace(0, 1, n_bins + 1), 0.
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any(): ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return ece


def test_ece_matches_an_independent_numpy_computation(interp):
    assert interp.ece == pytest.approx(_ece_loop(interp.probs.numpy(), interp.targs.numpy()), abs=1e-6)
    cal = interp.calibration
    assert len(cal['count']) == 15 and cal['count'].sum() == interp.n
    # A hand-made case: two images at confidence .95 (one right), two at .55 (both right): ECE = .5·.45 + .5·.45.
    probs = torch.tensor([[.95, .05], [.95, .05], [.55, .45], [.45, .55]])
    targs = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(calibration_bins(probs, targs)) == pytest.approx(.45, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(500, 10, generator=g).mul(3).softmax(1)
    targs = torch.randint(0, 10, (500,), generator=g)
    assert expected_calibration_error(calibration_bins(probs, targs)) == pytest.approx(
        _ece_loop(probs.numpy(), targs.numpy()), abs=1e-6)  # the loop averages in float32


def test_mixup_label_smoothing_run_is_interpreted_with_plain_cross_entropy(synthetic, tmp_path_factory):
    res = train(_recipe(synthetic, mixup=0.4, label_smoothing=0.1, epochs=2),
                runs_root=tmp_path_factory.mktemp('mix'), show_progress=False)
    from cifar_fast.data import augment as A
    from cifar_fast.models import create_model
    model = create_model('fastnet_cpu', **SMALL)
    model.load_state_dict(torch.load(res.run_dir / 'model.pth', weights_only=True)['last'])
    ds = res.learn.dls.valid.dataset
    with torch.no_grad(): logits = model.eval()(A.normalize(ds.x))
    plain = F.cross_entropy(logits, ds.y, reduction='none')
    smoothed = F.cross_entropy(logits, ds.y, reduction='none', label_smoothing=0.1)
    assert not torch.allclose(plain, smoothed, atol=1e-3)  # so the check below can tell them apart
    for it in (interpret_run(res.run_dir, save=False), interpret_learner(res.learn, save=False)):
        torch.testing.assert_close(it.losses, plain, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(it.probs, logits.softmax(1), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(it.targs, ds.y)
    # The Learner's own loss is the smoothed one; interpreting did not change it.
    assert res.learn.loss_func.func.label_smoothing == 0.1


def test_learner_and_run_folder_give_the_same_interpretation(trained, interp, tmp_path):
    it = interpret_learner(trained.learn, top_losses=0, out_dir=tmp_path / 'learn')  # 0: no grid, a cheaper save
    np.testing.assert_array_equal(it.confusion, interp.confusion)
    torch.testing.assert_close(it.probs, interp.probs)
    out = tmp_path / 'learn'
    assert (out / 'confusion.csv').read_text() == interp.files['confusion.csv'].read_text()
    assert not (out / 'top_losses.png').exists() and 'top_losses' not in (out / 'report.md').read_text()


def test_train_split_is_unaugmented_and_subsets_are_stratified(trained):
    a = interpret_run(trained.run_dir, split='train', save=False)
    b = interpret_run(trained.run_dir, split='train', save=False)
    assert a.n == 200 and torch.equal(a.probs, b.probs)  # random crops/flips would make two passes differ
    c = interpret_learner(trained.learn, split='train', save=False)
    torch.testing.assert_close(c.probs, a.probs)
    s = interpret_run(trained.run_dir, subset=50, top_losses=5, save=False)
    assert s.n == 50 and s.confusion.sum(1).tolist() == [5] * N_CLASSES
    sl = interpret_learner(trained.learn, subset=50, top_losses=5, save=False)  # the same stratified draw
    torch.testing.assert_close(sl.probs, s.probs)
    aug = interpret_learner(trained.learn, dl=trained.learn.dls.train, save=False)  # augmentation stripped from it
    torch.testing.assert_close(aug.probs, a.probs)


def test_tta_and_pickle_paths(trained, interp):
    from cifar_fast.data import augment as A
    model = trained.learn.raw_model.eval()
    x = A.normalize(interp.dl.dataset.x)
    with torch.no_grad(): logits = (model(x) + model(x.flip(-1))) / 2  # TTA level 1: identity and mirror, half each
    t = interpret_run(trained.run_dir, tta=1, save=False)
    torch.testing.assert_close(t.probs, logits.softmax(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(t.losses, F.cross_entropy(logits, t.targs, reduction='none'), atol=1e-5, rtol=1e-5)
    with pytest.warns(UserWarning, match='pickle'):  # fastai's warning: export.pkl really was unpickled
        p = interpret_run(trained.run_dir, trust_pickle=True, save=False)  # same weights as model.pth's
    torch.testing.assert_close(p.probs, interp.probs)
    np.testing.assert_array_equal(p.confusion, interp.confusion)


def test_terminal_tables(interp):
    from rich.console import Console
    from rich.table import Table
    ct, pt = confusion_table(interp), per_class_table(interp)
    assert isinstance(ct, Table) and isinstance(pt, Table)
    assert len(ct.columns) == N_CLASSES + 2 and ct.row_count == N_CLASSES and pt.row_count == N_CLASSES
    con = Console(record=True, width=130)
    con.print(ct); con.print(pt)
    text = con.export_text()
    assert all(c in text for c in interp.classes) and f'{100 * interp.accuracy:.2f}%' in text
    assert f"{interp.per_class['f1'].mean():.3f}" in text  # macro-average footer


def test_bad_input_names_the_culprit(trained, tmp_path):
    with pytest.raises(ConfigError, match=r'nowhere.*does not exist'): interpret_run(tmp_path / 'nowhere')
    no_model = tmp_path / 'no_model'
    shutil.copytree(trained.run_dir, no_model, ignore=shutil.ignore_patterns('model.pth'))
    with pytest.raises(ConfigError, match=r'no_model has no model\.pth'): interpret_run(no_model)
    with pytest.raises(ConfigError, match=r"split 'valid' does not exist; choose one of test, train"):
        interpret_run(trained.run_dir, split='valid')
    with pytest.raises(ConfigError, match=r'top_losses=101 is larger than the test split \(100 images\)'):
        interpret_run(trained.run_dir, top_losses=101)
    with pytest.raises(ConfigError, match=r'top_losses=201 is larger than the train split \(200 images\)'):
        interpret_learner(trained.learn, split='train', top_losses=201)
    with pytest.raises(ConfigError, match=r'subset must be .* 1\.\.100 .*test split.*got 500'):
        interpret_run(trained.run_dir, subset=500)
    with pytest.raises(ConfigError, match=r'tta must be 0, 1 or 2, got 3'): interpret_run(trained.run_dir, tta=3)

"""Regenerated CIFAR-10-C: each corruption on images whose right answer is known (the noise's stated standard deviation,
the brightness shift, JPEG's quality in its quantisation tables, pixelate's size, a blurred impulse), seeding, and
`robustness` on a finished run: its files, its labels and its refusals."""
import colorsys
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_fast import corruptions as C
from cifar_fast.errors import ConfigError


def gray(v: int, n: int = 64) -> np.ndarray: return np.full((n, 32, 32, 3), v, np.uint8)


def f(x): return x.astype(np.float64) / 255


@pytest.mark.parametrize('s', C.SEVERITIES)
def test_gaussian_noise_has_the_stated_std(s):
    d = f(C.corrupt(gray(128), 'gaussian_noise', s)) - 128 / 255
    # values are truncated to 1/255 steps: the mean drops by half a step, the std barely moves
    assert abs(d.std() - C.PARAMS['gaussian_noise'][s - 1]) < 0.003
    assert abs(d.mean() + 0.5 / 255) < 0.002


def test_shot_noise_is_poisson_at_the_stated_count():
    c, x = C.PARAMS['shot_noise'][4], 100 / 255  # 50 photons per unit: variance x / c
    y = f(C.corrupt(gray(100), 'shot_noise', 5))
    assert abs(y.var() - x / c) / (x / c) < 0.05
    assert abs(y.mean() - x) < 0.005


def test_speckle_noise_scales_with_the_pixel():
    y = f(C.corrupt(gray(100), 'speckle_noise', 5)) - 100 / 255
    assert abs(y.std() / (100 / 255) - C.PARAMS['speckle_noise'][4]) < 0.005


def test_impulse_noise_sets_the_stated_fraction_to_black_or_white():
    y = C.corrupt(gray(128), 'impulse_noise', 5)
    hit = (y == 0) | (y == 255)  # the rest stays 128
    assert abs(hit.mean() - 0.07) < 0.003 and set(np.unique(y[~hit])) == {128}
    assert abs((y[hit] == 255).mean() - 0.5) < 0.03


@pytest.mark.parametrize('s', C.SEVERITIES)
def test_brightness_adds_to_a_gray_pixels_value(s):
    # a gray pixel has saturation 0: its HSV value, and every channel, rises by c (clipped), then is truncated
    y = C.corrupt(gray(128, 2), 'brightness', s)
    assert (y == int(min(128 / 255 + C.PARAMS['brightness'][s - 1], 1) * 255)).all()


def test_hsv_matches_the_standard_library():
    x = np.random.default_rng(0).random((200, 3))
    ours = C.rgb_to_hsv(x[None, None])[0, 0]
    assert np.allclose(ours, [colorsys.rgb_to_hsv(*p) for p in x])
    assert np.allclose(C.hsv_to_rgb(ours), x)


def test_contrast_keeps_each_channels_mean_and_scales_the_deviation():
    x = np.random.default_rng(1).integers(60, 200, (8, 32, 32, 3), dtype=np.uint8)
    y = f(C.corrupt(x, 'contrast', 2))
    m = f(x).mean(axis=(1, 2), keepdims=True)
    assert np.allclose(y, np.floor(((f(x) - m) * 0.5 + m) * 255) / 255)


def test_jpeg_uses_the_stated_quality():
    # libjpeg scales its base tables by 5000/q (q < 50) or 200 - 2q: the luminance DC entry is 16 at quality 50
    img = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for q in C.PARAMS['jpeg_compression']:
        scale = 5000 / q if q < 50 else 200 - 2 * q
        assert Image.open(io.BytesIO(C.jpeg_bytes(img, q))).quantization[0][0] == max(1, int((16 * scale + 50) // 100))
    assert C.corrupt(img[None], 'jpeg_compression', 5).shape == (1, 32, 32, 3)


def test_pixelate_block_sizes_and_a_flat_image():
    assert [C.pixelate_size(c) for c in C.PARAMS['pixelate']] == [30, 28, 27, 24, 20]
    assert (C.corrupt(gray(77, 2), 'pixelate', 5) == 77).all()
    checker = ((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8)[None, ..., None].repeat(3, -1)
    assert C.corrupt(checker, 'pixelate', 5).std() < 0.3 * checker.std()  # 1-pixel detail is averaged away


def test_gaussian_blur_of_an_impulse_is_the_gaussian():
    x = np.zeros((1, 32, 32, 3), np.uint8)
    x[0, 16, 16] = 255
    y = C.gaussian_blur(f(x).astype(np.float64), 1.0, None)[0, :, :, 0]
    k = np.exp(-np.arange(-4, 5) ** 2 / 2)  # sigma 1, truncated at 4 sigma, normalised
    assert np.allclose(y[12:21, 12:21], np.outer(k, k) / k.sum() ** 2)


def test_defocus_kernel_and_motion_blur_keep_a_flat_image_flat():
    for r, a in C.PARAMS['defocus_blur']: assert abs(C.disk_kernel(r, a).sum() - 1) < 1e-9
    for name in ('defocus_blur', 'motion_blur', 'zoom_blur', 'glass_blur', 'elastic_transform'):
        assert (np.abs(C.corrupt(gray(90, 4), name, 5).astype(int) - 89) <= 1).all(), name


def test_zoom_matches_scipy():
    from scipy import ndimage
    x = np.random.default_rng(3).random((2, 30, 30, 3))
    for z in (1.01, 1.13, 1.25): assert np.allclose(C._zoom_linear(x, z), ndimage.zoom(x, (1, z, z, 1), order=1))


def test_every_corruption_is_seeded_and_changes_the_images():
    x = np.random.default_rng(4).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    for name in C.available():
        a, b, c = C.corrupt(x, name, 3, seed=0), C.corrupt(x, name, 3, seed=0), C.corrupt(x, name, 3, seed=1)
        assert a.dtype == np.uint8 and a.shape == x.shape and (a == b).all(), name
        assert (a != x).any(), name
        if name not in ('brightness', 'contrast', 'saturate', 'jpeg_compression', 'pixelate', 'defocus_blur',
                        'gaussian_blur', 'zoom_blur'):  # the deterministic ones
            assert (a != c).any(), name


def test_unavailable_and_unknown_corruptions_are_refused():
    with pytest.raises(ConfigError, match='frost.*photographs'): C.corrupt(gray(1, 1), 'frost', 1)
    with pytest.raises(ConfigError, match='did you mean gaussian_noise'): C.corrupt(gray(1, 1), 'gausian_noise', 1)
    with pytest.raises(ConfigError, match='severity'): C.corrupt(gray(1, 1), 'fog', 6)
    assert 'frost' not in C.available() and len(C.available()) == 17


# ---- robustness on a run ----------------------------------------------------------------------------------------

def test_robustness_run_writes_its_report(finished_run, tmp_path):
    from cifar_fast.robustness import LABEL, robustness_run
    res = robustness_run(finished_run, n=30, corruptions=['gaussian_noise', 'contrast', 'frost'], severities=(1, 5),
                         out=tmp_path / 'rob')
    assert len(res['rows']) == 4 and res['n_per_cell'] == 30 and 'frost' in res['not_available']
    assert res['label'] == LABEL and 'regenerated' in LABEL
    assert {'robustness.json', 'robustness.csv', 'heatmap.png', 'report.md'} <= set(res['files'])
    assert 'regenerated' in (tmp_path / 'rob' / 'report.md').read_text()
    assert 'not available: **frost**' in (tmp_path / 'rob' / 'report.md').read_text()
    summary = json.loads((finished_run / 'summary.json').read_text())
    assert res['clean']['n'] == summary['n_test']
    assert abs(res['clean']['accuracy'] - summary['test_accuracy']) < 1e-6  # the same weights, the same images
    assert res['clean']['from'] == 'predictions.npz'  # the run's one prediction, not a second pass
    (tmp_path / 'run').mkdir()
    for f in finished_run.iterdir():
        if f.is_file() and f.name != 'predictions.npz': shutil.copy(f, tmp_path / 'run' / f.name)
    again = robustness_run(tmp_path / 'run', n=30, corruptions=['contrast'], severities=(1,), figures=False)
    assert again['clean']['from'] == 'predicted now' and again['clean']['accuracy'] == res['clean']['accuracy']
    assert res['mean_corruption_accuracy'] == pytest.approx(np.mean([x['accuracy'] for x in res['rows']]))


def test_robustness_reads_published_files(finished_run, tmp_path):
    from cifar_fast.robustness import PUBLISHED, robustness_run
    c = tmp_path / 'CIFAR-10-C'
    c.mkdir()
    x = np.random.default_rng(0).integers(0, 256, (5 * 40, 32, 32, 3), dtype=np.uint8)
    np.save(c / 'gaussian_noise.npy', x)
    np.save(c / 'labels.npy', np.tile(np.repeat(np.arange(10), 4), 5).astype(np.uint8))
    res = robustness_run(finished_run, n=20, c_data=c, severities=(2,), out=tmp_path / 'o', figures=False)
    assert res['label'] == PUBLISHED and [r['corruption'] for r in res['rows']] == ['gaussian_noise']
    assert res['not_available']['fog'] == 'not in the published folder given'
    with pytest.raises(ConfigError, match='labels.npy'): robustness_run(finished_run, c_data=tmp_path / 'o')


def test_robustness_refusals(finished_run, tmp_path):
    from cifar_fast.robustness import robustness_run
    from cifar_fast.rundir import set_status
    with pytest.raises(ConfigError, match='did you mean'): robustness_run(finished_run, corruptions=['fogg'])
    run = tmp_path / 'run'
    shutil.copytree(finished_run, run)
    (run / 'summary.json').unlink()
    set_status(run, 'interrupted', epoch=1)
    with pytest.raises(ConfigError, match='not finished.*interrupted'): robustness_run(run)
    with pytest.raises(ConfigError, match='does not exist'): robustness_run(tmp_path / 'nope')


def test_robustness_cli(finished_run, tmp_path, capsys):
    from cifar_fast.compare import parser
    args = parser().parse_args(['robustness', str(finished_run), '--n', '20', '--corruption', 'fog',
                                '--severity', '3', '--out', str(tmp_path / 'r'), '--wandb'])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert 'regenerated' in out and 'fog' in out and 'mean corruption accuracy' in out
    wid = out.split('W&B: logged to run ')[1].split()[0]  # offline in tests (conftest)
    assert list(Path(os.environ['WANDB_DIR']).glob(f'wandb/offline-run-*-{wid}'))
    assert (tmp_path / 'r' / 'robustness.csv').read_text().startswith('# regenerated')

"""Bad input gets an error naming the file (or a counted skip/conversion), and nothing is written to disk."""
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from cifar_fast.data.cache import load_arrays
from cifar_fast.data.loaders import stratified_subset
from cifar_fast.data.sources import resolve_source
from cifar_fast.errors import ConfigError, DataError


@pytest.fixture
def data(synthetic, tmp_path):
    "A private copy of the synthetic dataset, free to damage."
    return shutil.copytree(synthetic, tmp_path / 'cifar10')


def _nothing_cached(cache):
    return not (cache / 'arrays').exists() or not [p for p in (cache / 'arrays').iterdir()]


def test_decoded_equals_pil(data, fresh_cache):
    a = load_arrays(resolve_source(data))
    i = a.files['test'].index('test/dog/0003.png')
    img = np.asarray(Image.open(data / 'test/dog/0003.png').convert('RGB'))
    assert np.array_equal(a.x['test'][i].transpose(1, 2, 0), img)
    assert a.classes[a.y['test'][i]] == 'dog'
    assert a.counts('train') == [20] * 10 and a.counts('test') == [10] * 10


@pytest.mark.parametrize('damage,match', [
    (lambda p: p.write_bytes(b''), 'cannot be decoded'),
    (lambda p: p.write_bytes(b'not an image at all'), 'cannot be decoded'),
    (lambda p: p.write_bytes(p.read_bytes()[:60]), 'cannot be decoded'),  # truncated PNG
    (lambda p: Image.new('RGB', (40, 30)).save(p, format='PNG'), '40×30, not 32×32'),
])
def test_bad_file_is_named_and_nothing_written(data, fresh_cache, damage, match):
    bad = data / 'train' / 'bird' / '0005.png'
    damage(bad)
    with pytest.raises(DataError, match=rf'train/bird/0005\.png: .*{match}') as e: load_arrays(resolve_source(data))
    assert 'skip_bad' in str(e.value)
    assert _nothing_cached(fresh_cache)


def test_non_image_file_and_skip_bad_counts(data, fresh_cache):
    (data / 'test' / 'cat' / 'notes.txt').write_text('hello')
    (data / 'train' / 'cat' / '0001.png').write_bytes(b'')
    with pytest.raises(DataError, match=r'(?s)2 file\(s\).*test/cat/notes\.txt'): load_arrays(resolve_source(data))
    with pytest.warns(UserWarning, match=r'Skipped 2 unusable'): a = load_arrays(resolve_source(data), skip_bad=True)
    assert a.counts('train')[3] == 19 and len(a.y['test']) == 100
    with pytest.raises(DataError, match='notes.txt'): load_arrays(resolve_source(data))  # cached, still refused


def test_grayscale_and_rgba_converted_with_one_warning(data, fresh_cache):
    Image.open(data / 'train/cat/0002.png').convert('L').save(data / 'train/cat/0002.png')
    Image.open(data / 'train/dog/0002.png').convert('RGBA').save(data / 'train/dog/0002.png')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        a = load_arrays(resolve_source(data))
    conv = [x for x in w if 'Converted 2 image(s)' in str(x.message)]
    assert len(conv) == 1 and a.counts('train') == [20] * 10
    i = a.files['train'].index('train/cat/0002.png')
    assert (a.x['train'][i][0] == a.x['train'][i][1]).all()  # grey replicated over RGB


def test_empty_class_folder(data, fresh_cache):
    for f in (data / 'test' / 'frog').iterdir(): f.unlink()
    with pytest.raises(DataError, match=r'test/frog.*empty'): load_arrays(resolve_source(data))
    assert _nothing_cached(fresh_cache)


def test_class_sets_differ(data, fresh_cache):
    shutil.rmtree(data / 'test' / 'ship')
    with pytest.raises(DataError, match=r"only in train: \['ship'\]"): load_arrays(resolve_source(data))


def test_labels_txt_must_agree(data, fresh_cache):
    (data / 'labels.txt').write_text('a\nb\n')
    with pytest.raises(DataError, match='labels.txt'): load_arrays(resolve_source(data))


def test_cache_is_used_second_time(data, fresh_cache, monkeypatch):
    load_arrays(resolve_source(data))
    import cifar_fast.data.cache as cache
    monkeypatch.setattr(cache, '_decode', lambda *a, **k: pytest.fail('decoded again despite a complete cache'))
    assert load_arrays(resolve_source(data)).meta['cache'].startswith(str(fresh_cache))


def test_stratified_subset_is_deterministic_and_balanced():
    import random
    y = np.repeat(np.arange(10), 50)
    random.seed(1); np.random.seed(1)
    a = stratified_subset(y, 95)
    random.seed(2); np.random.seed(2)
    assert np.array_equal(a, stratified_subset(y, 95))
    counts = np.bincount(y[a], minlength=10)
    assert counts.sum() == 95 and counts.max() - counts.min() <= 1
    for bad in (0, 501, 2.5, True):
        with pytest.raises(ConfigError, match='subset size'): stratified_subset(y, bad)

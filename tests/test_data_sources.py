"""Finding CIFAR-10 in every form users have it: folders, archives, torchvision pickles, env var, download."""
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cifar_fast.data.cache import load_arrays
from cifar_fast.data.sources import ENV_DATA, extract_archive, image_folder, resolve_source
from cifar_fast.errors import DataError


def _tgz(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, 'w:gz') as tf: tf.add(src, arcname='cifar10')
    return dest


def _zip(src: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, 'w') as zf:
        for f in sorted(src.rglob('*')): zf.write(f, Path('cifar10') / f.relative_to(src))
    return dest


def _pickles(arrays, dest: Path) -> Path:
    "torchvision's cifar-10-batches-py layout, from already decoded arrays (training set split over 5 batches)."
    dest.mkdir(parents=True)
    xs, ys = np.array_split(arrays.x['train'], 5), np.array_split(arrays.y['train'], 5)
    for i, (x, y) in enumerate(zip(xs, ys), 1):
        (dest / f'data_batch_{i}').write_bytes(pickle.dumps({'data': x.reshape(len(x), -1), 'labels': y.tolist()}))
    (dest / 'test_batch').write_bytes(pickle.dumps({'data': arrays.x['test'].reshape(len(arrays.x['test']), -1),
                                                    'labels': arrays.y['test'].tolist()}))
    (dest / 'batches.meta').write_bytes(pickle.dumps({'label_names': list(arrays.classes)}))
    return dest


def test_folder_and_one_level_down(synthetic):
    assert resolve_source(synthetic).kind == 'folder'
    src = resolve_source(synthetic.parent)  # the folder holding cifar10/
    assert src.kind == 'folder' and src.root == synthetic


@pytest.mark.parametrize('pack', [_tgz, _zip])
def test_archives_read_in_memory_and_extract_once(synthetic, tmp_path, fresh_cache, pack):
    arc = pack(synthetic, tmp_path / ('c.tgz' if pack is _tgz else 'c.zip'))
    src = resolve_source(arc)
    assert src.kind == 'archive'
    a, b = load_arrays(src), load_arrays(resolve_source(synthetic))
    assert a.classes == b.classes and all(np.array_equal(a.x[s], b.x[s]) for s in ('train', 'test'))
    folder = image_folder(src)  # extraction happens only when files are needed (DataBlock engine)
    assert (folder / 'train' / 'cat').is_dir() and folder.is_relative_to(fresh_cache)
    mtime = folder.stat().st_mtime_ns
    assert image_folder(resolve_source(arc)) == folder and folder.stat().st_mtime_ns == mtime


def test_pickles_folder_and_targz(synthetic, tmp_path, fresh_cache):
    ref = load_arrays(resolve_source(synthetic))
    folder = _pickles(ref, tmp_path / 'cifar-10-batches-py')
    with tarfile.open(tmp_path / 'cifar-10-python.tar.gz', 'w:gz') as tf: tf.add(folder, arcname=folder.name)
    for p in (tmp_path, folder, tmp_path / 'cifar-10-python.tar.gz'):
        src = resolve_source(p)
        assert src.kind == 'pickles'
        a = load_arrays(src)
        assert a.classes == ref.classes
        for s in ('train', 'test'): assert np.array_equal(a.x[s], ref.x[s]) and np.array_equal(a.y[s], ref.y[s])
    with pytest.raises(DataError, match='fast engine'): image_folder(resolve_source(folder))


def test_env_var_and_explicit_path_order(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DATA, str(synthetic))
    assert resolve_source().root == synthetic and ENV_DATA in resolve_source().origin
    other = shutil.copytree(synthetic, tmp_path / 'other')
    assert resolve_source(other).root == other  # an explicit path wins over the environment


def test_missing_path_says_what_was_tried(tmp_path):
    with pytest.raises(DataError, match=r'nope.*does not exist.*--data'): resolve_source(tmp_path / 'nope')


def test_not_an_archive_and_empty_archive(tmp_path):
    (tmp_path / 'x.txt').write_text('hi')
    with pytest.raises(DataError, match=r'x\.txt.*not an archive'): resolve_source(tmp_path / 'x.txt')
    (tmp_path / 'e.tgz').write_bytes(b'')
    with pytest.raises(DataError, match=r'e\.tgz.*empty'): resolve_source(tmp_path / 'e.tgz')


def test_truncated_archive_names_it(synthetic, tmp_path, fresh_cache):
    arc = _tgz(synthetic, tmp_path / 'c.tgz')
    data = arc.read_bytes()
    arc.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r'c\.tgz.*truncated or corrupt'): load_arrays(resolve_source(arc))
    assert not (fresh_cache / 'arrays').exists() or not any((fresh_cache / 'arrays').iterdir())


def test_folder_without_cifar_layout(tmp_path):
    (tmp_path / 'stuff').mkdir()
    with pytest.raises(DataError, match='neither train/ and test/'): resolve_source(tmp_path)


def test_interrupted_extraction_leaves_nothing_that_looks_complete(synthetic, tmp_path, fresh_cache, monkeypatch):
    arc = _tgz(synthetic, tmp_path / 'c.tgz')
    src = resolve_source(arc)

    def boom(self, *a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(tarfile.TarFile, 'extractall', boom)
    with pytest.raises(KeyboardInterrupt): extract_archive(arc, src.fingerprint)
    assert list((fresh_cache / 'extracted').iterdir()) == []  # neither a final folder nor a temporary one
    monkeypatch.undo()
    monkeypatch.setenv('CIFAR_FAST_CACHE', str(fresh_cache))
    assert (image_folder(src) / 'test').is_dir()


def test_offline_download_error_names_both_ways(monkeypatch):
    import fastai.data.external as ext
    monkeypatch.delenv(ENV_DATA, raising=False)

    def offline(*a, **k): raise ConnectionError('Network is unreachable')
    monkeypatch.setattr(ext, 'untar_data', offline)
    with pytest.raises(DataError) as e: resolve_source()
    msg = str(e.value)
    assert 'download' in msg and 'failed' in msg and '--data' in msg and ENV_DATA in msg

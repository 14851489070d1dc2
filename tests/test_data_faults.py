"""Faults around the decode cache and unusual images: a damaged cache entry is rebuilt with a warning; an
unwritable cache is one message with the fix and no leftovers; 16-bit images are scaled, not clipped."""
import errno
import json
import os
import shutil
import tarfile
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import NOBODY
from helpers import cli_in_child as _cli_in_child
from PIL import Image

from cifar_fast.data import cache
from cifar_fast.data.cache import load_arrays
from cifar_fast.data.sources import ENV_CACHE, image_folder, resolve_source
from cifar_fast.errors import DataError



@pytest.fixture
def data(synthetic, tmp_path):
    "A private copy of the synthetic dataset, free to damage."
    return shutil.copytree(synthetic, tmp_path / 'cifar10')


@pytest.fixture
def open_tmp(synthetic):
    "A folder any user may read, holding a copy of the synthetic set (pytest's own tmp folders are 0o700)."
    d = Path(tempfile.mkdtemp(prefix='cifar_fast_faults_'))
    d.chmod(0o755)
    shutil.copytree(synthetic, d / 'cifar10')
    yield d
    shutil.rmtree(d)


def _leftovers(root: Path) -> list:
    "Temporary files or folders left under `root` (the cache names them '.<entry>.tmp-*')."
    return [p for p in root.rglob('*') if '.tmp' in p.name] if root.is_dir() else []


def _one_line(text: str) -> str:
    "The CLI's output with rich's line wrapping undone."
    return ' '.join(text.split())


# ---- 1. a damaged cache entry is named, removed and rebuilt -----------------------------------------------------

def _half(p: Path): p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])


def _reshaped(p: Path):
    "A valid .npy of the same size whose shape disagrees with meta.json: (n, 3072) instead of (n, 3, 32, 32)."
    a = np.load(p)
    np.save(p, a.reshape(len(a), -1))


def _content(f: Path | bytes):
    "A cache file's bytes; for meta.json its fields bar the decode time, which differs from one decode to the next."
    raw = f if isinstance(f, bytes) else f.read_bytes()
    return {k: v for k, v in json.loads(raw).items() if k != 'decode_seconds'} if raw[:1] == b'{' else raw


@pytest.mark.parametrize('name,damage,why', [
    ('train_x.npy', _half, r'is 307,264 bytes; meta\.json says 614,528'),  # 200 images × 3072 B + 128 B header
    ('test_y.npy', lambda p: p.write_bytes(b''), r'is 0 bytes; meta\.json says 928'),  # 100 × 8 B + 128 B
    ('train_y.npy', lambda p: p.unlink(), 'is missing'),
    ('meta.json', _half, r'cannot be read \(JSONDecodeError'),
    ('files.json', lambda p: p.write_text('{}'), 'lists 0 train files; meta.json says 200'),
    ('test_x.npy', _reshaped, r'holds uint8 \(100, 3072\); meta\.json says uint8 \(100, 3, 32, 32\)'),
    ('train_y.npy', lambda p: np.save(p, np.load(p) + 10), r'holds labels outside 0\.\.9'),
])
def test_damaged_cache_entry_is_named_removed_and_rebuilt(data, fresh_cache, name, damage, why):
    src = resolve_source(data)
    fresh = load_arrays(src, num_workers=1)
    folder = Path(fresh.meta['cache'])
    good = (folder / name).read_bytes()
    damage(folder / name)
    with pytest.warns(UserWarning, match=rf'Cache file {folder / name} is damaged: {why}.*decoding .* again'):
        again = load_arrays(resolve_source(data), num_workers=1)
    assert again.classes == fresh.classes and again.files == fresh.files
    for sp in ('train', 'test'):
        assert np.array_equal(again.x[sp], fresh.x[sp]) and np.array_equal(again.y[sp], fresh.y[sp])
    i = again.files['train'].index('train/cat/0007.png')
    assert np.array_equal(again.x['train'][i].transpose(1, 2, 0),
                          np.asarray(Image.open(data / 'train/cat/0007.png').convert('RGB')))
    assert _content(folder / name) == _content(good)  # the bad file was replaced by a whole one
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the rebuilt entry is sound: read without any warning
        load_arrays(resolve_source(data), num_workers=1)
    assert _leftovers(fresh_cache) == []


# ---- 2. an unwritable cache is one message with the fix, and leaves nothing behind ------------------------------

def test_cache_path_is_a_file(data, tmp_path, monkeypatch, capsys):
    f = tmp_path / 'not_a_folder'
    f.write_text('x')
    monkeypatch.setenv(ENV_CACHE, str(f))
    with pytest.raises(DataError, match=rf'{f} is a file, not a folder\. Choose another folder: export {ENV_CACHE}='):
        load_arrays(resolve_source(data))
    arc = tmp_path / 'c.tgz'  # the archive extraction writes to the same cache
    with tarfile.open(arc, 'w:gz') as tf: tf.add(data / 'test' / 'cat', arcname='cifar10/train/cat')
    with pytest.raises(DataError, match=rf'{f} is a file, not a folder'): image_folder(resolve_source(arc))
    from cifar_fast.cli import main
    assert main(['data', '--data', str(data), '--out', str(tmp_path / 'grid.png')]) == 2
    out = _one_line(capsys.readouterr().out)
    assert f'error: Cannot write the cache folder {f} (${ENV_CACHE}): {f} is a file, not a folder' in out
    assert 'Traceback' not in out and f.read_text() == 'x' and not (tmp_path / 'grid.png').exists()


def test_cache_folder_read_only(open_tmp):
    ro = open_tmp / 'cache'
    ro.mkdir()
    root = os.geteuid() == 0
    if root:  # root ignores permissions: the child drops to nobody, who owns the read-only folder
        try: os.chown(ro, NOBODY, NOBODY)
        except OSError as e: pytest.skip(f'running as root and cannot hand the folder to uid {NOBODY}: {e}')
    ro.chmod(0o500)
    try:
        rc, out = _cli_in_child(['data', '--data', str(open_tmp / 'cifar10'), '--out', str(open_tmp / 'grid.png')],
                                {ENV_CACHE: str(ro)}, uid=NOBODY if root else None)
    finally: ro.chmod(0o700)
    out = _one_line(out)
    assert rc == 2, out
    assert f'{ro} is not writable (Permission denied). Choose another folder: export {ENV_CACHE}=' in out
    assert 'Traceback' not in out and list(ro.iterdir()) == []


def test_disk_full_while_writing(data, tmp_path):
    "EFBIG from a file-size limit stands in for a full disk: the cache write fails part-way, after the decode."
    c = tmp_path / 'cache'
    rc, out = _cli_in_child(['data', '--data', str(data), '--out', str(tmp_path / 'grid.png')], {ENV_CACHE: str(c)},
                            fsize=100_000)  # well under train_x.npy's 614,528 bytes, the first file written
    out = _one_line(out)
    assert rc == 2, out
    assert 'the file-size limit (ulimit -f) was reached while writing' in out and 'train_x.npy' in out
    assert 'Free space on that disk (or raise the limit), or choose a folder on a disk with room: export ' \
           f'{ENV_CACHE}=' in out
    assert 'Traceback' not in out
    assert _leftovers(c) == [] and list((c / 'arrays').iterdir()) == []


def test_disk_full_part_way(data, fresh_cache, monkeypatch):
    "ENOSPC after two files were written: the message says so, and the partial entry is removed."
    write = cache._write_synced
    def full(path, fill):
        if path.name != 'test_x.npy': return write(path, fill)
        path.write_bytes(b'\0' * 10)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(cache, '_write_synced', full)
    with pytest.raises(DataError, match=r'its disk is full while writing \S+test_x\.npy \(about 1 MB are needed\)\. '
                                        r'Free space on that disk'):
        load_arrays(resolve_source(data), num_workers=1)
    assert _leftovers(fresh_cache) == [] and list((fresh_cache / 'arrays').iterdir()) == []


# ---- 3. 16-bit images are scaled to 8 bits, and the warning says so ---------------------------------------------

def test_16bit_grayscale_scaled_not_clipped(data, fresh_cache):
    rng = np.random.default_rng(16)
    raw = {}
    for name in ('train/cat/0003.png', 'train/cat/0004.png', 'test/ship/0001.png'):
        v = rng.integers(0, 65536, (32, 32), dtype=np.uint16)
        v[0, :5] = [0, 128, 129, 385, 65535]  # around rounding boundaries: 128/257 < .5 < 129/257; 385/257 ≈ 1.498
        Image.fromarray(v).save(data / name)  # uint16 gives PIL mode 'I;16', saved as a 16-bit grayscale PNG
        with Image.open(data / name) as im: assert im.mode == 'I;16'
        raw[name] = v
    Image.open(data / 'train/dog/0002.png').convert('L').save(data / 'train/dog/0002.png')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        a = load_arrays(resolve_source(data), num_workers=1)
    for name, v in raw.items():
        sp = name.split('/')[0]
        img = a.x[sp][a.files[sp].index(name)]
        want = (2 * v.astype(np.int64) + 257) // 514  # round(v / 257) in integers: floor((2v + 257) / 514)
        assert list(img[0, 0, :5]) == [0, 0, 1, 1, 255]
        assert all(np.array_equal(img[c], want) for c in range(3))
        assert (img == 255).mean() < 0.01  # clipping made over 99% of these pixels 255
    msgs = [str(x.message) for x in w if 'Converted' in str(x.message)]
    assert len(msgs) == 1, msgs
    assert ('Converted 4 image(s)' in msgs[0] and '3 were 16-bit grayscale: scaled to 8 bits (÷257, rounded' in msgs[0]
            and '1 was 8-bit grayscale: copied to R, G and B' in msgs[0] and 'RGBA or palette' not in msgs[0])
    for sp in ('train', 'test'):  # every 8-bit image still decodes exactly as PIL does
        for f, img in zip(a.files[sp], a.x[sp]):
            if f in raw: continue
            assert np.array_equal(img.transpose(1, 2, 0), np.asarray(Image.open(data / f).convert('RGB')))


def test_32bit_images_refused_with_the_reason(data, fresh_cache):
    Image.fromarray(np.full((32, 32), 70_000, np.int32)).save(data / 'train/cat/0005.tif')  # PIL mode 'I'
    with pytest.raises(DataError, match=r"train/cat/0005\.tif: is a 32-bit integer image \(PIL mode 'I'\).*8-bit"):
        load_arrays(resolve_source(data), num_workers=1)

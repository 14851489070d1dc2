"""Data that arrives from elsewhere is data, never code, and cannot exhaust the machine: pickled batches run
no code, an image's size is checked before it is decoded, archives are streamed, and concurrent loaders decode once."""
import contextlib
import hashlib
import io
import os
import pathlib
import pickle
import shutil
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from cifar_fast.data import cifar_data
from cifar_fast.data.cache import load_arrays
from cifar_fast.data.sources import resolve_source
from cifar_fast.errors import DataError

BATCHES = ('data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5', 'test_batch')


def _one_line(text: str) -> str: return ' '.join(text.split())


# ---- 1. pickled batches never execute code ----------------------------------------------------------------------

class _Touch:
    "Unpickling this creates `marker`: the payload of a crafted batch."
    def __init__(self, marker: Path, how: str): self.marker, self.how = marker, how
    def __reduce__(self):
        if self.how == 'os.system': return os.system, (f'touch {self.marker}',)
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _write_batches(dest: Path, n: int = 12, protocol: int = pickle.DEFAULT_PROTOCOL, numpy1: bool = False,
                   evil: dict | None = None) -> dict:
    """torchvision's format, as cifar-10-python.tar.gz holds it: dicts with bytes keys b'data' (uint8 N×3072),
    b'labels' (a list of ints), b'filenames', b'batch_label'; batches.meta with b'label_names'. `numpy1` rewrites the
    module names to numpy 1.x's (the official files were written by it); `evil` maps a file name to a crafted
    payload. Returns the images (N,3,32,32) and labels per split."""
    dest.mkdir(parents=True)
    rng, ref = np.random.default_rng(24), {'train': ([], []), 'test': ([], [])}
    classes = [f'class{i}' for i in range(10)]
    def dump(name, obj):
        raw = pickle.dumps(obj, protocol=protocol)
        if numpy1: raw = raw.replace(b'numpy._core.', b'numpy.core.')  # protocol <= 3: names are plain text
        (dest / name).write_bytes(raw)
    dump('batches.meta', {b'label_names': [c.encode() for c in classes], b'num_cases_per_batch': n, b'num_vis': 3072})
    for name in BATCHES:
        x, y = rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.permutation(np.arange(n) % 10).tolist()
        sp = 'test' if name == 'test_batch' else 'train'
        ref[sp][0].append(x.reshape(n, 3, 32, 32)); ref[sp][1].extend(y)
        batch = {b'batch_label': name.encode(), b'labels': y, b'data': x,
                 b'filenames': [f'{name}_{i}.png'.encode() for i in range(n)]}
        dump(name, {**batch, b'data': evil[name]} if evil and name in evil else batch)
    if evil and 'batches.meta' in evil: dump('batches.meta', {b'label_names': evil['batches.meta']})
    return {sp: (np.concatenate(xs), np.array(ys)) for sp, (xs, ys) in ref.items()}


def _tar(folder: Path) -> Path:
    arc = folder.parent / 'cifar-10-python.tar.gz'
    with tarfile.open(arc, 'w:gz') as tf: tf.add(folder, arcname='cifar-10-batches-py')
    return arc


@pytest.mark.parametrize('how', ['os.system', 'Path.touch'])
@pytest.mark.parametrize('where', ['data_batch_3', 'batches.meta'])
def test_crafted_batch_runs_no_code(tmp_path, fresh_cache, capsys, how, where):
    marker = tmp_path / 'MARKER'
    folder = tmp_path / 'cifar-10-batches-py'
    _write_batches(folder, evil={where: _Touch(marker, how)})
    arc = _tar(folder)
    for src, shown in ((folder, folder / where), (arc, f'{arc}:{where}')):
        with pytest.raises(DataError, match=rf'{shown} is not a CIFAR batch and was not loaded'):
            cifar_data(src)
        assert not marker.exists()
        from cifar_fast.cli import main
        assert main(['data', '--data', str(src), '--out', str(tmp_path / 'grid.png')]) == 2
        out = _one_line(capsys.readouterr().out)
        assert f'error: {shown} is not a CIFAR batch and was not loaded' in out and 'Traceback' not in out
        assert not marker.exists() and not (tmp_path / 'grid.png').exists()
    assert not (fresh_cache / 'arrays').is_dir() or list((fresh_cache / 'arrays').iterdir()) == []


@pytest.mark.parametrize('protocol,numpy1', [(2, True), (2, False), (4, False), (5, False)])
def test_genuine_format_loads_and_says_not_official(tmp_path, fresh_cache, protocol, numpy1):
    "numpy 1.x names (the official files') and 2.x's, protocols 2 (bytes via _codecs.encode) to 5 (_frombuffer)."
    folder = tmp_path / 'cifar-10-batches-py'
    ref = _write_batches(folder, protocol=protocol, numpy1=numpy1)
    if numpy1: assert b'numpy.core.multiarray' in (folder / 'test_batch').read_bytes()
    for src in (folder, _tar(folder), folder):  # the folder twice: the second time from the cache, still said
        with pytest.warns(UserWarning, match=r'batches\.meta, data_batch_1, .*test_batch are not the official files'):
            a = load_arrays(resolve_source(src))
        assert a.classes == tuple(f'class{i}' for i in range(10)) and a.meta['unofficial'][0] == 'batches.meta'
        for sp in ('train', 'test'):
            assert np.array_equal(a.x[sp], ref[sp][0]) and np.array_equal(a.y[sp], ref[sp][1])


def test_official_md5_says_nothing(tmp_path, fresh_cache, monkeypatch):
    "Files whose MD5 is the published one load without a word (here our files' MD5s stand in for the published ones)."
    from cifar_fast.data import pickles as P
    folder = tmp_path / 'cifar-10-batches-py'
    _write_batches(folder)
    md5 = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in (*BATCHES, 'batches.meta')}
    assert set(md5) == set(P.OFFICIAL_MD5)
    monkeypatch.setattr(P, 'OFFICIAL_MD5', md5)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert load_arrays(resolve_source(folder)).meta['unofficial'] == []


def test_official_md5_are_torchvisions():
    "The table is torchvision's (when installed), the check it runs before unpickling."
    from cifar_fast.data import pickles as P
    cifar = pytest.importorskip('torchvision.datasets.cifar')
    tv = {n: m for n, m in cifar.CIFAR10.train_list + cifar.CIFAR10.test_list}
    tv[cifar.CIFAR10.meta['filename']] = cifar.CIFAR10.meta['md5']
    assert P.OFFICIAL_MD5 == tv


def test_batch_not_shaped_like_cifar(tmp_path, fresh_cache):
    folder = tmp_path / 'cifar-10-batches-py'
    _write_batches(folder, evil={'data_batch_2': np.zeros((12, 3072), np.float32)})
    with pytest.raises(DataError, match=r"data_batch_2: 'data' is float32 \(12, 3072\), expected a uint8 array"):
        load_arrays(resolve_source(folder))


# ---- 2. an image's size is checked from its header, before any pixel is decoded ----------------------------------

def test_huge_image_refused_before_decoding(synthetic, tmp_path, fresh_cache, monkeypatch):
    "A 105 KB PNG declaring 6000×6000 (108 MB of pixels) is refused from its header: PIL's `load` never runs on it."
    from PIL import Image, ImageFile
    data = shutil.copytree(synthetic, tmp_path / 'cifar10')
    Image.new('RGB', (6000, 6000)).save(data / 'train/cat/0003.png')
    Image.open(data / 'train/dog/0001.png').save(data / 'train/dog/0001.png')  # a 32×32 one, rewritten
    (data / 'train/dog/0002.png').write_bytes((data / 'train/dog/0002.png').read_bytes()[:200])  # a truncated one
    loaded, load = [], ImageFile.ImageFile.load
    def counting(im): loaded.append(im.size); return load(im)
    monkeypatch.setattr(ImageFile.ImageFile, 'load', counting)
    with pytest.raises(DataError, match=r'(?s)2 file\(s\).*train/cat/0003\.png: is 6000×6000, not 32×32.*'
                                        r'train/dog/0002\.png: cannot be decoded'):
        load_arrays(resolve_source(data), num_workers=1)  # in this process, where the counter is
    assert (6000, 6000) not in loaded and (32, 32) in loaded  # the counter saw the others (and the truncated one)


# ---- 3. archives are streamed, not decompressed whole in memory ---------------------------------------------------

def test_archive_listing_streams(tmp_path):
    """Reading a tar.gz's members holds about their bytes: tracemalloc's peak stays under those plus half the tar,
    where decompressing it whole held the compressed file, the whole tar and a copy of every member."""
    import gzip
    import tracemalloc
    from cifar_fast.data.sources import list_archive
    # Random bytes: incompressible, so that each read of the stream inflates to about its own size. (Zeros inflate
    # 1000-fold: one 16 KB read of tarfile's stream would hold the whole 3 MB tar.)
    arc, blob = tmp_path / 'c.tgz', np.random.default_rng(3).bytes(100_000)
    with tarfile.open(arc, 'w:gz') as tf:
        for sp, n in (('train', 2), ('test', 1)):
            for c in range(10):
                for i in range(n):
                    info = tarfile.TarInfo(f'cifar10/{sp}/class{c}/{i}.png'); info.size = len(blob)
                    tf.addfile(info, io.BytesIO(blob))
    tar_size, payload = len(gzip.decompress(arc.read_bytes())), 30 * len(blob)
    tracemalloc.start()
    try:
        classes, listing = list_archive(arc)
        peak = tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()
    assert len(listing) == 30 and all(b == blob for *_, b in listing) and len(classes) == 10
    assert peak < payload + tar_size / 2, f'peak {peak:,} B; members {payload:,} B, tar {tar_size:,} B'


# ---- 4. loaders starting together decode once ---------------------------------------------------------------------

def _load_in_child(data: Path, barrier, out: Path):
    "A child process: wait for the other, load `data`, save what it got."
    barrier.wait(timeout=60)
    a = load_arrays(resolve_source(data), num_workers=1, progress=False)
    np.savez(out, *(a.x[sp] for sp in ('train', 'test')), *(a.y[sp] for sp in ('train', 'test')))


def test_concurrent_loaders_decode_once(synthetic, tmp_path, fresh_cache, monkeypatch):
    "Two processes load one source into an empty cache at once: exactly one decodes, both get the same arrays."
    import multiprocessing as mp
    from cifar_fast.data import cache
    decodes, decode = tmp_path / 'decodes', cache._decode
    def counted(*a, **k):  # forked children inherit this: each decode appends a line, then takes a second
        with open(decodes, 'a') as f: f.write(f'{os.getpid()}\n')
        time.sleep(1)  # without the lock the other loader finds no cache in this second, and decodes too
        return decode(*a, **k)
    monkeypatch.setattr(cache, '_decode', counted)
    ctx = mp.get_context('fork')
    barrier = ctx.Barrier(2)
    kids = [ctx.Process(target=_load_in_child, args=(synthetic, barrier, tmp_path / f'{i}.npz')) for i in range(2)]
    for k in kids: k.start()
    for k in kids: k.join(60)
    assert [k.exitcode for k in kids] == [0, 0]
    assert len(decodes.read_text().split()) == 1
    a, b = np.load(tmp_path / '0.npz'), np.load(tmp_path / '1.npz')
    assert all(np.array_equal(a[k], b[k]) for k in a.files) and a['arr_0'].shape == (200, 3, 32, 32)


def test_lock_released_when_holder_dies_even_with_children_alive(tmp_path):
    "A holder killed while its forked decode worker lives on: the lock is free (the worker closed its copy)."
    import fcntl
    import signal
    from cifar_fast.data.lock import file_lock
    path, r, w = tmp_path / 'x.lock', *os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder: takes the lock, forks a long-lived worker, reports its pid, waits to be killed
        try:
            with file_lock(path):
                worker = os.fork()
                if worker == 0: time.sleep(30); os._exit(0)
                os.write(w, f'{worker}\n'.encode()); time.sleep(30)
        finally: os._exit(1)
    worker = int(os.read(r, 64).split()[0])
    try:
        with open(path) as f:
            with pytest.raises(BlockingIOError): fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held
            os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free, though the worker still runs
            os.kill(worker, 0)
    finally:
        os.kill(worker, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError): os.waitpid(worker, 0)


def test_unwritable_cache_still_reads_its_entry(synthetic, tmp_path, fresh_cache):
    "A cache where no lock file can be made (here locks/ is a file) still serves and writes entries."
    (fresh_cache).mkdir(parents=True)
    (fresh_cache / 'locks').write_text('not a folder')
    a = load_arrays(resolve_source(synthetic), num_workers=1)
    assert Path(a.meta['cache']).is_relative_to(fresh_cache) and 'decode_seconds' in a.meta
    assert np.array_equal(load_arrays(resolve_source(synthetic), num_workers=1).x['test'], a.x['test'])

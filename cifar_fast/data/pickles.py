"""torchvision's CIFAR-10 batches (cifar-10-batches-py, as a folder or its tar.gz), read as data, never as code.

A pickle can call any function it names, and a run folder from elsewhere can point `data.source` at a folder of
crafted "batches". So batches are read by an unpickler that admits only what CIFAR batches hold (numpy arrays,
lists, dicts, strings, bytes and numbers) and checked against the MD5s torchvision publishes."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import warnings
from pathlib import PurePosixPath

import numpy as np

from ..errors import DataError
from .sources import PICKLE_BATCHES, CifarSource, unreadable_archive

META = 'batches.meta'
# MD5 of each file of cifar-10-python.tar.gz, as torchvision checks before unpickling: `CIFAR10.train_list`,
# `test_list` and `meta` in torchvision/datasets/cifar.py (copied from torchvision 0.29.1's, installed in .venv).
OFFICIAL_MD5 = {'data_batch_1': 'c99cafc152244af753f735de768cd75f', 'data_batch_2': 'd4bba439e000b95fd0a9bffe97cbabec',
                'data_batch_3': '54ebc095f3ab1f0389bbae665268c751', 'data_batch_4': '634d18415352ddfa80567beed471001a',
                'data_batch_5': '482c414d41f54cd18b22e5b47cb7c3cb', 'test_batch': '40351d587109b95175f43aff81a1287e',
                META: '5ff9c542aee3614f3951f8cda6e48888'}
OFFICIAL_URL = 'https://www.cs.toronto.edu/~kriz/cifar.html'


def _latin1(s, encoding='latin1'):
    "What Python 3 pickles (protocols 0-2) call to rebuild `bytes`: `_codecs.encode(text, 'latin1')`, and only that."
    if not isinstance(s, str) or encoding != 'latin1': raise pickle.UnpicklingError('_codecs.encode other than latin1')
    return s.encode('latin1')


def _admitted() -> dict:
    """(module, name) -> object for every global a numpy-array pickle names. The callables are taken from numpy
    itself (what its own `__reduce__` returns), so the same table serves numpy 1.x (`numpy.core.*`), whose pickles the
    official files are, and numpy 2.x (`numpy._core.*`). `_frombuffer` is protocol 5's form, `scalar` a numpy number."""
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.int64(0).__reduce__()[0]
    out = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype, ('_codecs', 'encode'): _latin1}
    for core in ('numpy.core', 'numpy._core'):
        out[(f'{core}.multiarray', '_reconstruct')] = reconstruct
        out[(f'{core}.multiarray', 'scalar')] = scalar
        out[(f'{core}.numeric', '_frombuffer')] = frombuffer
    return out


class _Refused(Exception):
    "A pickle named a global that CIFAR batches never hold."


class _BatchUnpickler(pickle.Unpickler):
    "An unpickler that builds numpy arrays and plain containers, and refuses every other global before it is used."
    _ok = None

    def find_class(self, module, name):
        if _BatchUnpickler._ok is None: _BatchUnpickler._ok = _admitted()
        try: return self._ok[(module, name)]
        except KeyError: raise _Refused(f'{module}.{name}') from None


def loads(raw: bytes, where: str):
    "Unpickle one batch read from `where` (for messages) with the restricted unpickler; a `DataError` if it is refused."
    try: return _BatchUnpickler(io.BytesIO(raw), encoding='latin1').load()  # latin1: the official files are Py2's
    except _Refused as e:
        raise DataError(f"{where} is not a CIFAR batch and was not loaded: it asks to call {e}, which a CIFAR batch "
                        f"never holds (a pickle can run any code; only numpy arrays, lists, dicts, strings and numbers "
                        f"are read). Delete it and get the official files from {OFFICIAL_URL}, or point --data at "
                        f"another copy.") from None
    except Exception as e:  # truncated or not a pickle at all: pickle raises many types
        raise DataError(f"{where} cannot be read as a CIFAR batch ({type(e).__name__}: {e}).") from e


def read_pickles(src: CifarSource):
    """(classes, x, y, files, unofficial) from torchvision's batches: five training batches, one test batch, label
    names in batches.meta. `unofficial` lists the files whose MD5 differs from the published one (they still load)."""
    raw = _read_files(src)
    unofficial = [n for n in (META, *PICKLE_BATCHES) if hashlib.md5(raw[n]).hexdigest() != OFFICIAL_MD5[n]]
    where = (lambda n: f'{src.root / n}') if src.root.is_dir() else (lambda n: f'{src.root}:{n}')
    meta = _keys_as_str(loads(raw.pop(META), where(META)), where(META))
    names = meta.get('label_names')
    if not isinstance(names, list) or not all(isinstance(c, (str, bytes)) for c in names):
        raise DataError(f"{where(META)} holds no list of class names under 'label_names'; it is not CIFAR's.")
    classes = [c if isinstance(c, str) else c.decode() for c in names]
    x, y, files = {}, {}, {}
    for sp, batch_names in (('train', PICKLE_BATCHES[:5]), ('test', PICKLE_BATCHES[5:])):
        batches = [(n, _check_batch(loads(raw.pop(n), where(n)), where(n), len(classes))) for n in batch_names]
        rows = np.concatenate([b['data'] for _, b in batches])  # a row is 1024 R, then 1024 G, then 1024 B values
        x[sp] = np.ascontiguousarray(rows.reshape(-1, 3, 32, 32))
        y[sp] = np.concatenate([np.asarray(b['labels'], dtype=np.int64) for _, b in batches])
        files[sp] = [f'{n}:{i}' for n, b in batches for i in range(len(b['labels']))]
    return classes, x, y, files, unofficial


def warn_unofficial(origin: str, unofficial: list, stacklevel: int = 2):
    "Say (a warning) that the batches are not the published files, though they were read safely."
    if unofficial:
        warnings.warn(f"CIFAR-10 source {origin}: {', '.join(unofficial)} are not the official files (their MD5 "
                      f"differs from the one torchvision publishes); read them as data only (no code ran). Use them if "
                      f"you made them; otherwise get the official ones from {OFFICIAL_URL}.", stacklevel=stacklevel + 1)


def _read_files(src: CifarSource) -> dict:
    "The bytes of batches.meta and the six batches, from the folder or streamed once through the tar.gz."
    wanted, raw = {META, *PICKLE_BATCHES}, {}
    if src.root.is_dir():
        for n in sorted(wanted):
            try: raw[n] = (src.root / n).read_bytes()
            except FileNotFoundError: pass
    else:
        try:
            with tarfile.open(src.root, 'r|*') as tf:  # a stream: one pass, one member in memory at a time
                for m in tf:
                    n = PurePosixPath(m.name).name
                    if m.isfile() and n in wanted and n not in raw: raw[n] = tf.extractfile(m).read()
        except (tarfile.TarError, EOFError, OSError) as e: raise unreadable_archive(src.root, e) from e
    missing = sorted(wanted - raw.keys())
    if missing:
        verb = 'is' if len(missing) == 1 else 'are'
        raise DataError(f"CIFAR-10 source {src.origin}: {', '.join(missing)} {verb} missing.")
    return raw


def _keys_as_str(d, where: str) -> dict:
    "A batch's dict with str keys: Python 2 pickles read as latin1 give str, Python 3 ones written with b'data' bytes."
    if not isinstance(d, dict): raise DataError(f"{where} holds a {type(d).__name__}, not a CIFAR batch (a dict).")
    return {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in d.items()}


def _check_batch(b, where: str, n_classes: int) -> dict:
    "A batch as CIFAR's: uint8 data of shape (N, 3072) and N integer labels within the classes."
    b = _keys_as_str(b, where)
    data, labels = b.get('data'), b.get('labels')
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        got = f'{data.dtype} {data.shape}' if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' is {got}, expected a uint8 array of N×3072 values (3×32×32).")
    if data.shape[1:] != (3072,):
        raise DataError(f"{where} holds images of shape {data.shape[1:]}, expected 3072 values (3×32×32).")
    lab = np.asarray(labels) if isinstance(labels, (list, np.ndarray)) else None
    ints = lab is not None and lab.shape == (len(data),) and np.issubdtype(lab.dtype, np.integer)
    if not ints or (len(lab) and not (0 <= lab.min() and lab.max() < n_classes)):
        raise DataError(f"{where}: 'labels' must be {len(data)} integers in 0..{n_classes - 1}, one per image.")
    return b

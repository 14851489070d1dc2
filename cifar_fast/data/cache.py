"""Decode CIFAR-10 once into uint8 arrays, validated and cached on disk by source fingerprint (written atomically,
checked when read: a damaged entry is reported, removed and rebuilt)."""
from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import shutil
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .lock import file_lock
from .pickles import read_pickles, warn_unofficial
from .sources import SPLITS, CifarSource, cache_dir, cache_error, list_images, make_temp_dir

CACHE_VERSION = 3  # bump when the cached layout or the decoding changes (2: 16-bit images scaled, file sizes in meta;
# 3: pickles read by the restricted unpickler, meta says which are not the official files)
IMG_SHAPE = (3, 32, 32)
_CHUNK = 1000  # images per worker task: big enough to amortise IPC, small enough to balance two workers


@dataclass
class CifarArrays:
    "CIFAR-10 decoded: per split, images as uint8 (N,3,32,32) in canonical order (class, then file name)."
    classes: tuple
    x: dict  # split -> np.ndarray uint8 (N,3,32,32)
    y: dict  # split -> np.ndarray int64 (N,)
    files: dict  # split -> list of names relative to the dataset root ('train/cat/0001.jpg' or 'test_batch:17')
    meta: dict = field(default_factory=dict)

    def counts(self, split: str) -> list[int]:
        "Images per class in `split`, in class order."
        return np.bincount(self.y[split], minlength=len(self.classes)).tolist()


def load_arrays(src: CifarSource, skip_bad: bool = False, num_workers: int | None = None,
                progress: bool = True) -> CifarArrays:
    """Decoded arrays for `src`: from the cache when present, else decoded (in parallel) and cached.
    Corrupt, non-image or non-32×32 files raise a `DataError` naming them, unless `skip_bad`, which drops them
    with one warning; images that are not 8-bit RGB are converted to RGB with one warning saying which and how.
    A cache that cannot be written (a file, read-only, disk full) raises a `DataError` saying what to do."""
    folder = cache_dir() / 'arrays' / f'v{CACHE_VERSION}-{src.fingerprint}'
    # One decoder per entry at a time: N ranks (or two runs) starting together wait for the first, then read its
    # cache. The lock lives in locks/, so arrays/ holds entries only; it never fails a load (see `file_lock`).
    with file_lock(cache_dir() / 'locks' / f'arrays-{folder.name}.lock'):
        arrays = _read_cache(folder, src) if folder.is_dir() else None
        if arrays is None:
            tmp = make_temp_dir(folder)  # before the decode: an unwritable cache fails in a second, not after a minute
            try:
                arrays = _decode(src, num_workers, progress)
                _check_bad(arrays, skip_bad)  # refuse before anything is written
                _write_cache(arrays, tmp, folder)
            finally: shutil.rmtree(tmp, ignore_errors=True)
    _check_bad(arrays, skip_bad)
    _warn_once(arrays.meta, skip_bad)
    return arrays


def _check_bad(arrays: CifarArrays, skip_bad: bool):
    "Refuse unusable files unless `skip_bad`; refuse a class left with no images either way."
    meta, bad = arrays.meta, arrays.meta['bad']
    if bad and not skip_bad:
        shown = '\n'.join(f'  {name}: {why}' for name, why in bad[:10])
        more = f'\n  … and {len(bad) - 10} more' if len(bad) > 10 else ''
        raise DataError(f"{len(bad)} file(s) in {meta['source']} cannot be used:\n{shown}{more}\n"
                        f"Fix or remove them, or pass skip_bad=True (--data.skip_bad true) to skip them.")
    for sp in SPLITS:
        empty = [c for c, n in zip(arrays.classes, arrays.counts(sp)) if n == 0]
        if empty: raise DataError(f"CIFAR-10 source {meta['source']}: {sp}/ has no usable images for class(es) "
                                  f"{', '.join(empty)}.")


def _warn_once(meta: dict, skip_bad: bool):
    warn_unofficial(meta['source'], meta.get('unofficial', []), stacklevel=3)
    if meta['bad'] and skip_bad:
        warnings.warn(f"Skipped {len(meta['bad'])} unusable file(s) in {meta['source']} (skip_bad=True); "
                      f"first: {meta['bad'][0][0]} ({meta['bad'][0][1]}).", stacklevel=3)
    if meta['converted']:
        kinds = '; '.join(f"{n} {'was' if n == 1 else 'were'} {_HOW.get(mode, (f'PIL mode {mode}',))[0]}: "
                          f"{_HOW.get(mode, ('', 'converted by PIL'))[1]}" for mode, n in meta['conversions'].items())
        warnings.warn(f"Converted {meta['converted']} image(s) in {meta['source']} to RGB. {kinds}. "
                      f"First: {meta['first_converted']}.", stacklevel=3)


# ---- decoding -------------------------------------------------------------------------------------------------

def _decode(src: CifarSource, num_workers: int | None, progress: bool) -> CifarArrays:
    t0 = time.perf_counter()
    unofficial = []
    if src.kind == 'pickles': (classes, x, y, files, unofficial), bad, conv = read_pickles(src), [], []
    else:
        classes, listing = list_images(src)
        classes, x, y, files, bad, conv = _decode_listing(src, classes, listing, num_workers, progress)
    meta = dict(version=CACHE_VERSION, source=src.origin, kind=src.kind, fingerprint=src.fingerprint,
                classes=list(classes), n={s: len(y[s]) for s in SPLITS}, bad=bad, converted=len(conv),
                conversions=dict(Counter(mode for _, mode in conv)), first_converted=conv[0][0] if conv else None,
                unofficial=unofficial, decode_seconds=round(time.perf_counter() - t0, 2))
    return CifarArrays(tuple(classes), x, y, files, meta)


def _decode_listing(src, classes, listing, num_workers, progress):
    "Decode every (split, class index, name, payload) in parallel; payload is a Path or the file's bytes."
    global _PAYLOADS
    _PAYLOADS = [p for *_, p in listing]  # forked workers inherit this list: no pickling of inputs
    chunks = [(i, min(i + _CHUNK, len(listing))) for i in range(0, len(listing), _CHUNK)]
    nw = max(1, min(num_workers if num_workers is not None else (os.cpu_count() or 1), len(chunks)))
    results = []
    with _progress(progress, f'Decoding {len(listing):,} images from {src.origin}', len(listing)) as advance:
        if nw == 1 or 'fork' not in mp.get_all_start_methods():
            for c in chunks: results.append(_decode_chunk(c)); advance(c[1] - c[0])
        else:
            with mp.get_context('fork').Pool(nw) as pool:
                for c, r in zip(chunks, pool.imap(_decode_chunk, chunks)): results.append(r); advance(c[1] - c[0])
    _PAYLOADS = None
    imgs = np.concatenate([r[0] for r in results]) if results else np.zeros((0, *IMG_SHAPE), np.uint8)
    status = [s for r in results for s in r[1]]
    ok = np.array([_usable(s) for s in status], dtype=bool)
    bad = [[name, s] for (_, _, name, _), s in zip(listing, status) if not _usable(s)]
    conv = [(name, s[len('converted:'):]) for (_, _, name, _), s in zip(listing, status) if s.startswith('converted:')]
    kept = [e for e, k in zip(listing, ok) if k]  # `imgs` holds the decodable images only, in listing order
    split_of = np.array([e[0] for e in kept])
    x, y, files = {}, {}, {}
    for sp in SPLITS:
        x[sp] = np.ascontiguousarray(imgs[split_of == sp])
        y[sp] = np.array([e[1] for e in kept if e[0] == sp], dtype=np.int64)
        files[sp] = [e[2] for e in kept if e[0] == sp]
    return classes, x, y, files, bad, conv


_PAYLOADS = None


def _decode_chunk(bounds):
    "Worker: decode images [lo, hi) of `_PAYLOADS` to (n,3,32,32) uint8 and one status string per image."
    lo, hi = bounds
    out, status = np.zeros((hi - lo, *IMG_SHAPE), np.uint8), []
    for i in range(lo, hi):
        arr, st = decode_image(_PAYLOADS[i])
        if arr is not None: out[i - lo] = arr.transpose(2, 0, 1)
        status.append(st)
    keep = np.array([_usable(s) for s in status], dtype=bool)
    return out[keep], status


def _usable(status: str) -> bool: return status == 'ok' or status.startswith('converted:')


# PIL mode -> (what the image was, how it became RGB), for the conversion warning. 'I;16' stands for every 16-bit
# grayscale mode; the others are PIL's own `convert('RGB')`, which drops alpha without blending it.
_HOW = {'I;16': ('16-bit grayscale', 'scaled to 8 bits (÷257, rounded: 65535 -> 255) and copied to R, G and B'),
        'L': ('8-bit grayscale', 'copied to R, G and B'), '1': ('1-bit', 'mapped to 0/255 and copied to R, G and B'),
        'LA': ('grayscale with alpha', 'alpha dropped (not blended), grey copied to R, G and B'),
        'RGBA': ('RGBA', 'alpha dropped (not blended)'), 'RGBX': ('RGBX', 'padding channel dropped'),
        'P': ('palette images', 'colours looked up in the palette'),
        'PA': ('palette images with alpha', 'colours looked up in the palette, alpha dropped (not blended)'),
        'CMYK': ('CMYK', "converted with PIL's formula (no colour profile)"),
        'YCbCr': ('YCbCr', "converted with PIL's formula")}


def decode_image(payload) -> tuple[np.ndarray | None, str]:
    """Decode a path or bytes to HWC uint8 RGB and a status: 'ok', 'converted:<PIL mode>', or why it is unusable.
    8-bit images are decoded exactly as PIL (and fastai's `PILImage.create`) do. 16-bit grayscale, which PIL's
    `convert('RGB')` would clip to 255 above 255, is scaled to 8 bits as round(v / 257), the inverse of the 8->16
    bit expansion v * 257; 32-bit integer and float images are refused (their range is unknown)."""
    try:
        with Image.open(io.BytesIO(payload) if isinstance(payload, bytes) else payload) as im:
            # The size comes from the header (`open` is lazy): a small file declaring a huge image (a decompression
            # bomb) is refused before one pixel is decoded, in each of the forked decoders.
            if im.size != (32, 32): return None, f'is {im.size[0]}×{im.size[1]}, not 32×32'
            im.load()  # surfaces truncated files, which PIL otherwise only notices on first pixel access
            if im.mode.startswith('I;16') or (im.mode == 'I' and im.format == 'PNG'):  # older PIL opened them as 'I'
                grey = np.rint(np.asarray(im).clip(0, 65535) / 257).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2), 'converted:I;16'
            if im.mode in ('I', 'F'):
                return None, (f"is a 32-bit {'integer' if im.mode == 'I' else 'float'} image (PIL mode {im.mode!r}) "
                              f"whose range is unknown; save it as 8-bit RGB (or 16-bit grayscale PNG)")
            return np.asarray(im.convert('RGB')), 'ok' if im.mode == 'RGB' else f'converted:{im.mode}'
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError… for bad files; all mean "unusable"
        return None, f'cannot be decoded as an image ({type(e).__name__}: {e})'


# ---- the cache on disk ----------------------------------------------------------------------------------------

def _write_cache(arrays: CifarArrays, tmp: Path, folder: Path):
    """Write into `tmp`, a new sibling of `folder`, and rename it into place: a half-written cache never looks complete.
    Each file is flushed to disk before the rename, so a crash leaves either no entry or a whole one; meta.json
    records every file's size, which `_read_cache` checks."""
    sizes, need = {}, sum(a.nbytes for d in (arrays.x, arrays.y) for a in d.values())
    out = tmp
    try:
        for sp in SPLITS:
            for name, a in ((f'{sp}_x.npy', arrays.x[sp]), (f'{sp}_y.npy', arrays.y[sp])):
                out = tmp / name; sizes[name] = _write_synced(out, lambda f: _save_npy(f, a))
        out = tmp / 'files.json'; _write_synced(out, lambda f: f.write(json.dumps(arrays.files).encode()))
        arrays.meta['sizes'] = sizes
        out = tmp / 'meta.json'  # written last: marks completeness
        _write_synced(out, lambda f: f.write(json.dumps(arrays.meta, indent=1).encode()))
        _fsync_dir(tmp)
        out = folder
        try: tmp.rename(folder)
        except OSError:
            if not (folder / 'meta.json').is_file(): raise  # else another process finished the same cache first
        _fsync_dir(folder.parent)
    except OSError as e: raise cache_error(folder / out.name if out.parent == tmp else out, e, need) from e
    arrays.meta['cache'] = str(folder)


def _write_synced(path: Path, write) -> int:
    "Create `path`, fill it with `write(f)`, flush it to disk; its size."
    with open(path, 'xb') as f:
        write(f); f.flush(); os.fsync(f.fileno())
        return f.tell()


def _save_npy(f, a: np.ndarray):
    "`np.save`'s bytes, written with `f.write` so that a full disk keeps its errno (`ndarray.tofile` drops it)."
    from numpy.lib import format as npf
    npf.write_array_header_1_0(f, npf.header_data_from_array_1_0(a))
    f.write(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _fsync_dir(d: Path):
    "Make renames and new names in `d` durable; some file systems refuse a directory fsync, which is harmless."
    try:
        fd = os.open(d, os.O_RDONLY)
        try: os.fsync(fd)
        finally: os.close(fd)
    except OSError: pass


class _Damaged(Exception):
    "A cache file that is missing, short, unreadable or disagrees with meta.json."
    def __init__(self, path: Path, why: str): super().__init__(f'{path}: {why}'); self.path, self.why = path, why


def _read_cache(folder: Path, src: CifarSource) -> CifarArrays | None:
    "The cached arrays; or, for a damaged entry, None after a warning naming the file and the entry's removal."
    try: return _load_entry(folder)
    except _Damaged as e:
        warnings.warn(f"Cache file {e.path} is damaged: {e.why} (a crash while it was written, or an edit). "
                      f"Removed that cache entry and decoding {src.origin} again.", stacklevel=3)
    trash = folder.with_name(f'.{folder.name}.tmp-damaged-{os.getpid()}-{time.monotonic_ns()}')
    try: folder.rename(trash)  # atomic: no other process sees a half-deleted entry
    except FileNotFoundError: return None  # another process removed it first
    except OSError as e: raise cache_error(folder, e) from e
    shutil.rmtree(trash, ignore_errors=True)
    return None


def _load_entry(folder: Path) -> CifarArrays:
    "Read a cache entry, checking each file against meta.json: size, shape, dtype, counts and label range."
    meta = _read_json(folder / 'meta.json')
    try: n, classes, sizes = {sp: int(meta['n'][sp]) for sp in SPLITS}, list(meta['classes']), dict(meta['sizes'])
    except (KeyError, TypeError, ValueError) as e: raise _Damaged(folder / 'meta.json', f'lacks {e}') from None
    files = _read_json(folder / 'files.json')
    for sp in SPLITS:
        got = len(files.get(sp, ())) if isinstance(files, dict) else 0
        if got != n[sp]: raise _Damaged(folder / 'files.json', f'lists {got} {sp} files; meta.json says {n[sp]}')
    x = {sp: _read_npy(folder / f'{sp}_x.npy', (n[sp], *IMG_SHAPE), np.uint8, sizes) for sp in SPLITS}
    y = {sp: _read_npy(folder / f'{sp}_y.npy', (n[sp],), np.int64, sizes) for sp in SPLITS}
    for sp in SPLITS:
        if n[sp] and not (0 <= y[sp].min() and y[sp].max() < len(classes)):
            raise _Damaged(folder / f'{sp}_y.npy', f'holds labels outside 0..{len(classes) - 1}')
    meta['cache'] = str(folder)
    return CifarArrays(tuple(classes), x, y, files, meta)


def _read_json(path: Path):
    try: return json.loads(path.read_bytes())
    except FileNotFoundError: raise _Damaged(path, 'is missing') from None
    except (OSError, ValueError) as e: raise _Damaged(path, f'cannot be read ({type(e).__name__}: {e})') from None


def _read_npy(path: Path, shape: tuple, dtype, sizes: dict) -> np.ndarray:
    try: size = path.stat().st_size
    except FileNotFoundError: raise _Damaged(path, 'is missing') from None
    want = sizes.get(path.name)
    if size != want: raise _Damaged(path, f"is {size:,} bytes; meta.json says {want:,}" if isinstance(want, int)
                                    else 'has no size in meta.json')
    try: a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise _Damaged(path, f'cannot be read ({type(e).__name__}: {e})') from None
    if a.shape != shape or a.dtype != dtype:
        raise _Damaged(path, f'holds {a.dtype} {a.shape}; meta.json says {np.dtype(dtype)} {shape}')
    return a


class _progress:
    "A rich progress bar when asked for and on a terminal; otherwise silent. Yields `advance(n)`."
    def __init__(self, enabled: bool, desc: str, total: int):
        self.enabled, self.desc, self.total = enabled, desc, total

    def __enter__(self):
        from rich.console import Console
        if not (self.enabled and Console(stderr=True).is_terminal): return lambda n: None
        from rich.progress import Progress
        self.bar = Progress(transient=True, console=Console(stderr=True)); self.bar.start()
        task = self.bar.add_task(self.desc, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if hasattr(self, 'bar'): self.bar.stop()

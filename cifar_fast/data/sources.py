"""Find CIFAR-10 (an explicit path, `$CIFAR_FAST_DATA`, or fastai's download; folders, archives and pickles) and list
the images of a folder or archive in fastai's layout. Decoding them is cache.py's job; reading pickles, pickles.py's."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DataError

SPLITS = ('train', 'test')  # fastai's CIFAR layout: train/<class>/*, test/<class>/*
ENV_DATA = 'CIFAR_FAST_DATA'
ENV_CACHE = 'CIFAR_FAST_CACHE'
ARCHIVE_SUFFIXES = ('.tgz', '.tar.gz', '.tar', '.zip')
PICKLE_BATCHES = ('data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5', 'test_batch')
# errno values that mean "the cache cannot be written here" (as opposed to a bad source): a file where a folder
# should be, no permission, a read-only mount, a full disk or quota, or the `ulimit -f` file-size limit.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
CACHE_WRITE_ERRNOS = (errno.ENOTDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS, *_FULL)


@dataclass(frozen=True)
class CifarSource:
    """Where the images are and in which form. `kind` is 'folder' (fastai's layout on disk), 'archive' (a tar/zip of
    that layout, read in memory and extracted only when files are needed) or 'pickles' (torchvision's batches)."""
    kind: str
    root: Path  # the folder holding train/ and test/, the archive, or cifar-10-batches-py/ (or its tar.gz)
    origin: str  # what the user gave, for messages and the run's env.json
    fingerprint: str  # content key for caches

    def __str__(self): return f'{self.origin} ({self.kind})'


def cache_dir() -> Path:
    "Where cifar_fast keeps extracted archives and decoded arrays: `$CIFAR_FAST_CACHE` or ~/.cache/cifar_fast."
    return Path(os.environ.get(ENV_CACHE) or Path.home() / '.cache' / 'cifar_fast').expanduser()


def cache_error(path: Path, e: OSError, need: int | None = None) -> DataError:
    """A `DataError` for a cache that cannot be written at `path`: says why, and how to fix it (another folder with
    `$CIFAR_FAST_CACHE`, or free space). `need` is the number of bytes the write needed, when known."""
    root = cache_dir()
    where = (f'the cache folder {root} (${ENV_CACHE})' if os.environ.get(ENV_CACHE)
             else f'the cache folder {root} (the default; ${ENV_CACHE} is not set)')
    fix = f'Choose another folder: export {ENV_CACHE}=/path/to/a/writable/folder'
    existing = next((q for q in (path, *path.parents) if _exists(q)), path)  # the folder refusing a new name
    if e.errno in (errno.ENOTDIR, errno.EEXIST) and not existing.is_dir():
        return DataError(f"Cannot write {where}: {existing} is a file, not a folder. {fix}, or move that file away.")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataError(f"Cannot write {where}: {existing} is not writable ({e.strerror}). {fix}, or make it "
                         f"writable.")
    if e.errno in _FULL:
        size = f' (about {need / 1e6:,.0f} MB are needed)' if need else ''
        why = 'the file-size limit (ulimit -f) was reached' if e.errno == errno.EFBIG else 'its disk is full'
        return DataError(f"Cannot write {where}: {why} while writing {path}{size}. Free space on that disk (or raise "
                         f"the limit), or choose a folder on a disk with room: export {ENV_CACHE}=/path/to/folder")
    return DataError(f"Cannot write {where}: writing {path} failed ({type(e).__name__}: {e}). {fix}.")


def _exists(p: Path) -> bool:
    try: return p.exists()
    except OSError: return False  # e.g. inside a folder we may not search


def make_temp_dir(dest: Path) -> Path:
    "A new empty sibling of `dest`, named `.<dest>.tmp-*`, to fill and rename into place; a `DataError` if impossible."
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f'.{dest.name}.tmp-', dir=dest.parent))
    except OSError as e: raise cache_error(Path(e.filename) if e.filename else dest.parent, e) from e


def resolve_source(data: str | Path | None = None, origin: str = '--data') -> CifarSource:
    """Resolve `data`, else `$CIFAR_FAST_DATA`, else fastai's `untar_data(URLs.CIFAR)`, to a `CifarSource`; `origin`
    says in messages where `data` came from (an option, a recipe field, a run's recipe.json)."""
    if data is not None: return _resolve_path(Path(data).expanduser(), f'{data} ({origin})')
    if env := os.environ.get(ENV_DATA): return _resolve_path(Path(env).expanduser(), f'${ENV_DATA}={env}')
    return _resolve_path(_download(), 'fastai untar_data(URLs.CIFAR)')


def run_data_source(recorded: str | None, given: str | Path | None, where: str) -> tuple[str | None, str]:
    """(source, why) for reading a run made elsewhere, e.g. a downloaded run folder: the user's `given` path (--data)
    first, then `$CIFAR_FAST_DATA`, and only then the path `recorded` in the run's recipe (`where`), which names a
    folder on the machine that trained it. A recorded path that is not here is refused, naming both ways out.
    `source` None means the default resolution (fastai's download)."""
    if given is not None: return str(given), '--data'
    if env := os.environ.get(ENV_DATA):
        why = f'${ENV_DATA}' + (f', preferred to the path {where} records ({recorded})' if recorded else '')
        return env, why
    if recorded is None: return None, f'the default ({where} records no data.source)'
    if not _exists(Path(recorded).expanduser()):
        raise DataError(f"{where} records data.source={recorded}, which is not on this machine (the run was made "
                        f"elsewhere, or the data moved). Point at your copy of CIFAR-10 with --data PATH or "
                        f"${ENV_DATA}=PATH.")
    return recorded, f'data.source recorded in {where} (pass --data PATH to use another copy)'


def _download() -> Path:
    "fastai's real download path; offline, say so and name both ways to point at a local copy."
    from fastai.data.external import URLs, untar_data
    try: return Path(untar_data(URLs.CIFAR))
    except Exception as e:
        raise DataError(f"No CIFAR-10 source was given and the download from {URLs.CIFAR} failed "
                        f"({type(e).__name__}: {e}). Point cifar_fast at a local copy: pass --data PATH "
                        f"(data=PATH in Python) or set {ENV_DATA}=PATH. PATH may be a folder in fastai's layout "
                        f"(train/<class>/*, test/<class>/*), a .tgz/.tar.gz/.zip of one, torchvision's "
                        f"cifar-10-batches-py folder or cifar-10-python.tar.gz.") from e


def _resolve_path(p: Path, origin: str) -> CifarSource:
    if not p.exists():
        raise DataError(f"CIFAR-10 source {origin}: {p} does not exist. Tried {p.resolve()}; "
                        f"pass an existing folder or archive with --data PATH or ${ENV_DATA}.")
    if p.is_file():
        if p.stat().st_size == 0: raise DataError(f"CIFAR-10 source {origin}: archive {p} is empty (0 bytes).")
        if not p.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"CIFAR-10 source {origin}: {p} is a file but not an archive; expected one of "
                            f"{', '.join(ARCHIVE_SUFFIXES)}, or a folder.")
        fp = file_fingerprint(p)
        return CifarSource('pickles' if _is_pickle_archive(p) else 'archive', p, origin, fp)
    return _resolve_folder(p, origin, None)


def _resolve_folder(p: Path, origin: str, fingerprint: str | None) -> CifarSource:
    "Find the dataset root at `p` or one level below (archives usually hold a single top folder)."
    for cand in [p, *sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith('.'))]:
        if (cand / 'train').is_dir() and (cand / 'test').is_dir():
            return CifarSource('folder', cand, origin, fingerprint or folder_fingerprint(cand))
        if all((cand / b).is_file() for b in PICKLE_BATCHES):
            return CifarSource('pickles', cand, origin, fingerprint or folder_fingerprint(cand, PICKLE_BATCHES))
    raise DataError(f"CIFAR-10 source {origin}: {p} holds neither train/ and test/ class folders (fastai's layout) "
                    f"nor torchvision's cifar-10-batches-py files ({', '.join(PICKLE_BATCHES)}), "
                    f"at its top or one level down.")


def image_folder(src: CifarSource) -> Path:
    "A folder in fastai's layout for `src`, extracting an archive into the cache the first time."
    if src.kind == 'folder': return src.root
    if src.kind == 'archive':
        return _resolve_folder(extract_archive(src.root, src.fingerprint), src.origin, src.fingerprint).root
    raise DataError(f"CIFAR-10 source {src.origin} holds torchvision pickles, not image files; "
                    f"use the fast engine (engine='fast'), which reads them directly.")


def file_fingerprint(p: Path) -> str:
    "sha256 of a file's bytes, shortened: archives are small enough (20-170 MB) to hash in well under a second."
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 22), b''): h.update(chunk)
    return h.hexdigest()[:16]


def folder_fingerprint(root: Path, names=None) -> str:
    "Hash of every file's relative path, size and mtime: cheap, and changes whenever a file is added or edited."
    h = hashlib.sha256(str(root.resolve()).encode())
    files = [root / n for n in names] if names else sorted(f for f in root.rglob('*') if f.is_file())
    for f in files:
        st = f.stat()
        h.update(f'{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
    return h.hexdigest()[:16]


def _is_pickle_archive(p: Path) -> bool:
    if p.name.lower().endswith('.zip'): return False
    try:
        with tarfile.open(p) as tf:
            for m in tf:
                if Path(m.name).name == 'data_batch_1': return True
                if m.isfile() and m.name.lower().endswith(('.png', '.jpg', '.jpeg')): return False
    except (tarfile.TarError, EOFError, OSError) as e: raise unreadable_archive(p, e) from e
    return False


def unreadable_archive(p: Path, e: Exception) -> DataError:
    "The one message for an archive that cannot be read, whoever reads it (the kind check, the listing, the pickles)."
    return DataError(f"Archive {p} cannot be read ({type(e).__name__}: {e}); it may be truncated or corrupt. "
                     f"Download it again or point --data at an extracted folder.")


def extract_archive(p: Path, fingerprint: str) -> Path:
    """Extract `p` once into the cache. Extraction goes to a temporary sibling renamed into place when complete,
    so an interrupted extraction never leaves a folder that looks finished."""
    dest = cache_dir() / 'extracted' / f'{_stem(p)}-{fingerprint}'
    if dest.is_dir(): return dest
    tmp = make_temp_dir(dest)
    try:
        if p.name.lower().endswith('.zip'):
            with zipfile.ZipFile(p) as zf: _safe_members(p, zf.namelist(), tmp); zf.extractall(tmp)
        else:
            with tarfile.open(p) as tf: tf.extractall(tmp, filter='data')
        try: tmp.rename(dest)
        except OSError:  # another process finished the same extraction first
            if not dest.is_dir(): raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.errno in CACHE_WRITE_ERRNOS:  # the cache's fault, not the archive's
            raise cache_error(Path(e.filename) if e.filename else dest, e) from e
        raise DataError(f"Archive {p} cannot be extracted ({type(e).__name__}: {e}); it may be truncated or "
                        f"corrupt. Download it again or point --data at an extracted folder.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _safe_members(p: Path, names, dest: Path):
    "Refuse zip members that would land outside `dest` (tarfile's 'data' filter does this for tars)."
    for n in names:
        if not (dest / n).resolve().is_relative_to(dest.resolve()):
            raise DataError(f"Archive {p} has a member outside its folder ({n!r}); refusing to extract it.")


def _stem(p: Path) -> str:
    name = p.name
    for s in ARCHIVE_SUFFIXES:
        if name.lower().endswith(s): return name[:-len(s)]
    return name


# ---- listing the layouts --------------------------------------------------------------------------------------

def list_images(src: CifarSource) -> tuple[list[str], list]:
    """(classes, [(split, class index, 'split/class/name', payload)]) of a folder or archive source, in canonical order
    (split, class, file name); the payload is the file's path or, from an archive, its bytes. Torchvision's pickles
    hold arrays, not image files: `pickles.read_pickles` reads them."""
    if src.kind == 'folder': return list_folder(src.root)
    if src.kind == 'archive': return list_archive(src.root)
    raise DataError(f"CIFAR-10 source {src.origin} holds torchvision pickles, not image files: nothing to list.")


def list_folder(root: Path) -> tuple[list[str], list]:
    "(classes, [(split, class index, 'split/class/name', path)]) of a folder in fastai's layout, in canonical order."
    per_split = {}
    for sp in SPLITS:
        per_split[sp] = {d.name: [f.name for f in d.iterdir() if f.is_file() and not f.name.startswith('.')]
                         for d in (root / sp).iterdir() if d.is_dir() and not d.name.startswith('.')}
    lt = root / 'labels.txt'
    classes = _classes(str(root), per_split, lt.read_text() if lt.is_file() else None)
    return classes, _flatten(classes, per_split, lambda sp, c, n: root / sp / c / n)


def list_archive(p: Path) -> tuple[list[str], list]:
    """(classes, [(split, class index, 'split/class/name', bytes)]) of an archive of fastai's layout, its members read
    into memory; the dataset root is the prefix above train/ and test/."""
    try: members = _archive_members(p)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e: raise unreadable_archive(p, e) from e
    roots = Counter()
    for name, is_dir, _ in members:
        parts = PurePosixPath(name).parts
        for i, part in enumerate(parts[:-1]):
            if part == 'train': roots[parts[:i]] += 1
    if not roots: raise DataError(f"Archive {p} holds no train/<class>/ folders (fastai's CIFAR layout).")
    prefix = roots.most_common(1)[0][0]
    per_split, data, labels = {sp: {} for sp in SPLITS}, {}, None
    for name, is_dir, payload in members:
        parts = PurePosixPath(name).parts
        if parts[:len(prefix)] != prefix: continue
        rel = parts[len(prefix):]
        if rel == ('labels.txt',) and not is_dir: labels = payload.decode()
        if len(rel) < 2 or rel[0] not in SPLITS or rel[1].startswith('.'): continue
        cls = per_split[rel[0]].setdefault(rel[1], [])
        if len(rel) == 3 and not is_dir and not rel[2].startswith('.'):
            cls.append(rel[2]); data[rel] = payload
    classes = _classes(str(p), per_split, labels)
    return classes, _flatten(classes, per_split, lambda sp, c, n: data[(sp, c, n)])


def _archive_members(p: Path):
    """(name, is_dir, bytes) for every member, much faster than extracting. A tar is streamed member by member ('r|*'
    decompresses as it reads), so memory holds the members' bytes, not the compressed and the whole decompressed
    archive as well (cifar10.tgz: 19.6 MB gzipped, 92.7 MB of tar, 55.3 MB of images)."""
    if p.name.lower().endswith('.zip'):
        with zipfile.ZipFile(p) as zf:
            return [(i.filename, i.is_dir(), b'' if i.is_dir() else zf.read(i)) for i in zf.infolist()]
    out = []
    with tarfile.open(p, 'r|*') as tf:
        for m in tf:
            if m.isfile(): out.append((m.name, False, tf.extractfile(m).read()))
            elif m.isdir(): out.append((m.name, True, b''))
    return out


def _classes(origin: str, per_split: dict, labels_txt: str | None) -> list[str]:
    "Class names in standard order: labels.txt when present (it must agree with the folders), else sorted."
    tr, te = set(per_split['train']), set(per_split['test'])
    if tr != te:
        raise DataError(f"CIFAR-10 source {origin}: train and test have different classes: only in train: "
                        f"{sorted(tr - te) or '-'}; only in test: {sorted(te - tr) or '-'}.")
    if not tr: raise DataError(f"CIFAR-10 source {origin}: train/ has no class folders.")
    for sp, d in per_split.items():
        empty = sorted(c for c, names in d.items() if not names)
        if empty: raise DataError(f"CIFAR-10 source {origin}: class folder(s) {', '.join(f'{sp}/{c}' for c in empty)} "
                                  f"are empty; remove them or add their images.")
    if labels_txt is None: return sorted(tr)
    labels = [ln.strip() for ln in labels_txt.splitlines() if ln.strip()]
    if set(labels) != tr or len(labels) != len(tr):
        raise DataError(f"CIFAR-10 source {origin}: labels.txt lists {labels} but the class folders are "
                        f"{sorted(tr)}; make them agree or delete labels.txt.")
    return labels


def _flatten(classes, per_split, payload):
    "One (split, class index, name, payload) per image: split, then class order, then file name (canonical order)."
    return [(sp, ci, f'{sp}/{c}/{n}', payload(sp, c, n))
            for sp in SPLITS for ci, c in enumerate(classes) for n in sorted(per_split[sp][c])]

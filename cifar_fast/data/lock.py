"""An exclusive lock shared by every process on one machine (`fcntl.flock` on a file), so that N ranks or two users'
runs starting at once decode a source once: one decodes, the others wait, then read its cache. The kernel releases
the lock when its holder exits in any way, a kill or a crash included."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

try: import fcntl
except ImportError: fcntl = None  # not on Windows: loaders then run unlocked, as before

_HELD: set[int] = set()  # lock file descriptors this process holds


def _forget_in_child():
    """A forked child (a decode worker) closes its copies of held locks: flock belongs to the open file, so a worker
    orphaned by its parent's death (multiprocessing's workers can outlive a SIGKILLed parent) would else keep it."""
    for fd in _HELD:
        try: os.close(fd)
        except OSError: pass
    _HELD.clear()


if hasattr(os, 'register_at_fork'): os.register_at_fork(after_in_child=_forget_in_child)


@contextlib.contextmanager
def file_lock(path: Path):
    """Hold an exclusive lock on `path` (created if missing) inside the block; yields whether it is held. Where it
    cannot be had (a read-only or full cache, a file system without flock) the block runs unlocked: the lock only
    saves duplicate work, and the cache's atomic writes keep it correct without it."""
    fd = _open(path) if fcntl is not None else None
    if fd is not None:
        try: fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the holder is done
        except OSError: os.close(fd); fd = None  # e.g. ENOLCK on some network file systems
    if fd is not None: _HELD.add(fd)
    try: yield fd is not None
    finally:
        if fd is not None: _HELD.discard(fd); os.close(fd)  # closing releases the lock


def _open(path: Path) -> int | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError: pass
    try: return os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # another user's lock file: flock needs no write access
    except OSError: return None

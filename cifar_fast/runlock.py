"""One owner per run folder: an exclusive `flock` on RUN_DIR/.lock, held by the process that trains into the folder
for as long as it runs. The kernel drops the lock when that process ends in any way (exit, exception, kill -9, the
OOM killer), so a lock that can be taken again means its owner is gone: that is how a dead `running` run is told
from a live one, with no heartbeat to go stale. The lock file names its holder (host, pid, start time)."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .errors import ConfigError

LOCK_NAME = '.lock'


def holder(run_dir: Path) -> dict:
    "Who holds (or last held) the run folder's lock: {host, pid, since}, or {} when unknown."
    try: return json.loads((Path(run_dir) / LOCK_NAME).read_text() or '{}')
    except (OSError, ValueError): return {}


def describe(h: dict) -> str:
    since = f" (since {h['since']})" if h.get('since') else ''
    return f"pid {h.get('pid', '?')} on host {h.get('host', '?')}{since}"


class RunLock:
    "Context manager: the run folder's lock, or a ConfigError naming the process that holds it."
    def __init__(self, run_dir: Path): self.run_dir, self.fd = Path(run_dir), None

    def acquire(self) -> 'RunLock':
        path = self.run_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(5):  # `cifar-fast runs` may hold a shared lock for an instant while it looks
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError: time.sleep(0.05)
        else:
            os.close(fd)
            raise ConfigError(f"run {self.run_dir} is being trained by another process "
                              f"({describe(holder(self.run_dir))}): two processes would both write its checkpoints "
                              f"and metrics. Wait for it to end, or stop it, then "
                              f"`cifar-fast train --resume {self.run_dir}`.") from None
        me = dict(host=socket.gethostname(), pid=os.getpid(), since=time.strftime('%Y-%m-%dT%H:%M:%S'))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)  # in place: the lock is on this file, so it is never renamed
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self): return self.acquire()
    def __exit__(self, *exc): self.release()


def is_locked(run_dir: Path) -> bool | None:
    "True while a live process holds the run folder's lock, False when nobody does, None when there is no lock file."
    path = Path(run_dir) / LOCK_NAME
    try: fd = os.open(path, os.O_RDONLY)
    except OSError: return None
    try:
        try: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError: return True
        return False
    finally: os.close(fd)  # also drops the shared lock we may have just taken

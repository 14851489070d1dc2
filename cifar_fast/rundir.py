"""The run folder: every file written atomically (temporary file renamed into place), so a half-written file never
looks complete. `summary.json` is written last; a folder without one is not a finished run (`status.json` says why)."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

from .errors import ConfigError
from .runlock import is_locked

METRIC_COLUMNS = ('epoch', 'train_loss', 'valid_loss', 'accuracy', 'lr', 'seconds')
RUNS_DIR = Path('runs')
# `cifar-fast tune` keeps a study in RUNS/<study>/: this file, its journal, and one run folder per trial inside it
STUDY_FILE = 'study.json'
# The states of a run whose fit ended and wrote summary.json and its weights: 'pruned' is a study's trial its pruner
# stopped early (tuning.mark_pruned), whose summary is of the epoch it stopped at
FINISHED = ('complete', 'pruned')


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    "Write `data` to a temporary sibling, fsync it, and rename it over `path`."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            f.write(data); f.flush(); os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException as e:  # a full disk, a kill: never leave the temporary file beside the real one
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:  # a failed write() names no file: name the one being written
            raise type(e)(e.errno, e.strerror, str(path)) from e
        raise
    return path


def write_json(path: Path, obj) -> Path:
    "Atomic, sorted, indented JSON."
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + '\n').encode())


def read_json(path: Path) -> dict: return json.loads(Path(path).read_text())


def torch_save(obj, path: Path) -> Path:
    "Atomic `torch.save`."
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


class BackgroundWrites:
    """Files written in the order given by one background thread, so a run's per-epoch checkpoints (serialising,
    writing, fsync) are off the training loop. Each is still written atomically; `wait()` returns once every one
    submitted is on disk and raises the first write's error. Hand it data nothing else will change (`detached`).
    With `background=False` each write happens at once, in the caller's thread."""
    def __init__(self, background: bool = True): self.background, self._pool, self._pending = background, None, []

    def submit(self, fn, *args) -> None:
        if not self.background: fn(*args); return
        from concurrent.futures import ThreadPoolExecutor
        if self._pool is None: self._pool = ThreadPoolExecutor(1, thread_name_prefix='cifar_fast-writes')
        self._pending.append(self._pool.submit(fn, *args))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for f in pending: f.result()


def detached(obj):
    """A copy of `obj` that training cannot change under a background write: tensors copied to the CPU (a state
    dict's tensors are the live weights), dicts, lists and tuples rebuilt; other values shared."""
    import torch
    if isinstance(obj, torch.Tensor): return obj.detach().to('cpu', copy=True)
    if isinstance(obj, dict): return {k: detached(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple): return type(obj)(detached(v) for v in obj)
    return obj


def write_metrics(path: Path, rows: list[dict]) -> Path:
    "The whole metrics.csv, rewritten atomically each epoch (small; and exact after a resume)."
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator='\n')
    w.writeheader()
    for r in rows: w.writerow({k: r[k] for k in METRIC_COLUMNS})
    return atomic_write_bytes(path, buf.getvalue().encode())


def read_metrics(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: (int(v) if k == 'epoch' else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


def new_run_dir(name: str, root: Path = RUNS_DIR) -> Path:
    "runs/<name>-<YYYYmmdd-HHMMSS>, with a numeric suffix if that second is taken."
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for i in range(1000):
        d = Path(root) / (f'{name}-{stamp}' + (f'-{i}' if i else ''))
        try: d.mkdir(parents=True); return d
        except FileExistsError: continue
    raise RuntimeError(f'could not create a run folder under {root}')


def set_status(run_dir: Path, state: str, **info) -> None:
    "running | complete | pruned | interrupted | diverged | failed, with details (epoch reached, message, resume)."
    write_json(Path(run_dir) / 'status.json', dict(state=state, time=time.strftime('%Y-%m-%dT%H:%M:%S'), **info))


def run_state(run_dir: Path) -> str:
    """Where summary.json exists: 'pruned' if status.json says a study's pruner stopped the run, else 'complete'.
    Otherwise what status.json says, or 'unknown'; and 'crashed' for a run that says 'running' but whose process is gone
    (killed, out of memory, the machine restarted): nobody holds its lock."""
    d = Path(run_dir)
    try: status = read_json(d / 'status.json')
    except (OSError, ValueError): status = None
    if (d / 'summary.json').is_file():  # a pruned trial ends like an early stop (summary written), then says 'pruned'
        return 'pruned' if status is not None and status.get('state') == 'pruned' else 'complete'
    if status is None: return 'unknown'
    state = status.get('state', 'unknown')
    return 'crashed' if state == 'running' and not _alive(d, status) else state


def list_runs(root: Path = RUNS_DIR) -> dict[str | None, list[Path]]:
    """Run folders under `root` by study, oldest group first: key None for `root`'s own runs (oldest first), a study's
    name for its trials (RUNS/<study>/trial-NNNN, in trial order; a study with no trial folder yet maps to []).
    `root` may itself be a study's folder."""
    root = Path(root)
    if not root.is_dir(): return {}
    if (root / STUDY_FILE).is_file(): return {root.name: _trials(root)}
    mtime = lambda d: d.stat().st_mtime
    runs, studies = [], {}
    for d in root.iterdir():
        if (d / 'recipe.json').is_file(): runs.append(d)
        elif (d / STUDY_FILE).is_file(): studies[d.name] = _trials(d)
    first = {None: min(map(mtime, runs), default=0.)}  # a group sits where its oldest folder would
    first.update({n: min(map(mtime, ts), default=mtime(root / n / STUDY_FILE)) for n, ts in studies.items()})
    groups = {None: sorted(runs, key=mtime), **studies} if runs else studies
    return {k: groups[k] for k in sorted(groups, key=lambda k: first[k])}


def _trials(study_dir: Path) -> list[Path]:
    "A study's trial run folders, by trial number (their names are trial-NNNN)."
    return sorted(d for d in Path(study_dir).iterdir() if (d / 'recipe.json').is_file())


def _alive(d: Path, status: dict) -> bool:
    "Is the process that wrote 'running' still there? Its lock says; a run from before locks, its pid on this host."
    locked = is_locked(d)
    if locked is not None: return locked
    # another host's process, or no pid: cannot tell
    if status.get('host', socket.gethostname()) != socket.gethostname() or 'pid' not in status: return True
    try: os.kill(int(status['pid']), 0)
    except ProcessLookupError: return False
    except (PermissionError, ValueError): pass
    return True


def check_run_dir(run_dir: str | Path, need=('recipe.json',)) -> Path:
    "A run folder that exists and holds `need`, or a ConfigError saying what is missing."
    d = Path(run_dir)
    if not d.is_dir(): raise ConfigError(f"run folder {d} does not exist (see `cifar-fast runs`).")
    missing = [n for n in need if not (d / n).is_file()]
    if missing: raise ConfigError(f"run folder {d} has no {', '.join(missing)}; "
                                  f"it is not a cifar_fast run, or it did not get that far (state: {run_state(d)}).")
    return d


def cpu_model() -> str:
    "The CPU's model name from /proc/cpuinfo (Linux) or platform.processor()."
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or 'unknown'


def git_info(path: Path) -> dict:
    "Commit and dirty flag of the repository holding `path`, when there is one."
    def git(*a):
        return subprocess.run(['git', *a], cwd=path, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        commit = git('rev-parse', 'HEAD')
        return dict(commit=commit or None,
                    dirty=bool(git('status', '--porcelain', '--untracked-files=no')) if commit else None)
    except (OSError, subprocess.SubprocessError): return dict(commit=None, dirty=None)


def environment(device, precision: str, seed: int, extra: dict | None = None) -> dict:
    "Versions, device, CPU, precision, seed, git state and command line: what env.json records."
    import fastai
    import timm
    import torch
    try:
        import wandb
        wandb_version = wandb.__version__
    except Exception: wandb_version = None
    dev = torch.device(device)
    env = dict(python=platform.python_version(), torch=torch.__version__, fastai=fastai.__version__,
               timm=timm.__version__, wandb=wandb_version, platform=platform.platform(), cpu=cpu_model(),
               cpu_threads=torch.get_num_threads(), device=str(dev),
               gpu=torch.cuda.get_device_name(dev) if dev.type == 'cuda' else None,
               precision=precision, seed=seed, command=' '.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
               cwd=os.getcwd(), git=git_info(Path(__file__).resolve().parent))
    env.update(extra or {})
    return env


def os_error_message(e: OSError) -> str:
    "One line for a file-system failure: the path, what went wrong, and the way out."
    import errno
    path = e.filename or 'a file'
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = 'no space left (disk full or file-size limit)'
        fix = ('free some space, or write elsewhere: --runs FOLDER for run folders, '
               'CIFAR_FAST_CACHE=FOLDER for the cache')
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = 'not writable (permission denied or read-only file system)'
        fix = 'choose a folder you can write: --runs FOLDER for run folders, CIFAR_FAST_CACHE=FOLDER for the cache'
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        why = 'a part of this path is a file, not a folder'
        fix = 'point --runs (or CIFAR_FAST_CACHE) at a folder'
    else: why, fix = e.strerror or type(e).__name__, 'check the path and try again'
    return f"cannot write {path}: {why}. {fix[0].upper() + fix[1:]}."

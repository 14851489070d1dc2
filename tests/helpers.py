"""Pieces several test files share: interrupting a run at a chosen batch, checking that resuming it is exact,
running the CLI in a forked child as another user or under a file-size limit, and torch's thread count put back."""
import contextlib
import os
import resource
import signal
import sys
import traceback

import torch
from fastai.callback.core import Callback

from cifar_fast.training import train


@contextlib.contextmanager
def torch_threads(n: int | None = None):
    "torch's intra-op thread count set to `n` (or left) inside, and put back after: a run sets it for the process."
    before = torch.get_num_threads()
    if n: torch.set_num_threads(n)
    try: yield
    finally: torch.set_num_threads(before)


class SignalAt(Callback):
    "Send ourselves `sig` after batch `it` of epoch `epoch`, as a user's Ctrl-C or a scheduler's SIGTERM would."
    def __init__(self, epoch: int, it: int, sig=signal.SIGINT): self.at, self.sig = (epoch, it), sig
    def after_batch(self):
        if self.training and (self.epoch, self.iter) == self.at: os.kill(os.getpid(), self.sig)


def last_weights(run_dir):
    return torch.load(run_dir / 'model.pth', weights_only=True)['last']


def assert_resume_matches(recipe, tmp_path, epoch: int, it: int):
    """Train `recipe` whole, and again cut at (epoch, it) then resumed: the final weights must be identical.
    The whole run's result."""
    full = train(recipe, runs_root=tmp_path / 'full')
    cut = train(recipe, runs_root=tmp_path / 'cut', extra_cbs=[SignalAt(epoch, it)]).run_dir
    train(None, resume=cut)
    a, b = last_weights(full.run_dir), last_weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a), 'the resumed run drifted from the uninterrupted one'
    return full


NOBODY = 65534  # the unprivileged uid/gid Debian and most distributions ship


def cli_in_child(argv, env: dict, uid: int | None = None, fsize: int | None = None) -> tuple[int, str]:
    """Run `cifar-fast argv` in a forked child, optionally as `uid` or under a file-size limit of `fsize` bytes; return
    (exit code, stdout+stderr). Forking reuses the imports: a fresh interpreter spent 8-14 s importing
    cifar_fast.data (torch, fastai) on our 2 shared cores."""
    import cifar_fast.plots  # noqa: F401  `cifar-fast data` imports it; import it once here, not in every child
    from cifar_fast.cli import main
    r, w = os.pipe()  # a pipe, not a file: writes to it are not bound by RLIMIT_FSIZE
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        rc = 70
        try:
            os.close(r); os.dup2(w, 1); os.dup2(w, 2)
            sys.stdout = sys.stderr = open(w, 'w', closefd=False)
            os.environ.update(env)
            if fsize is not None:  # over the limit a write fails with EFBIG, once SIGXFSZ no longer kills us
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            if uid is not None: os.setgroups([]); os.setgid(uid); os.setuid(uid)  # what `setpriv --reuid` does
            rc = main(argv)
        except BaseException: traceback.print_exc()
        finally:
            sys.stdout.flush(); os._exit(rc)
    os.close(w)
    with open(r, 'rb') as f: out = f.read().decode()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out


def load_benchmark(name: str):
    "benchmarks/<name>.py as a module (the scripts import nothing heavy at import time)."
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'benchmarks' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod

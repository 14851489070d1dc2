"""Stop signals for the whole of a run: SIGINT (Ctrl-C), SIGTERM (a scheduler's preemption, `timeout`) and SIGHUP (a
closed terminal) are caught from the first step of `train` to its last, so every way out ends in an honest status.

Inside the fit a signal only sets a flag: the fit stops at the next batch boundary, agreed across ranks, so no rank
leaves a collective half-done (torchrun's agent re-sends the terminal's Ctrl-C, so each worker gets every Ctrl-C
twice). Outside the fit (decoding, lr_find, compile warm-up, the end of the run) there is no batch boundary to wait
for: the handler raises `StopRequested`, and the `finally` blocks on the way out remove temporary files."""
from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# In one process, the third signal inside the fit stops at once (a hung batch); the first two stop at the batch's end.
# Distributed, signals never raise inside the fit: a rank leaving mid-collective would hang the others.
FORCE_AT = 3


class StopRequested(BaseException):
    "A stop signal arrived where the run cannot wait for a batch boundary. BaseException, like KeyboardInterrupt."
    def __init__(self, signum: int):
        self.signum, self.name = signum, signal.Signals(signum).name
        super().__init__(f'stopped by {self.name}')

    @property
    def exit_code(self) -> int: return 128 + self.signum  # the shell's convention: 130 SIGINT, 143 SIGTERM, 129 SIGHUP


class StopSignals:
    """Context manager owning the stop signals' handlers for a run (main thread only; elsewhere Python cannot install
    handlers, and the caller's own apply). `deferred()` marks the stretch where a signal only sets the flag."""
    def __init__(self, distributed: bool = False):
        self.distributed, self.signum, self.count, self.defer, self._old = distributed, None, 0, False, {}
        self.stopping = False  # StopRequested was raised: later signals must not cut the clean-up that follows it

    @property
    def requested(self) -> bool: return self.signum is not None

    @property
    def name(self) -> str | None: return signal.Signals(self.signum).name if self.signum else None

    def _handler(self, signum, frame):
        self.count += 1
        if self.signum is None: self.signum = signum
        if self.stopping or (self.defer and (self.distributed or self.count < FORCE_AT)): return
        self.stopping = True
        raise StopRequested(self.signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS: self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items(): signal.signal(s, h)
        self._old = {}

    @contextlib.contextmanager
    def deferred(self):
        "Inside: signals set the flag only (the fit's GracefulStop acts on it at the next batch)."
        self.defer = True
        try: yield
        finally: self.defer = False

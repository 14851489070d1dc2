"""Where a run's figures are drawn: in the training process, or beside it in one helper process. On a GPU the host's
other cores are idle while the GPU trains and predicts, and matplotlib's ~2 s of drawing (curves, confusion matrix,
top losses, reliability diagram) sat in the run's critical path; a helper started with the run has matplotlib
imported by the time the fit ends, draws while the run predicts and writes its other files, and the run waits for it
before summary.json, so a finished run folder has every figure. On a CPU the cores are busy training: drawn inline.

CIFAR_FAST_RUN_FIGURES: '0' none (the CSVs and report.md only), '1' (default) a helper on a GPU and inline on a CPU,
'background' a helper on any device."""
from __future__ import annotations

import os


def figures_mode(device_type: str) -> str:
    "'none', 'inline' or 'background' for a run on `device_type`, as CIFAR_FAST_RUN_FIGURES asks."
    v = os.environ.get('CIFAR_FAST_RUN_FIGURES', '1')
    if v == '0': return 'none'
    if v == 'background' or device_type == 'cuda': return 'background'
    return 'inline'


class Drawer:
    """Calls of the plotting functions (`plots`, `interpret_plots`: arrays in, one PNG out), run at once or queued to
    one helper process (spawned: forking a process that holds CUDA state is unsafe). `wait()` returns once every
    figure asked for is written, and raises the first drawing's error."""
    def __init__(self, mode: str = 'inline'):
        self.mode, self._pool, self._jobs = mode, None, []
        if mode == 'background':
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'))
            self._jobs.append(self._pool.submit(_import_matplotlib))  # now, while the run trains

    @property
    def enabled(self) -> bool: return self.mode != 'none'

    def draw(self, fn, *args, **kwargs) -> None:
        if self.mode == 'none': return
        if self._pool is None: fn(*args, **kwargs)
        else: self._jobs.append(self._pool.submit(fn, *args, **kwargs))

    def wait(self) -> None:
        jobs, self._jobs = self._jobs, []
        for j in jobs: j.result()

    def close(self) -> None:
        "Stop the helper (after its queued figures, unless the run is failing anyway)."
        if self._pool is not None: self._pool.shutdown(wait=True, cancel_futures=True); self._pool = None


def _import_matplotlib() -> None:
    from .plots import _plt
    _plt()

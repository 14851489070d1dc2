"""The choices a run makes for the machine it runs on: precision, memory format, torch.compile and threads.

A recipe says 'auto' (or 0 threads) and each run resolves it here, once, for its device; env.json records what was
chosen and which choices were automatic, and a recipe or `--field value` overrides any of them. The rules follow
measurements on the machines this project runs on (docs/benchmarks.md, "Choices per machine"):

- precision: bf16 where the device computes it natively, else fp32 on a CPU (emulated bf16 is slower than fp32) and
  fp16 with a loss scaler on GPUs without bf16.
- channels_last: on. oneDNN's CPU convolutions prefer NHWC: on the AMX Xeon `fastnet_cpu` trained 2.4x faster in fp32
  and 2.3x in bf16 with it, and no model family was slower. On a GPU, cuDNN's tensor-core kernels prefer it too
  (NVIDIA's guidance; the speed recipes set it already); not measured here.
- compile: off. On the AMX Xeon, Inductor's code trained `fastnet_cpu` 25% slower than eager with channels_last, after
  a 20-24 s compile. On a GPU it has not been measured here (no GPU yet); until it is, 'auto' does not pay a compile
  per process that might not return it (benchmarks/gpu_check.py runs every recipe once, each a fresh compile).
- threads: what torch was already set to use (OMP_NUM_THREADS, torchrun, a caller's `torch.set_num_threads`), but no
  more than this process's share of the CPUs it may run on: torch's own default counts the machine's cores, not the
  process's affinity, so processes that share a node would each take them all.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

@dataclass(frozen=True)
class Choices:
    "What this run uses, resolved from the recipe for this machine; `auto` names the fields chosen automatically."
    precision: str = 'fp32'
    channels_last: bool = False
    compile: bool | str = False  # False, True (torch.compile's default mode) or a mode's name
    threads: int = 1
    auto: tuple = ()

    def record(self) -> dict:
        "For env.json: each choice with where it came from ('auto' or 'recipe')."
        return {k: dict(value=v, chosen='auto' if k in self.auto else 'recipe')
                for k, v in asdict(self).items() if k != 'auto'}

    def describe(self) -> str:
        "A few words for the run's first console line, e.g. 'bf16, channels_last, 2 threads'."
        compiled = ['compiled' if self.compile is True else f'compiled ({self.compile})'] if self.compile else []
        parts = [self.precision] + ['channels_last'] * self.channels_last + compiled
        return ', '.join(parts + [f"{self.threads} thread{'s' * (self.threads != 1)}"])


def choose(r, device, local_processes: int = 1) -> Choices:
    "Resolve the recipe's 'auto' fields (`r` is a Recipe) for `device`, with `local_processes` sharing this node."
    dev = torch.device(device)
    auto = tuple(k for k in ('precision', 'channels_last', 'compile') if getattr(r, k) == 'auto')
    auto += ('threads',) * (r.threads == 0)
    return Choices(precision=resolve_precision(r.precision, dev),
                   channels_last=resolve_channels_last(r.channels_last, dev),
                   compile=resolve_compile(r.compile, dev), threads=resolve_threads(r.threads, local_processes),
                   auto=auto)


def resolve_precision(precision: str, device) -> str:
    "'auto' -> bf16 where native, else fp32 (CPU) or fp16 (GPU without bf16); anything else as given."
    dev = torch.device(device)
    if precision != 'auto': return precision
    if dev.type == 'cuda': return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    if dev.type == 'cpu': return 'bf16' if cpu_has_native_bf16() else 'fp32'
    return 'fp32'


def resolve_channels_last(value, device) -> bool:
    "'auto' -> on for CPU and CUDA (NHWC convolutions are their fast path), off elsewhere; a bool as given."
    if value != 'auto': return bool(value)
    return torch.device(device).type in ('cpu', 'cuda')


def resolve_compile(value, device) -> bool | str:
    "'auto' -> off (slower than eager on the CPUs here; not yet measured on a GPU); a bool or a mode's name as given."
    if value == 'auto': return False
    return value if isinstance(value, str) else bool(value)


def resolve_threads(threads: int, local_processes: int = 1) -> int:
    """0 -> torch's current setting, capped at this process's share of the CPUs it may run on (at least 1);
    else as given."""
    if threads: return threads
    try: cores = len(os.sched_getaffinity(0))
    except AttributeError: cores = os.cpu_count() or 1  # not Linux
    return max(1, min(torch.get_num_threads(), cores // max(1, local_processes)))


def apply_threads(threads: int) -> None:
    "Set torch's intra-op threads for this process (a no-op when already so)."
    if torch.get_num_threads() != threads: torch.set_num_threads(threads)


def cpu_has_native_bf16() -> bool:
    """bf16 arithmetic in hardware: the kernel's CPU flags amx_bf16 or avx512_bf16 (x86), bf16 (Arm). oneDNN's own
    check (`torch.ops.mkldnn._is_mkldnn_bf16_supported`) is also true on AVX-512 CPUs without them, which emulate it.
    Where /proc/cpuinfo is not there (not Linux), that check is the fallback."""
    try: text = Path('/proc/cpuinfo').read_text()
    except OSError: return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    flags = {f for line in text.splitlines() if line.split(':')[0].strip() in ('flags', 'Features')
             for f in line.partition(':')[2].split()}
    return bool(flags & {'amx_bf16', 'avx512_bf16', 'bf16'})


def seed_run(seed: int, deterministic: bool) -> None:
    """Seed every RNG (fastai's `set_seed`) and set cuDNN for the run: deterministic algorithms with the autotuner off
    when the recipe asks, else the autotuner on (fastai's `set_seed(reproducible=True)` turns it off for the whole
    process, which slowed every later run in it, airbench's included)."""
    from fastai.torch_core import set_seed
    set_seed(seed)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, not deterministic

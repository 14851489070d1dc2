"""Mixed precision on any device. fastai's `MixedPrecision` hard-codes `autocast('cuda')`, so on a CPU `to_bf16()`
only warns and trains in fp32; this subclass takes the device from the data."""
from __future__ import annotations

import torch
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.torch_core import default_device
from fastcore.foundation import L
from torch.amp import GradScaler, autocast

PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')


def resolve_precision(precision: str, device) -> str:
    """'auto' -> bf16 where the device computes bf16 natively (CUDA with bf16, a CPU with AMX/AVX512-BF16), else
    fp32 on a CPU (without native bf16, autocast emulates it, which is slower than fp32) and fp16
    with a loss scaler on GPUs without bf16."""
    dev = torch.device(device)
    if precision != 'auto': return precision
    if dev.type == 'cuda': return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    if dev.type == 'cpu': return 'bf16' if cpu_has_native_bf16() else 'fp32'
    return 'fp32'


def cpu_has_native_bf16() -> bool:
    """bf16 arithmetic in hardware: the kernel's CPU flags amx_bf16 or avx512_bf16 (x86), bf16 (Arm). oneDNN's own
    check (`torch.ops.mkldnn._is_mkldnn_bf16_supported`) is also true on AVX-512 CPUs without them, which emulate it.
    Where /proc/cpuinfo is not there (not Linux), that check is the fallback."""
    from pathlib import Path
    try: text = Path('/proc/cpuinfo').read_text()
    except OSError: return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    flags = {f for line in text.splitlines() if line.split(':')[0].strip() in ('flags', 'Features')
             for f in line.partition(':')[2].split()}
    return bool(flags & {'amx_bf16', 'avx512_bf16', 'bf16'})


class MixedPrecisionAnyDevice(MixedPrecision):
    "fastai's `MixedPrecision` with autocast on the data's device type; a loss scaler only for fp16 on CUDA."
    order = MixedPrecision.order  # 10: after MixUp/CutMix (0), which mix inputs in fp32 before autocast

    def before_fit(self):
        dtype = torch.bfloat16 if self.amp_mode == AMPMode.BF16 else torch.float16
        self.device_type = torch.device(getattr(self.dls, 'device', None) or default_device()).type
        self.kwargs['enabled'] = dtype == torch.float16 and self.device_type == 'cuda'
        self.autocast = autocast(self.device_type, dtype=dtype)
        self.learn.scaler, self.scales = GradScaler(self.device_type, **self.kwargs), L()


def precision_callbacks(precision: str) -> list:
    "The callbacks that make `precision` ('fp32', 'bf16' or 'fp16', already resolved) apply."
    return [] if precision == 'fp32' else [MixedPrecisionAnyDevice(amp_mode=precision)]

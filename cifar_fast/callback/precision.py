"""Mixed precision on any device. fastai's `MixedPrecision` hard-codes `autocast('cuda')`, so on a CPU `to_bf16()`
only warns and trains in fp32; this subclass takes the device from the data."""
from __future__ import annotations

import torch
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.torch_core import default_device
from fastcore.foundation import L
from torch.amp import GradScaler, autocast


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

"""The graph `cifar-fast export` writes: the run's normalisation (and flip TTA, on request) around the model, as ONNX
with a dynamic batch size. export.py checks it with onnxruntime and writes the files."""
from __future__ import annotations

import io

import torch
from torch import nn

from .errors import ConfigError
from .export import INPUTS, require


class DeployModel(nn.Module):
    """Images as the ONNX file takes them (uint8 0..255, or float [0, 1]) -> (logits, probs): the run's normalisation
    with the same operations as `data.augment.normalize`, then the model, or our `TTAModel` around it."""
    def __init__(self, model: nn.Module, mean, std, input: str = 'uint8', tta: int = 0):
        super().__init__()
        from .tta import TTAModel
        if input not in INPUTS: raise ConfigError(f"input must be one of {', '.join(INPUTS)}, not {input!r}.")
        if tta not in (0, 1):  # level 2 shifts by a batch-sized index tensor: traced, it would fix the batch size
            raise ConfigError(f"tta={tta}: the exported graph supports 0 (none) or 1 (flip); level 2's shifted views "
                              f"are not exported.")
        self.input, self.tta = input, tta
        self.net = TTAModel(model, tta) if tta else model
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images):
        x = images.float()
        if self.input == 'uint8': x = x / 255.
        logits = self.net((x - self.mean) / self.std).float()
        return logits, logits.softmax(1)


def onnx_bytes(model: nn.Module, mean, std, input: str = 'uint8', tta: int = 0, dynamo: bool = True,
               name: str = 'model') -> bytes:
    """The ONNX graph of `model` with normalisation (and flip TTA) inside, batch size dynamic; `dynamo=False` uses
    torch's older TorchScript exporter. A model the exporter cannot take raises ConfigError naming it and why."""
    require('export', 'onnx'); require('export', 'onnxscript')
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    wrapper = DeployModel(model, mean, std, input, tta).eval()
    example = (torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8) if input == 'uint8'
               else torch.rand(2, 3, 32, 32))  # batch 2, not 1: the exporter specialises a size-1 dimension
    kw = dict(input_names=['images'], output_names=['logits', 'probs'], verbose=False)
    if dynamo: kw['dynamic_shapes'] = {'images': {0: torch.export.Dim('batch')}}
    else: kw['dynamic_axes'] = {'images': {0: 'batch'}, 'logits': {0: 'batch'}, 'probs': {0: 'batch'}}
    try:
        with torch.no_grad():
            if dynamo: return torch.onnx.export(wrapper, example, dynamo=True, **kw).model_proto.SerializeToString()
            buf = io.BytesIO()
            torch.onnx.export(wrapper, example, buf, dynamo=False, **kw)
            return buf.getvalue()
    except Exception as e:
        other = '--legacy-exporter (dynamo=False)' if dynamo else 'the default dynamo exporter'
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ''
        raise ConfigError(f"{name} cannot be exported to ONNX by torch.onnx.export(dynamo={dynamo}): "
                          f"{type(e).__name__}: {msg}. Try {other}, or export its weights only (safetensors).") from e

"""The model as the exported ONNX graph runs it: raw images in, the run's normalisation (and flip TTA, on request)
around the net, (logits, probs) out. export.py traces it, checks the graph with onnxruntime and writes the files."""
from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError
from .tta import TTAModel

INPUTS = ('uint8', 'float')  # the graph's input contracts (export.py repeats them for its parser, which needs no torch)


class DeployModel(nn.Module):
    """Images as the ONNX file takes them (uint8 0..255, or float [0, 1]) -> (logits, probs): the run's normalisation
    with the same operations as `data.augment.normalize`, then the model, or our `TTAModel` around it."""
    def __init__(self, model: nn.Module, mean, std, input: str = 'uint8', tta: int = 0):
        super().__init__()
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

"""Test-time augmentation as weighted views of each batch: the model is wrapped, so any loader works unchanged
(see `inference.predict_loader`)."""
from __future__ import annotations

import torch
from torch import nn

from .data import augment as A


def tta_views(level: int) -> list[tuple[tuple[int, int], bool, float]]:
    """(shift (dy, dx), flip, weight) per view. 1: identity and mirror, half each. 2 (airbench's): that pair with
    weight 1/2, plus the pair shifted by (-1,-1) and by (+1,+1) with reflect padding, 1/4 per pair."""
    if level == 0: return [((0, 0), False, 1.)]
    pair = lambda s, w: [(s, False, w / 2), (s, True, w / 2)]
    if level == 1: return pair((0, 0), 1.)
    if level == 2: return pair((0, 0), .5) + pair((-1, -1), .25) + pair((1, 1), .25)
    raise ValueError(f'TTA level must be 0, 1 or 2, not {level}')


def view(x: torch.Tensor, shift, flip: bool) -> torch.Tensor:
    "One view of a (normalised) batch: translate with reflect padding, then mirror."
    if shift != (0, 0): x = A.translate(x, torch.tensor([shift] * len(x)), 'reflect')
    return x.flip(-1) if flip else x


class TTAModel(nn.Module):
    "Weighted sum of the wrapped model's logits over the views of each batch."
    def __init__(self, model: nn.Module, level: int):
        super().__init__()
        self.model, self.views = model, tta_views(level)

    def forward(self, x):
        out = None
        for shift, flip, w in self.views:
            y = w * self.model(view(x, shift, flip)).float()
            out = y if out is None else out + y
        return out


class LevelsTTAModel(nn.Module):
    """The logits of several TTA levels from one pass over the views: a view that several levels use (the identity is
    in every one) is computed once, and each level sums its weighted views in `TTAModel`'s order, so every level's
    result equals its own `TTAModel`'s bit for bit. Returns {level: logits}."""
    def __init__(self, model: nn.Module, levels):
        super().__init__()
        self.model, self.levels = model, {lvl: tta_views(lvl) for lvl in levels}

    def forward(self, x) -> dict:
        seen, out = {}, {}
        for level, views in self.levels.items():
            for shift, flip, w in views:
                if (shift, flip) not in seen: seen[shift, flip] = self.model(view(x, shift, flip)).float()
                y = w * seen[shift, flip]
                out[level] = y if level not in out else out[level] + y
        return out

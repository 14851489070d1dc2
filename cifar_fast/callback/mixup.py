"""MixUp or CutMix chosen per batch. fastai ships each alone (`MixUp`, `CutMix`); timm's `Mixup(switch_prob=…)`
switches between them but works outside a Learner. This reuses fastai's two implementations under one handler."""
from __future__ import annotations

import torch
from fastai.callback.mixup import CutMix, MixHandler, MixUp
from torch.distributions.beta import Beta

from .restore import RestoringCutMix, RestoringMixUp, _MixLoss


class MixUpCutMix(_MixLoss, MixHandler):
    "Each training batch: MixUp(α=`mixup`) with probability `p`, else CutMix(α=`cutmix`)."
    def __init__(self, mixup: float = 0.4, cutmix: float = 1.0, p: float = 0.5):
        super().__init__(mixup)
        self.mixup_distrib = Beta(torch.tensor(mixup), torch.tensor(mixup))
        self.cutmix_distrib = Beta(torch.tensor(cutmix), torch.tensor(cutmix))
        self.p = p

    def before_batch(self):
        use_mixup = bool(torch.rand(()) < self.p)  # global torch RNG: reproducible under fastai's set_seed
        self.distrib = self.mixup_distrib if use_mixup else self.cutmix_distrib
        (MixUp if use_mixup else CutMix).before_batch(self)

    rand_bbox = CutMix.rand_bbox


def mix_callbacks(mixup: float, cutmix: float, p: float = 0.5) -> list:
    "fastai's MixUp or CutMix when only one is on; our switch when both are."
    if mixup and cutmix: return [MixUpCutMix(mixup, cutmix, p)]
    if mixup: return [RestoringMixUp(mixup)]
    if cutmix: return [RestoringCutMix(cutmix)]
    return []

"""Launched by torchrun from tests/test_distributed.py: trains a tiny recipe and records which training samples each
rank saw per epoch; optionally dies on one rank mid-run."""
import argparse
import json
import os
from pathlib import Path

from fastai.callback.core import Callback

from cifar_fast.recipe import DataConfig, Recipe
from cifar_fast.training import train


class IndexLog(Callback):
    "This rank's training sample indices, per epoch, written as rank<R>.json when the fit ends."
    def __init__(self, out): self.out, self.epochs = Path(out), []
    def after_train(self): self.epochs.append(self.dls.train.last_idxs.tolist())
    def after_fit(self): (self.out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(self.epochs))


class Die(Callback):
    "Kill this process abruptly (no cleanup), as a crashed or OOM-killed rank would go."
    def __init__(self, rank, epoch): self.rank, self.epoch = rank, epoch
    def after_batch(self):
        if int(os.environ['RANK']) == self.rank and self.epoch == self.epoch_now(): os._exit(3)
    def epoch_now(self): return self.learn.epoch


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--data'); p.add_argument('--runs'); p.add_argument('--out')
    p.add_argument('--epochs', type=int, default=2); p.add_argument('--die-rank', type=int); p.add_argument('--resume')
    a = p.parse_args()
    r = Recipe(name='dist', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=a.epochs, lr=0.02,
               seed=0,
               data=DataConfig(source=a.data, batch_size=32),
               precision='fp32')  # validation and the later evaluate in one precision: their accuracies compare exactly
    cbs = [IndexLog(a.out)] + ([Die(a.die_rank, 1)] if a.die_rank is not None else [])
    train(None if a.resume else r, runs_root=a.runs, extra_cbs=cbs, resume=a.resume)

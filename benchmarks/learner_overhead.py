"""What the fastai Learner costs: the same model, batches and optimiser trained through `Learner.fit` and through a
plain PyTorch loop, alternating, on this machine. Reports training images/s of each and their ratio (goal ≥ 0.97).

    python benchmarks/learner_overhead.py --data ../shared/data/cifar10.tgz --model fastnet_cpu --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback

from cifar_fast.data import Augment, cifar_dls
from cifar_fast.models import create_model
from cifar_fast.rundir import cpu_model
from cifar_fast.optim import opt_func
from cifar_fast.recipe import Recipe


class TrainTimer(Callback):
    "Seconds spent in each training phase (batches, forward, backward, step, callbacks), validation excluded."
    def before_fit(self): self.seconds = []
    def before_train(self): self.t0 = time.perf_counter()
    def after_train(self): self.seconds.append(time.perf_counter() - self.t0)


def learner_run(dls, model, r: Recipe, epochs: int, lr: float) -> float:
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), opt_func=opt_func(r), wd=r.wd, path='/tmp')
    learn.remove_cb(ProgressCallback)
    learn.logger = lambda *a: None
    timer = TrainTimer()
    learn.fit(epochs, lr, cbs=[timer])
    return sum(timer.seconds)


def plain_run(dls, model, r: Recipe, epochs: int, lr: float) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=r.momentum, nesterov=r.nesterov, weight_decay=r.wd)
    secs = 0.
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for x, y in dls.train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        secs += time.perf_counter() - t0
    return secs


def main(data, model_name: str, repeats: int, epochs: int, train_size: int, bs: int) -> dict:
    torch.set_flush_denormal(True)
    r = Recipe(model=model_name)
    dls = cifar_dls(data, bs=bs, train_size=train_size, valid_size=1000, device='cpu', aug=Augment(translate=2),
                    progress=False)
    n_img = len(dls.train) * bs * epochs
    res = dict(learner=[], plain=[])
    for i in range(repeats):  # alternate, so drift in the machine's speed hits both alike
        for kind, fn in (('learner', learner_run), ('plain', plain_run)):
            torch.manual_seed(i)
            secs = fn(dls, create_model(model_name), r, epochs, 0.05)
            res[kind].append(n_img / secs)
            print(json.dumps(dict(repeat=i, kind=kind, images_per_sec=round(n_img / secs, 1))), flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    return dict(model=model_name, cpu=cpu_model(), threads=torch.get_num_threads(), torch=torch.__version__,
                bs=bs, train_images_per_epoch=len(dls.train) * bs, epochs=epochs, repeats=repeats,
                learner_images_per_sec=res['learner'], plain_images_per_sec=res['plain'],
                ratio_of_medians=round(med['learner'] / med['plain'], 4),
                paired_ratios=[round(a / b, 4) for a, b in zip(res['learner'], res['plain'])])


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=None)
    p.add_argument('--model', default='fastnet_cpu')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--train-size', type=int, default=10240)
    p.add_argument('--bs', type=int, default=512)
    a = p.parse_args()
    print(json.dumps(main(a.data, a.model, a.repeats, a.epochs, a.train_size, a.bs), indent=1))

"""The reference for `quick`: the airbench-style training of recipes/quick.py, written as a plain PyTorch loop in fp32
and torch's default memory format. It keeps quick's original 8 epochs (`--epochs`), the baseline
benchmarks/quick_vs_loop.py measures quick against (docs/benchmarks.md); quick itself now trains 10 (its choices on
this machine make each epoch cheaper; see its header).

No fastai: a shuffled index per epoch, the same batch augmentation (2-px reflect translate, alternating flip), the same
net (fastnet_cpu with its whitening stem), Nesterov SGD in airbench's decoupled units with BatchNorm biases at 64× the
lr, the triangular schedule, label smoothing 0.2, flip TTA. It shares only cifar_fast's data cache (decoded arrays),
pure augmentation functions and model builder, so the comparison with the Learner measures the training loop.

    python benchmarks/plain_loop.py --data ../shared/data/cifar10.tgz --seed 0
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from cifar_fast.optim import decoupled_hypers
from cifar_fast.data import augment as A
from cifar_fast.data import cifar_data
from cifar_fast.models import create_model

HYP = dict(epochs=8, bs=512, lr=11.5, wd=0.0153, momentum=0.85, bias_scale=64, label_smoothing=0.2, translate=2,
           whiten_bias_epochs=3, start=0.2, peak=0.23, end=0.07, n_whiten=5000)


def triangle(step: int, total: int, start: float, peak: float, end: float) -> float:
    "Piecewise-linear lr factor: `start` at 0, 1 at `peak`·total, `end` at total."
    return float(np.interp(step, [0, peak * total, total], [start, 1.0, end]))


def main(data, seed: int, device='cpu', precision='fp32', threads: int | None = None,
         epochs: int | None = None, channels_last: bool = False) -> dict:
    if threads: torch.set_num_threads(threads)
    if torch.device(device).type == 'cpu': torch.set_flush_denormal(True)  # as the Learner does (train.build_learner)
    t_start = time.perf_counter()
    h = dict(HYP, epochs=epochs or HYP['epochs'])
    cd = cifar_data(data, progress=False)
    x_tr, y_tr = (torch.from_numpy(cd.arrays.x['train']).to(device), torch.from_numpy(cd.arrays.y['train']).to(device))
    x_te, y_te = (torch.from_numpy(cd.arrays.x['test']).to(device), torch.from_numpy(cd.arrays.y['test']).to(device))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = create_model('fastnet_cpu').to(device)
    model.init_whitening(A.normalize(x_tr[:h['n_whiten']]))
    model.whiten.weight.requires_grad_(False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format  # as the run it is compared with
    model = model.to(memory_format=fmt)
    norm_biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    nb = {id(p) for p in norm_biases}
    others = [p for p in model.parameters() if id(p) not in nb]
    lr, wd = decoupled_hypers(h['lr'], h['wd'], h['momentum'], h['bs'])
    s = h['bias_scale']
    opt = torch.optim.SGD([dict(params=norm_biases, lr=lr * s, weight_decay=wd / s),
                           dict(params=others, lr=lr, weight_decay=wd)],
                          momentum=h['momentum'], nesterov=True)
    base_lrs = [lr * s, lr]
    steps_per_epoch, n = len(x_tr) // h['bs'], len(x_tr)
    total = h['epochs'] * steps_per_epoch
    flip_base = A.draw_flips(n, g)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == 'bf16')
    step, epoch_log = 0, []
    t_train = 0.
    for epoch in range(h['epochs']):
        t0 = time.perf_counter()
        model.train()
        model.whiten.bias.requires_grad_(epoch < h['whiten_bias_epochs'])
        perm = torch.randperm(n, generator=g)
        shifts = A.draw_shifts(n, h['translate'], g)
        flips = A.alternating_flip_mask(flip_base, epoch)[perm]
        for i in range(steps_per_epoch):
            sl = slice(i * h['bs'], (i + 1) * h['bs'])
            idx = perm[sl].to(device)
            x = A.normalize(A.flip(A.translate(x_tr[idx], shifts[sl], 'reflect'), flips[sl]))
            x = x.contiguous(memory_format=fmt)
            f = triangle(step, total, h['start'], h['peak'], h['end'])
            for grp, base in zip(opt.param_groups, base_lrs): grp['lr'] = base * f
            with autocast: loss = F.cross_entropy(model(x), y_tr[idx], label_smoothing=h['label_smoothing'])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        t_train += time.perf_counter() - t0
        acc = evaluate(model, x_te, y_te, tta=False, autocast=autocast)
        epoch_log.append(dict(epoch=epoch, train_loss=float(loss), accuracy=acc,
                              seconds=round(time.perf_counter() - t0, 2)))
        print(json.dumps(epoch_log[-1]), flush=True)
    acc_tta = evaluate(model, x_te, y_te, tta=True, autocast=autocast)
    return dict(seed=seed, precision=precision, channels_last=channels_last,
                accuracy=epoch_log[-1]['accuracy'], accuracy_tta=acc_tta, train_seconds=round(t_train, 2),
                wall_seconds=round(time.perf_counter() - t_start, 2), epochs=epoch_log)


@torch.no_grad()
def evaluate(model, x, y, tta: bool, autocast, bs: int = 1000) -> float:
    "Test accuracy, optionally averaging the logits of each image and its mirror."
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        xb = A.normalize(x[i:i + bs])
        with autocast:
            logits = model(xb).float()
            if tta: logits = 0.5 * logits + 0.5 * model(xb.flip(-1)).float()
        correct += int((logits.argmax(1) == y[i:i + bs]).sum())
    return correct / len(x)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=None)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--precision', default='fp32', choices=('fp32', 'bf16'))
    p.add_argument('--channels-last', action='store_true', help='model and batches in channels-last memory format')
    p.add_argument('--epochs', type=int, default=HYP['epochs'])
    p.add_argument('--out', help='write the result JSON here')
    a = p.parse_args()
    res = main(a.data, a.seed, precision=a.precision, epochs=a.epochs, channels_last=a.channels_last)
    print(json.dumps({k: v for k, v in res.items() if k != 'epochs'}))
    if a.out:
        with open(a.out, 'w') as f: json.dump(res, f, indent=1)

"""Data-layer speed on this machine: first decode of all 60,000 images, cached load, and augmented training batches
per second from the fast engine and from the fastai DataBlock engine (0 and 2 workers).

    python benchmarks/bench_data.py --data ../shared/data/cifar10.tgz
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from cifar_fast.data import Augment, cifar_dls, load_arrays, resolve_source
from cifar_fast.rundir import cpu_model


def images_per_sec(dl, max_batches: int | None = None) -> float:
    "Augmented training images per second over (up to `max_batches` of) one epoch, after one warm-up batch."
    it = iter(dl)
    next(it)
    n, t0 = 0, time.perf_counter()
    for i, b in enumerate(it):
        n += len(b[0])
        if max_batches and i + 1 >= max_batches: break
    return n / (time.perf_counter() - t0)


def main(data: str, bs: int = 512) -> dict:
    res = dict(cpu=cpu_model(), cores=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads(), bs=bs)
    with tempfile.TemporaryDirectory() as cache:  # a cold cache, so the first decode is really first
        os.environ['CIFAR_FAST_CACHE'] = cache
        src = resolve_source(data)
        t0 = time.perf_counter(); load_arrays(src, progress=False)
        res['first_decode_s'] = round(time.perf_counter() - t0, 2)
        loads = []
        for _ in range(3):
            t0 = time.perf_counter(); load_arrays(resolve_source(data), progress=False)
            loads.append(time.perf_counter() - t0)
        res['cached_load_s'] = round(min(loads), 3)
        aug = Augment(translate=4, flip=True)
        fast = cifar_dls(data, bs=bs, aug=aug, device='cpu', progress=False)
        res['fast_img_per_s'] = [round(images_per_sec(fast.train)) for _ in range(3)]
        res['fast_cutout_img_per_s'] = round(images_per_sec(cifar_dls(data, bs=bs, aug=Augment(cutout=8), device='cpu',
                                                                       progress=False).train))
        for nw in (0, 2):
            db = cifar_dls(data, engine='datablock', bs=bs, aug=aug, device='cpu', num_workers=nw, progress=False)
            res[f'datablock_{nw}w_img_per_s'] = round(images_per_sec(db.train, max_batches=20))
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True)
    p.add_argument('--bs', type=int, default=512)
    a = p.parse_args()
    print(json.dumps(main(a.data, a.bs), indent=1))

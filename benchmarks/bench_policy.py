"""Images per second of TrivialAugmentWide and AutoAugment (CIFAR-10): the batched policy of the fast engine
(cifar_fast/data/policy.py: draw on the CPU, apply to uint8 batches on --device) against torchvision applied one image
at a time, on PIL images as the DataBlock engine runs it, and on uint8 tensors (transforms.v2). With --data, also the
fast engine's whole training loader (translate 4 + flip) with and without each policy. Repeats are interleaved; each
figure is the median of --repeats, all values listed.

    python benchmarks/bench_policy.py --data ../shared/data/cifar10.tgz
    python benchmarks/bench_policy.py --data ../shared/data/cifar10.tgz --device cuda   # where a GPU exists
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def _sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()


def batched_img_per_s(x: torch.Tensor, policy: str, bs: int, device) -> float:
    "The fast engine's policy path: one generator draw for all images on the CPU, then batch by batch on `device`."
    from cifar_fast.data import policy as P
    x = x.to(device)
    g = torch.Generator().manual_seed(0)
    P.apply_policy(x[:bs], *P.draw_policy(policy, bs, g))  # warm-up (kernels, caches)
    _sync(device)
    t0 = time.perf_counter()
    ops, mags = P.draw_policy(policy, len(x), g, tuple(x.shape[-2:]))
    for i in range(0, len(x), bs): P.apply_policy(x[i:i + bs], ops[i:i + bs], mags[i:i + bs])
    _sync(device)
    return len(x) / (time.perf_counter() - t0)


def cuda_sync_check(x: torch.Tensor, policy: str, bs: int) -> str:
    "On CUDA: 'none', or the first operation of one batched policy step that made the host wait for the GPU."
    from cifar_fast.data import policy as P
    x = x[:bs].to('cuda')
    ops, mags = P.draw_policy(policy, len(x), torch.Generator().manual_seed(0))
    torch.cuda.set_sync_debug_mode('error')
    try:
        P.apply_policy(x, ops, mags)
        return 'none'
    except RuntimeError as e: return str(e).splitlines()[0]
    finally: torch.cuda.set_sync_debug_mode(0)


def per_image_img_per_s(x: torch.Tensor, policy: str, kind: str) -> float:
    "torchvision one image at a time: 'pil' (transforms v1 on PIL, the DataBlock engine's item transform) or 'v2'."
    import torchvision.transforms as T
    import torchvision.transforms.v2 as T2
    from PIL import Image
    mod = T if kind == 'pil' else T2
    tfm = mod.TrivialAugmentWide() if policy == 'trivial' else mod.AutoAugment(mod.AutoAugmentPolicy.CIFAR10)
    imgs = [Image.fromarray(a) for a in x.permute(0, 2, 3, 1).numpy()] if kind == 'pil' else list(x)
    tfm(imgs[0])
    t0 = time.perf_counter()
    for img in imgs: tfm(img)
    return len(imgs) / (time.perf_counter() - t0)


def loader_img_per_s(data: str, policy: str | None, bs: int, device, max_batches: int) -> float:
    "The fast engine's training loader (translate 4, flip, optional policy, normalise): batches per second × bs."
    from cifar_fast.data import Augment, cifar_dls
    dl = cifar_dls(data, bs=bs, aug=Augment(translate=4, flip=True, policy=policy), device=device, progress=False,
                   seed=0).train
    it = iter(dl)
    next(it)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    for i, b in enumerate(it):
        n += len(b[0])
        if i + 1 >= max_batches: break
    _sync(device)
    return n / (time.perf_counter() - t0)


def images(data: str | None, n: int) -> torch.Tensor:
    "The first `n` training images of `data` (decoded once into the cache), or smooth random images without it."
    if data:
        from cifar_fast.data import load_arrays, resolve_source
        return torch.from_numpy(load_arrays(resolve_source(data), progress=False).x['train'][:n])
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 255, size=32,
                                           mode='bilinear').round().to(torch.uint8)


def main(data: str | None, device: str, bs: int, n_batched: int, n_per_image: int, repeats: int,
         loader_batches: int) -> dict:
    import cifar_fast
    from cifar_fast.rundir import cpu_model
    res = dict(cifar_fast=os.path.dirname(cifar_fast.__file__), device=device, cpu=cpu_model(), cores=os.cpu_count(),
               threads=torch.get_num_threads(),
               torch=torch.__version__, bs=bs, images='CIFAR-10 train' if data else 'smooth random', repeats=repeats,
               load_avg_before=os.getloadavg())
    x = images(data, max(n_batched, n_per_image))
    if torch.device(device).type == 'cuda':
        res['gpu'] = torch.cuda.get_device_name()
        res['host_waits_for_gpu'] = {policy: cuda_sync_check(x, policy, bs) for policy in ('trivial', 'auto')}
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):  # interleaved, so drifts of a shared machine's load hit every setting alike
        for policy in ('trivial', 'auto'):
            runs.setdefault(f'{policy}_batched_{device}', []).append(batched_img_per_s(x[:n_batched], policy, bs,
                                                                                       device))
            for kind in ('pil', 'v2'):
                runs.setdefault(f'{policy}_per_image_{kind}_cpu', []).append(
                    per_image_img_per_s(x[:n_per_image], policy, kind))
            if data:
                runs.setdefault(f'loader_{policy}_{device}', []).append(
                    loader_img_per_s(data, policy, bs, device, loader_batches))
        if data: runs.setdefault(f'loader_none_{device}', []).append(
            loader_img_per_s(data, None, bs, device, loader_batches))
    res['img_per_s_median'] = {k: round(statistics.median(v)) for k, v in runs.items()}
    res['img_per_s_all'] = {k: [round(v) for v in vs] for k, vs in runs.items()}
    res['load_avg_after'] = os.getloadavg()
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', help='CIFAR-10 source (folder, archive, pickles); default: smooth random images')
    p.add_argument('--device', default='cpu', help="where the batched policy runs: 'cpu' or 'cuda'")
    p.add_argument('--bs', type=int, default=512)
    p.add_argument('--n-batched', type=int, default=10_240, help='images per timing of the batched policy')
    p.add_argument('--n-per-image', type=int, default=2_000, help='images per timing of torchvision per image')
    p.add_argument('--loader-batches', type=int, default=20, help='batches per timing of the whole loader')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, help="torch's intra-op threads (default: torch's choice). On a loaded "
                   "machine 1 is faster: a 2-thread op waits for whichever thread the other jobs delay")
    p.add_argument('--out', help='also write the JSON here')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    res = main(a.data, a.device, a.bs, a.n_batched, a.n_per_image, a.repeats, a.loader_batches)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with open(a.out, 'w') as f: f.write(text + '\n')

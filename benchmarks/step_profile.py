"""Where a recipe's CPU time goes: one training step of its net (batch, precision and memory format as `cifar-fast
train` would choose them here) by kind of op, at each training resolution; and, with `--data`, the real Learner's
training step by phase and its per-epoch validation against a plain evaluation loop of the same model.

    python benchmarks/step_profile.py --recipe recipes/quick.py --data ../shared/data/cifar10.tgz

The step: forward, loss, backward and SGD step on random images (the content does not change the cost of any op),
the whitening stem frozen as it is after `speed.whiten_bias_epochs`. Reports ms per step (median of `--steps` after a
warm-up, `--repeats` times, resolutions interleaved) and, from one torch.profiler pass, the share of the aten ops' self
time by kind and the five costliest convolutions by shape.
The phases: `cifar-fast train` of the recipe on 12,800 training images for 2 epochs (the first at `speed.low_res`
when the recipe has it), ms per training step from the Learner's events: the batch's making (loader, augmentation),
before_batch to the prediction (callbacks such as the downscale, and the forward pass), loss, backward, optimiser
step and after it; medians over each epoch's steps after its fifth. The whitening bias trains in both epochs here, as
in the recipe's first `speed.whiten_bias_epochs`, so its stem's backward is in them.
The validation: `learn.validate()` against `torch.no_grad` + autocast over the same test images at the Learner's
validation batch and at 1,000, interleaved, `--repeats` times.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

KINDS = {  # aten op -> kind; everything else is 'other'
    'aten::mkldnn_convolution': 'conv forward', 'aten::convolution_backward': 'conv backward',
    'aten::gelu': 'gelu', 'aten::gelu_backward': 'gelu',
    'aten::max_pool2d_with_indices': 'max pool', 'aten::max_pool2d_with_indices_backward': 'max pool',
    'aten::native_batch_norm': 'batch norm', 'aten::native_batch_norm_backward': 'batch norm',
}


def build(r, choices):
    from cifar_fast.models import create_model
    model = create_model(r.model, **r.model_kwargs)
    if r.speed.whiten:  # random normalised images give the stem's shape and cost; its values do not matter here
        model.init_whitening(torch.randn(512, 3, 32, 32))
        model.whiten.requires_grad_(False)
    if choices.channels_last: model = model.to(memory_format=torch.channels_last)
    return model


def step_fn(model, r, choices, res: int):
    fmt = torch.channels_last if choices.channels_last else torch.contiguous_format
    x = torch.randn(r.data.batch_size, 3, res, res).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (r.data.batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.85, nesterov=True)
    autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=choices.precision == 'bf16')

    def step():
        with autocast: loss = F.cross_entropy(model(x), y, label_smoothing=r.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def time_steps(step, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter(); step(); out.append(time.perf_counter() - t)
    return out


def profile_step(step, n: int = 5) -> dict:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        for _ in range(n): step()
    kinds, convs, total = defaultdict(float), [], 0.
    for e in p.key_averages(group_by_input_shape=True):
        if not e.key.startswith('aten::'): continue
        total += e.self_cpu_time_total
        kinds[KINDS.get(e.key, 'other')] += e.self_cpu_time_total
        if e.key in ('aten::mkldnn_convolution', 'aten::convolution_backward'):
            convs.append((e.self_cpu_time_total / n / 1e3, e.key.split('::')[1], str(e.input_shapes[:2])))
    return dict(share={k: round(v / total, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
                costliest_convs_ms=[dict(ms=round(ms, 2), op=op, shapes=s) for ms, op, s in sorted(convs)[::-1][:5]])


def validation(r, choices, data, repeats: int) -> dict:
    from cifar_fast.data.loaders import recipe_dls
    from cifar_fast.learner import build_learner, quiet_progress
    import tempfile
    dls = recipe_dls(r, torch.device('cpu'), progress=False, source=data, channels_last=choices.channels_last)
    learn = build_learner(r, dls, Path(tempfile.mkdtemp()), choices)
    quiet_progress(learn, False)
    model, autocast = learn.raw_model, torch.autocast('cpu', dtype=torch.bfloat16, enabled=choices.precision == 'bf16')

    @torch.no_grad()
    def plain(bs):
        model.eval()
        t = time.perf_counter()
        with autocast:
            for xb, yb in dls.valid.new(bs=bs): (model(xb).argmax(1) == yb).sum()
        return time.perf_counter() - t
    out = defaultdict(list)
    for _ in range(repeats):
        t = time.perf_counter(); learn.validate(); out['learner'].append(time.perf_counter() - t)
        out[f'plain_bs{dls.valid.bs}'].append(plain(dls.valid.bs))
        out['plain_bs1000'].append(plain(1000))
    return dict(n_images=len(dls.valid.dataset), valid_bs=dls.valid.bs, seconds={k: [round(s, 2) for s in v]
                                                                                   for k, v in out.items()})


def phases(r, data: str) -> dict:
    import tempfile
    from fastai.callback.core import Callback
    from cifar_fast.recipe import apply_overrides
    from cifar_fast.training import train

    class PhaseTimer(Callback):
        order = -100  # first at every event: its clock starts before any other callback's work
        def before_fit(self): self.t, self.last = defaultdict(list), None
        def before_epoch(self): self.last = None
        def before_batch(self):
            self.t0 = time.perf_counter()
            if self.training and self.last is not None: self._add('batch making', self.t0 - self.last)
        def after_pred(self): self.tp = time.perf_counter()
        def after_loss(self): self.tl = time.perf_counter()
        def after_backward(self): self.tb = time.perf_counter()
        def after_step(self): self.ts = time.perf_counter()
        def after_batch(self):
            if not self.training: return
            self.last = now = time.perf_counter()
            for k, v in (('before_batch + forward', self.tp - self.t0), ('loss', self.tl - self.tp),
                         ('backward', self.tb - self.tl), ('optimiser step', self.ts - self.tb),
                         ('after the step', now - self.ts)): self._add(k, v)
        def _add(self, k, v): self.t[(int(self.epoch), k)].append(v)

    over = {'data.source': data, 'data.train_size': 12800, 'epochs': 2}
    if r.speed.low_res: over['speed.low_res_epochs'] = 1
    timer = PhaseTimer()
    train(apply_overrides(r, over), runs_root=tempfile.mkdtemp(), show_progress=False, extra_cbs=[timer])
    out = {}
    for (epoch, k), v in timer.t.items():
        res = r.speed.low_res if r.speed.low_res and epoch == 0 else 32
        out.setdefault(f'epoch {epoch + 1} ({res} px)', {})[k] = round(1e3 * statistics.median(v[5:]), 2)
    for d in out.values(): d['total'] = round(sum(d.values()), 2)
    return out


def main(recipe: str, data: str | None, steps: int, repeats: int, resolutions: list[int] | None) -> dict:
    from cifar_fast.machine import apply_threads, choose
    from cifar_fast.recipe import load_recipe
    from cifar_fast.rundir import cpu_model
    r = load_recipe(recipe)
    choices = choose(r, torch.device('cpu'), 1)
    apply_threads(choices.threads)
    res_list = resolutions or sorted({32, *([r.speed.low_res] if r.speed.low_res else [])}, reverse=True)
    model = build(r, choices)
    steps_by_res = {res: step_fn(model, r, choices, res) for res in res_list}
    for s in steps_by_res.values(): time_steps(s, 3)  # warm-up: oneDNN picks its kernels per shape
    times = defaultdict(list)
    for _ in range(repeats):
        for res, s in steps_by_res.items(): times[res] += time_steps(s, steps)
    out = dict(recipe=r.name, model=r.model, batch=r.data.batch_size, precision=choices.precision,
               channels_last=choices.channels_last, threads=torch.get_num_threads(), cpu=cpu_model(),
               torch=torch.__version__, steps={})
    for res, s in steps_by_res.items():
        ms = [1e3 * t for t in times[res]]
        q = statistics.quantiles(ms, n=4)
        out['steps'][res] = dict(ms_median=round(statistics.median(ms), 1), ms_iqr=[round(q[0], 1), round(q[2], 1)],
                                 n=len(ms), **profile_step(s))
    if data:
        out['phases_ms'] = phases(r, data)
        out['validation'] = validation(r, choices, data, repeats)
    return out


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--recipe', default='recipes/quick.py')
    p.add_argument('--data', help='CIFAR-10 source: also time the per-epoch validation')
    p.add_argument('--res', type=int, nargs='+', help="training resolutions (default 32 and the recipe's low_res)")
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--out', help='also write the result as JSON here')
    a = p.parse_args()
    result = main(a.recipe, a.data, a.steps, a.repeats, a.res)
    print(json.dumps(result, indent=1))
    if a.out: Path(a.out).write_text(json.dumps(result, indent=1))

"""airbench's training techniques for the fastai Learner: each is a pure function (tested alone) and, where it acts
during training, a thin callback. Source: K. Jordan, airbench94.py (github.com/KellerJordan/cifar10-airbench)."""
from __future__ import annotations

import torch
from fastai.callback.core import Callback
from fastai.callback.tracker import TrackerCallback
from fastai.learner import AvgLoss, AvgSmoothLoss, Metric, Recorder
from torch import nn

from ..errors import ConfigError
from .restore import SwapsState


# ---- the whitening stem ---------------------------------------------------------------------------------------

def training_images(dls, n: int) -> torch.Tensor:
    "The first `n` training images, normalised, without augmentation (fast engine), or from un-shuffled batches."
    from ..data import NO_AUG
    from ..data.fast import FastDL
    dl = dls.train
    if isinstance(dl, FastDL): dl = dl.new(shuffle=False, drop_last=False, aug=NO_AUG, bs=min(n, 4096))
    else: dl = dl.new(shuffle=False, drop_last=False)
    xs, got = [], 0
    for b in dl:
        xs.append(b[0].as_subclass(torch.Tensor).float()); got += len(b[0])
        if got >= n: break
    return torch.cat(xs)[:n]


def check_whitening_stem(model: nn.Module, name: str | None = None) -> None:
    """speed.whiten needs a whitening stem: a model with `init_whitening` (a fastnet). Checked here for a built model
    and, on a meta-device build, by preflight before a run folder exists. `name`: the model's name, for the message."""
    if not hasattr(model, 'init_whitening'):
        raise ConfigError(f"recipe field speed.whiten=True needs a model with a whitening stem (a fastnet); "
                          f"{name or type(model).__name__!r} has none.")


def init_whitening(model: nn.Module, dls, n_images: int = 5000, eps: float = 5e-4) -> nn.Module:
    "Set a fastnet's patch-whitening stem from the first `n_images` training images and freeze its weights (airbench)."
    check_whitening_stem(model)
    model.init_whitening(training_images(dls, n_images).to(model.whiten.weight.device), eps)
    model.whiten.weight.requires_grad_(False)
    return model


class WhiteningBias(Callback):
    """Train the whitening stem's bias for the first `bias_epochs` epochs only, as airbench does. Set in
    `before_train`, an event that fastai's get_preds/validate never fire."""
    def __init__(self, bias_epochs: int = 3): self.bias_epochs = bias_epochs

    def before_train(self):
        self.learn.raw_model.whiten.bias.requires_grad_(self.epoch < self.bias_epochs)


# ---- lookahead-style weight averaging -----------------------------------------------------------------------------

def lookahead_decay(step: int, total_steps: int, every: int = 5, base: float = 0.95, power: float = 3.) -> float:
    "airbench's warm-up of the averaging rate: base**every · (step/total)**power, small early, strong at the end."
    return base ** every * (step / total_steps) ** power


@torch.no_grad()
def lookahead_update(avg: dict, model: nn.Module, decay: float):
    "avg ← decay·avg + (1-decay)·weights, then weights ← avg (floating-point tensors, buffers included)."
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            avg[k].lerp_(v, 1 - decay)
            v.copy_(avg[k])


class Lookahead(Callback):
    """Every `every` steps from epoch `start`, average the weights into a slow copy and copy it back;
    once more each epoch end."""
    order = Recorder.order + 4  # after the loggers (+1..+3) read this batch's loss; it only touches the weights

    def __init__(self, start_epoch: int = 3, every: int = 5, base: float = 0.95, power: float = 3.):
        self.start_epoch, self.every, self.base, self.power = start_epoch, every, base, power

    def before_fit(self): self.avg, self.total = None, self.n_epoch * len(self.dls.train)

    def before_train(self):
        # The slow copy starts at an epoch boundary (airbench: at the first update step of that epoch), where it always
        # equals the weights: so a run resumed at any later epoch rebuilds exactly the same state.
        if self.avg is None and self.epoch >= self.start_epoch:
            self.avg = {k: v.detach().clone() for k, v in self._model().state_dict().items()}

    def after_batch(self):
        step = self.epoch * self.n_iter + self.iter + 1  # not fastai's train_iter: it restarts at 0 on a resumed fit
        if not self.training or self.avg is None or step % self.every: return
        lookahead_update(self.avg, self._model(), lookahead_decay(step, self.total, self.every, self.base, self.power))

    def _model(self): return self.learn.raw_model

    def after_train(self):
        if self.avg is not None: lookahead_update(self.avg, self._model(), 1.)


# ---- progressive resizing -----------------------------------------------------------------------------------------

def downscale(x: torch.Tensor, size: int) -> torch.Tensor:
    "A batch (N, C, H, W) resized to size×size: bilinear and antialiased, so no aliasing comes from the shrink."
    if x.shape[-1] == size and x.shape[-2] == size: return x
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 else \
        torch.contiguous_format
    # antialiased resizing has no bf16 CPU kernel: resize in fp32 and cast back (the batch is tiny beside the net)
    y = nn.functional.interpolate(x.float(), size=(size, size), mode='bilinear', antialias=True, align_corners=False)
    return y.to(x.dtype).contiguous(memory_format=fmt)


class ProgressiveResize(Callback):
    """Train the first `epochs` epochs on images scaled down to `size`×`size`, then at full size (fast.ai's progressive
    resizing). The convolutions' cost goes with the pixels, (size/32)²; what does not (augmentation at full size, the
    optimiser, the per-batch host work) keeps it from falling as far: on a 2-core CPU an epoch of `quick` at 24 px took
    about 0.75× one at 32 (docs/benchmarks.md). Validation and prediction always see full-size images; the net must
    accept any size (fastnet's global pooling does)."""
    order = 1  # after MixUp/CutMix (order 0) mixed the batch: mixing is pixel-wise, so the order does not matter

    def __init__(self, size: int, epochs: int): self.size, self.epochs = size, epochs

    def before_batch(self):
        if not self.training or self.epoch >= self.epochs: return
        self.learn.xb = (downscale(self.xb[0], self.size),) + tuple(self.xb[1:])


# ---- exponential moving average of the weights ------------------------------------------------------------------

class WeightEMA(SwapsState, Callback):
    """timm's `ModelEmaV3` average of the weights (BatchNorm statistics included), updated after every optimiser step,
    with timm's decay warm-up if asked. Validation and the run's final evaluation and export use the average; training
    goes on from the raw weights. The Checkpointer saves the average beside them (`state_dict`), so a resumed run
    continues both exactly; the step count comes from the epoch and batch, as Lookahead's does."""
    order = TrackerCallback.order + 5  # swap back after BestWeights (59) kept what was validated, before the
    # Checkpointer (71) saves the raw weights

    def __init__(self, decay: float, warmup: bool = True): self.decay, self.warmup, self.raw = decay, warmup, None

    def before_fit(self):
        from timm.utils.model_ema import ModelEmaV3
        self.ema = ModelEmaV3(self._model(), decay=self.decay, use_warmup=self.warmup)

    def after_step(self): self.ema.update(self._model(), step=self.epoch * self.n_iter + self.iter + 1)

    def before_validate(self):
        model = self._model()
        self.raw = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.ema.module.state_dict())

    def restore(self, learn):
        "The raw weights back in the model, wherever the fit ended."
        if self.raw is not None: learn.raw_model.load_state_dict(self.raw); self.raw = None

    def _swap_out(self): self.restore(self.learn)
    after_epoch = after_cancel_validate = after_cancel_epoch = after_cancel_fit = _swap_out

    def state_dict(self) -> dict: return self.ema.module.state_dict()
    def load_state_dict(self, sd: dict): self.ema.module.load_state_dict(sd)
    def _model(self): return self.learn.raw_model


# ---- fewer host syncs -----------------------------------------------------------------------------------------

class DeviceSmoothLoss(AvgSmoothLoss):
    "fastai's smoothed loss kept on the training device (fastai moves each batch's loss to the CPU: a sync)."
    def accumulate(self, learn):
        self.count += 1
        loss = learn.loss.detach()
        if loss.ndim: loss = loss.mean()  # a batch's loss is one number already: its mean would be another op
        self.val = torch.lerp(loss, self.val.to(loss.device), self.beta)


class DeviceAvgLoss(AvgLoss):
    "fastai's average validation loss, accumulated on the device."
    def accumulate(self, learn):
        bs = len(learn.yb[0])
        self.total = self.total + learn.loss.detach().mean() * bs
        self.count += bs


class DeviceAccuracy(Metric):
    "Accuracy counted on the device, read once at epoch end; the same value as fastai's `accuracy`."
    def reset(self): self.correct, self.count = 0, 0
    def accumulate(self, learn):
        self.correct = self.correct + (learn.pred.argmax(dim=-1) == learn.yb[0]).sum()
        self.count += len(learn.yb[0])
    @property
    def value(self):
        return torch.as_tensor(self.correct, dtype=torch.float32).cpu() / self.count if self.count else None
    @property
    def name(self): return 'accuracy'


class LazySync(SwapsState, Callback):
    """Keep the Learner and its callbacks but read the loss back every `every` batches (and at epoch end): fastai's
    Recorder, AvgLoss and progress bar call .item()/.cpu() on every batch, which stalls the GPU for tiny nets."""
    order = Recorder.order + 2  # after the Recorder set learn.smooth_loss, before the progress bar reads it (60)

    def __init__(self, every: int = 10): self.every, self.shown, self.saved = every, float('nan'), None

    def before_fit(self):
        rec = self.learn.recorder
        self.saved = rec.smooth_loss, rec.loss
        # Through __dict__: these are the Recorder's own fields, but fastai's Callback.__setattr__ would warn that
        # the Learner has attributes of the same names.
        rec.__dict__.update(smooth_loss=DeviceSmoothLoss(rec.smooth_loss.beta), loss=DeviceAvgLoss())

    def after_batch(self):
        if not self.training: return
        if self.iter % self.every == 0 or self.iter == self.n_iter - 1: self.shown = float(self.learn.smooth_loss)
        self.learn.smooth_loss = self.shown  # what the progress bar formats: no sync between readings

    def restore(self, learn):
        "fastai's own meters back in the Recorder, wherever the fit ended."
        if self.saved is not None:
            learn.recorder.__dict__.update(zip(('smooth_loss', 'loss'), self.saved)); self.saved = None

    def after_fit(self): self.restore(self.learn)

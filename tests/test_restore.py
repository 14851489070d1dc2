"""Callbacks that swap Learner state (the EMA weights for validation, the Recorder's device meters, MixUp's loss)
put it back on every way out of the fit, a real exception mid-validation included (fastai skips `after_*` then)."""
import pytest
import torch
from fastai.callback.core import Callback
from fastai.learner import AvgLoss, AvgSmoothLoss

from cifar_fast.recipe import DataConfig, Recipe, SpeedConfig
from cifar_fast.training import train


class BoomInValidation(Callback):
    "Raise in the middle of the first validation, once the EMA weights and the device meters are in."
    order = 100

    def before_fit(self): self.learner = self.learn  # fastai detaches fit-time callbacks afterwards

    def after_batch(self):
        if self.training or self.iter != 1: return
        ema = next(c for c in self.learn.cbs if type(c).__name__ == 'WeightEMA')
        self.raw = {k: v.clone() for k, v in ema.raw.items()}  # the weights training goes on from
        self.swapped_loss = type(self.learn.recorder.loss).__name__
        raise RuntimeError('boom mid-validation')


def test_an_exception_mid_validation_restores_weights_meters_and_loss(synthetic, tmp_path):
    r = Recipe(name='t', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=2, lr=0.02, seed=0,
               precision='fp32', mixup=0.4, speed=SpeedConfig(ema=0.9, sync_every=4),
               data=DataConfig(source=str(synthetic), batch_size=32))
    boom = BoomInValidation()
    with pytest.raises(RuntimeError, match='boom mid-validation'): train(r, runs_root=tmp_path, extra_cbs=[boom])
    learn = boom.learner
    assert boom.swapped_loss == 'DeviceAvgLoss'  # the swaps were in place when it raised...
    model = learn.raw_model.state_dict()
    assert all(torch.equal(model[k], v) for k, v in boom.raw.items())  # ...and the raw weights are back,
    # fastai's meters,
    assert type(learn.recorder.loss) is AvgLoss and type(learn.recorder.smooth_loss) is AvgSmoothLoss
    assert type(learn.loss_func).__name__ == 'PlainCrossEntropyLossFlat'  # and the plain loss

"""SAM and adaptive SAM (recipe fields `sam`, `sam_adaptive`): one Learner step equals the algorithm written out by
hand, BatchNorm statistics count each batch once, runs train in bf16 and resume exactly, and what cannot work is
refused with a message."""
import copy

import pytest
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from torch import nn

from cifar_fast.callback.sam import SAMStep
from cifar_fast.errors import ConfigError
from cifar_fast.optim import opt_func
from cifar_fast.recipe import DataConfig, Recipe, SpeedConfig
from cifar_fast.rundir import read_json, run_state
from cifar_fast.training import train
from helpers import assert_resume_matches


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))


def one_batch_learner(net, r: Recipe) -> tuple[Learner, torch.Tensor, torch.Tensor]:
    "A Learner whose training set is exactly one batch of 8 images, stepped by the recipe's optimiser and SAMStep."
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    items = list(zip(x, y))
    dls = DataLoaders(DataLoader(items, bs=8), DataLoader(items, bs=8), device='cpu')
    return Learner(dls, net, loss_func=CrossEntropyLossFlat(), opt_func=opt_func(r), wd=0., cbs=[SAMStep()]), x, y


@pytest.mark.parametrize('adaptive', [False, True], ids=['sam', 'asam'])
def test_one_step_is_sam_written_out(adaptive):
    """SGD at the gradient taken at w + e, from w, where e = ρ·g/‖g‖ (SAM) or ρ·w²·g/‖|w|·g‖ (ASAM), g the gradient
    at w; BatchNorm's running statistics those of the first pass alone."""
    rho = 0.5 if adaptive else 0.05
    r = Recipe(opt='sgd', momentum=0.9, nesterov=True, sam=rho, sam_adaptive=adaptive)
    net = tiny_net()
    ref = copy.deepcopy(net)
    learn, x, y = one_batch_learner(net, r)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=0.1)

    ref.train()
    params = list(ref.parameters())
    F.cross_entropy(ref(x), y).backward()
    bn_after_first = (ref[1].running_mean.clone(), ref[1].running_var.clone())
    with torch.no_grad():
        g = [p.grad.clone() for p in params]
        w = [p.clone() for p in params]
        t = [p.abs() * gi if adaptive else gi for p, gi in zip(params, g)]
        scale = rho / (torch.sqrt(sum((ti ** 2).sum() for ti in t)) + 1e-12)
        for p, gi in zip(params, g): p.add_((p ** 2 if adaptive else 1.) * gi * scale)
    ref.zero_grad()
    momenta = ref[1].momentum
    ref[1].momentum = 0.
    F.cross_entropy(ref(x), y).backward()
    ref[1].momentum = momenta
    with torch.no_grad():
        for p, wi in zip(params, w): p.copy_(wi)
    torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True).step()

    for (name, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close((net[1].running_mean, net[1].running_var), bn_after_first)


@pytest.fixture
def recipe(synthetic):
    return Recipe(name='sam', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=2, lr=0.02, seed=0,
                  sam=0.05, data=DataConfig(source=str(synthetic), batch_size=32))


def test_a_sam_run_takes_two_passes_per_batch_in_bf16(recipe, tmp_path):
    "bf16 autocast in both passes; the run completes with finite losses and records the recipe's SAM settings."
    dtypes = []
    res = train(recipe.replace(precision='bf16', epochs=1), runs_root=tmp_path, extra_cbs=[ConvDtypes(dtypes)])
    n_batches = len(res.learn.dls.train)
    assert dtypes.count(torch.bfloat16) == 2 * n_batches and set(dtypes) == {torch.bfloat16}, dtypes
    assert read_json(res.run_dir / 'recipe.json')['recipe']['sam'] == 0.05
    assert run_state(res.run_dir) == 'complete' and 0 <= res.summary['test_accuracy'] <= 1


class ConvDtypes(Callback):
    "Records the output dtype of the first conv in every training forward pass."
    def __init__(self, out: list): self.out = out
    def before_fit(self):
        conv = next(m for m in self.learn.model.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad)
        self.hook = conv.register_forward_hook(lambda m, i, o: self.out.append(o.dtype) if m.training else None)
    def after_fit(self): self.hook.remove()


@pytest.mark.parametrize('adaptive', [False, True], ids=['sam', 'asam'])
def test_a_sam_run_resumes_exactly(recipe, tmp_path, adaptive):
    r = recipe.replace(epochs=3, sam=1.0 if adaptive else 0.05, sam_adaptive=adaptive, mixup=0.4)
    assert_resume_matches(r, tmp_path, epoch=1, it=2)


def test_a_learner_built_directly_with_a_loss_scaler_is_refused():
    "Outside a run (no preflight), SAMStep refuses an enabled loss scaler with the same check and words as preflight."
    from cifar_fast.callback.precision import MixedPrecisionAnyDevice

    class ScaledOnCPU(MixedPrecisionAnyDevice):  # fp16 with torch's CPU loss scaler, enabled as it would be on a GPU
        def before_fit(self): super().before_fit(); self.learn.scaler = torch.amp.GradScaler('cpu')

    learn, _, _ = one_batch_learner(tiny_net(), Recipe(opt='sgd', sam=0.05))
    learn.add_cb(ScaledOnCPU(amp_mode='fp16'))
    with pytest.raises(ConfigError, match=r"sam with fp16 \(the Learner's MixedPrecision has a loss scaler\): .*"
                                          r"Use --precision bf16 or fp32"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=0.1)


def test_what_sam_cannot_do_is_refused(recipe, tmp_path):
    with pytest.raises(ConfigError, match='speed.muon'):
        Recipe(sam=0.05, speed=SpeedConfig(muon=True))
    with pytest.raises(ConfigError, match='sam_adaptive=True needs a radius'):
        Recipe(sam_adaptive=True)
    with pytest.raises(ConfigError, match=r'sam=-0.1.*out of range'):
        Recipe(sam=-0.1)
    with pytest.raises(ConfigError, match="loss scaler. Use --precision bf16 or fp32"):
        train(recipe.replace(precision='fp16'), runs_root=tmp_path / 'runs')
    assert not (tmp_path / 'runs').exists() or not any((tmp_path / 'runs').iterdir())  # refused before any folder

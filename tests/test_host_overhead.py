"""The training step's host path, counted (benchmarks/host_overhead.py): what the Learner does around the model beyond a
plain PyTorch loop of the same work. Counts do not depend on the machine, so a change that adds a scalar read, a typed
tensor dispatch, a callback call or an op to the step fails here, not on a GPU. And the lean pieces that got the step
there give fastai's values exactly: schedules, optimiser hyperparameters, event dispatch, TTA."""
import random
from functools import partial
from pathlib import Path

import pytest
from helpers import load_benchmark, torch_threads
import torch
from fastai.callback.core import Callback
from fastai.callback.schedule import SchedCos, SchedLin, SchedNo
from fastai.callback import schedule as fastai_schedule
from fastai.learner import Learner
from fastai.optimizer import OptimWrapper

from cifar_fast.callback.schedule import combine_scheds, combined_cos, lr_schedule
from cifar_fast.learner import CifarLearner, PlainCrossEntropyLossFlat
from cifar_fast.optim import LeanOptimWrapper

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def ho():
    return load_benchmark('host_overhead')


@pytest.fixture(scope='module')
def counts(ho, tmp_path_factory):
    "Per-step counts of the Learner and the plain loop, for the GPU recipe and the CPU one."
    tmp = tmp_path_factory.mktemp('host')
    data = ho.synthetic_set(tmp)
    with torch_threads(1):  # as the benchmark counts; put back for the tests after these
        return {name: ho.count_steps(name, data, tmp / 'runs') for name in ('speed94', 'quick')}


def test_speed94_step_has_no_sync_no_dispatch_and_few_extra_ops(counts):
    c, plain = counts['speed94']['learner'], counts['speed94']['plain']
    assert not [k for k in c if k.startswith('sync:')], c  # no scalar read, no tensor from Python data
    assert c.get('torch_function', 0) == 0  # no typed-tensor dispatch
    assert c['callback_calls'] == c['handlers']  # no callback asked about an event it does not handle
    # Beyond the plain loop, three ops a step and no more: fastai's clone of the loss, the smoothed loss's lerp and
    # its debiasing division (the Recorder's record of each batch). Before the lean step: 216 against 183.
    assert c['aten'] - plain['aten'] == 3, (c['aten'], plain['aten'])
    assert c['aten'] <= 1.05 * plain['aten']


def test_quick_reads_the_loss_each_batch_as_its_recipe_asks_and_nothing_more(counts):
    c, plain = counts['quick']['learner'], counts['quick']['plain']
    # quick keeps fastai's per-batch reading (speed.sync_every=1): the smoothed loss to the host (fastai's to_detach,
    # a no-op on a CPU), and StopOnNaN's one read of the loss, whose finite and explosion checks run in Python. Nothing
    # else reads or wraps.
    assert {k: v for k, v in c.items() if k.startswith('sync:')} == {'sync:.cpu()': 1, 'sync:_local_scalar_dense': 1}
    assert c.get('torch_function', 0) == 0 and c['callback_calls'] == c['handlers']
    # Beyond the plain loop: speed94's three, the smoothed loss's mean and StopOnNaN's read. Before: 13 (its checks
    # ran as tensor ops and read twice).
    assert c['aten'] - plain['aten'] == 5, (c['aten'], plain['aten'])
    assert c['aten'] <= 1.05 * plain['aten']


@pytest.mark.parametrize('pcts', [[.23, .77], [.25, .75], [.5, .25, .25], [.1, .9]])
def test_combine_scheds_equals_fastais_bit_for_bit(pcts):
    scheds = [SchedLin(0.2, 1.), SchedCos(1., 0.07), SchedNo(3., 3.)][:len(pcts)]
    ours, theirs = combine_scheds(pcts, scheds), fastai_schedule.combine_scheds(pcts, scheds)
    rnd = random.Random(0)
    xs = [i / n for n in (7, 49, 97, 490) for i in range(n + 1)] + [rnd.random() for _ in range(1000)]
    acc, n = 0., 490  # fastai's pct_train: 1/(n_iter·n_epoch) added up batch by batch
    for _ in range(n): xs.append(acc); acc += 1. / n
    assert [ours(x) for x in xs] == [theirs(x) for x in xs]


def test_one_cycle_and_step_schedules_equal_fastais():
    xs = [i / 333 for i in range(334)]
    assert [combined_cos(.25, .1, 1., 1e-4)(x) for x in xs] == \
        [fastai_schedule.combined_cos(.25, .1, 1., 1e-4)(x) for x in xs]
    f = lr_schedule('step', 1., milestones=(.5, .75), gamma=.1)
    assert [f(x) for x in (0., .49, .5, .74, .75, .99)] == pytest.approx([1., 1., .1, .1, .01, .01])


@pytest.mark.parametrize('cls,kw', [(torch.optim.SGD, dict(momentum=.9, nesterov=True)),
                                    (torch.optim.Adam, dict(betas=(.9, .99))), (torch.optim.AdamW, {})])
def test_lean_optim_wrapper_reads_and_writes_what_fastais_does(cls, kw):
    groups = [[torch.nn.Parameter(torch.zeros(2))], [torch.nn.Parameter(torch.zeros(3))]]
    a = OptimWrapper(groups, opt=partial(cls, **kw), lr=.1)
    b = LeanOptimWrapper(groups, opt=partial(cls, **kw), lr=.1)
    assert a.hypers == b.hypers
    for k, v in (('lr', .3), ('lr', [.1, .2]), ('mom', .8), ('lr', (.5,)), ('wd', [1e-4, 0.])):
        a.set_hyper(k, v); b.set_hyper(k, v)
        assert a.hypers == b.hypers
        assert all(b.hyper(name, i) == h[name] for i, h in enumerate(a.hypers) for name in h)


class _Spy(Callback):
    "Records every event it handles; one more handler set on the instance, as a user might."
    order = 5
    def __init__(self): self.seen = []
    def before_batch(self): self.seen.append(('before_batch', self.training))
    def after_batch(self): self.seen.append(('after_batch', self.training))
    def after_fit(self): self.seen.append(('after_fit',))


def _events_seen(learner_cls, make_dls):
    "The spy's events and the Recorder's losses and lrs of one epoch, every RNG seeded the same (the loaders' too)."
    spy = _Spy()
    spy.after_epoch = lambda: spy.seen.append(('after_epoch',))  # an instance handler
    random.seed(0); torch.manual_seed(0)
    learn = learner_cls(make_dls(), torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)),
                        loss_func=PlainCrossEntropyLossFlat(), cbs=[spy])
    with learn.no_bar(): learn.fit(1, 1e-3)
    return spy.seen, [float(v) for v in learn.recorder.losses], learn.recorder.lrs


def test_cifar_learner_calls_the_same_handlers_as_fastai(tmp_path):
    from cifar_fast.data.fast import CifarTensors, fast_dataloaders
    g = torch.Generator().manual_seed(0)
    ds = lambda n: CifarTensors(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                                torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)])
    train, valid = ds(32), ds(16)
    make = lambda: fast_dataloaders(train, valid, bs=8, device='cpu', path=tmp_path)
    ours, theirs = _events_seen(CifarLearner, make), _events_seen(Learner, make)
    assert ours == theirs  # the same events, losses and lrs recorded
    # 32 training images at batch 8 and 16 test images at 16: 4 + 1 batches
    assert ('after_epoch',) in ours[0] and sum(e[0] == 'before_batch' for e in ours[0]) == 4 + 1


def test_one_pass_gives_each_tta_level_bit_for_bit():
    from cifar_fast.tta import LevelsTTAModel, TTAModel
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 30 * 30, 10)).eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        out = LevelsTTAModel(net, (0, 1, 2))(x)
        assert torch.equal(out[0], net(x).float())
        for level in (1, 2): assert torch.equal(out[level], TTAModel(net, level)(x))

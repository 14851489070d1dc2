"""The warm-up before cosine, step and linear_decay (`warmup`, `warmup_shape`): its lr values at chosen points of
training, each computed by hand in the comment beside it, then one short fastai fit whose recorded per-batch lr must
follow them."""
import pytest
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.optimizer import SGD
from torch import nn

from cifar_fast.callback.schedule import lr_schedule, schedule_callback, warmup_fraction
from cifar_fast.optim import param_groups
from cifar_fast.recipe import Recipe, SpeedConfig, load_recipe


def values(f, pcts): return [float(f(p)) for p in pcts]


def test_constant_warmup_then_step_at_milestones_of_the_rest():
    # lr 0.1, div 10: 0.01 for the first eighth of training; the step schedule then runs over the other 7/8, so its
    # milestones 0.5 and 0.75 fall at 1/8 + 7/8·0.5 = 0.5625 and 1/8 + 7/8·0.75 = 0.78125 of training.
    f = lr_schedule('step', 0.1, div=10, warmup=0.125, warmup_shape='constant', milestones=(0.5, 0.75), gamma=0.1)
    got = values(f, [0., 0.06, 0.12, 0.13, 0.55, 0.57, 0.78, 0.79, 0.999])
    assert got == pytest.approx([0.01, 0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_linear_warmup_rises_from_lr_over_div():
    # the same, linear: 0.01 at the start, halfway (0.01 + 0.1)/2 = 0.055 at 1/16, then the step schedule's 0.1
    f = lr_schedule('step', 0.1, div=10, warmup=0.125, warmup_shape='linear', milestones=(0.5, 0.75), gamma=0.1)
    assert values(f, [0., 0.0625, 0.13]) == pytest.approx([0.01, 0.055, 0.1])


def test_constant_warmup_before_cosine_and_linear_decay():
    # cosine from 1 to 0 over the last 3/4: at 1/4 + 3/4·1/2 = 0.625 it is halfway, 0.5; at the end 0
    f = lr_schedule('cosine', 1.0, div=10, warmup=0.25, warmup_shape='constant')
    assert values(f, [0., 0.2, 0.25, 0.625, 1.0]) == pytest.approx([0.1, 0.1, 1.0, 0.5, 0.0], abs=1e-6)
    # linear from 1 to 0 over the last 4/5, after 1/4 held: at 0.2 + 0.8·1/2 = 0.6 it is 0.5
    f = lr_schedule('linear_decay', 1.0, div=4, warmup=0.2, warmup_shape='constant')
    assert values(f, [0.1, 0.6]) == pytest.approx([0.25, 0.5])


def test_no_warmup_is_the_schedule_alone():
    f = lr_schedule('cosine', 1.0, div=10, warmup=0.0, warmup_shape='constant')
    assert values(f, [0., 0.5]) == pytest.approx([1.0, 0.5])  # cos from 1 to 0: half at the middle
    with pytest.raises(ValueError, match="warm-up shape 'cubic'"): lr_schedule('cosine', 1.0, warmup_shape='cubic')


def test_every_parameter_group_warms_up_at_its_own_multiple():
    # BatchNorm biases at 4 × the lr: during the warm-up 4 × 0.1/10 = 0.04 beside the rest's 0.01
    r = Recipe(schedule='step', lr=0.1, div=10, warmup=0.125, warmup_shape='constant',
               speed=SpeedConfig(bias_lr_scale=4.))
    sched = schedule_callback(r, param_groups(r, r.lr)).scheds['lr']
    assert sched(0.06) == pytest.approx([0.04, 0.01]) and sched(0.2) == pytest.approx([0.4, 0.1])


def test_warmup_in_epochs_keeps_its_length_when_epochs_change():
    r = Recipe(schedule='step', epochs=10, warmup_epochs=1, warmup_shape='constant')
    assert warmup_fraction(r) == 0.1 and warmup_fraction(r.replace(epochs=20)) == 0.05  # 1 of 10, 1 of 20
    assert warmup_fraction(Recipe(schedule='step', warmup=0.3)) == 0.3  # a fraction as given
    # a run no longer than its warm-up is all warm-up: 2 epochs of a 3-epoch warm-up at lr/div = 0.01 throughout
    short = r.replace(epochs=2, warmup_epochs=3)
    f = lr_schedule('step', 0.1, div=10, warmup=warmup_fraction(short), warmup_shape='constant')
    assert warmup_fraction(short) == 1. and values(f, [0., 0.5, 0.99]) == pytest.approx([0.01] * 3)


def test_resnet56_recipe_warms_up_as_he_et_al():
    # He et al. 2016, sec. 4.2: lr 0.01 for about 400 iterations (1.02 epochs at batch 128), then 0.1. Here the first
    # of 164 epochs at 0.01, 0.1 from the second, ÷10 at half of the other 163 epochs (1 + 81.5 = 82.5).
    r = load_recipe('recipes/resnet56.py')
    f = lr_schedule(r.schedule, r.lr, r.div, r.final_div, r.pct_start, warmup_fraction(r), r.milestones, r.gamma,
                    r.warmup_shape)
    e = r.epochs
    assert (r.epochs, r.warmup_epochs, r.warmup_shape) == (164, 1, 'constant')
    assert values(f, [0., 0.99 / e, 1.01 / e, 82.4 / e, 82.6 / e]) == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01])
    # with --epochs 30 the warm-up is still one epoch: 0.01 before 1/30 of training, 0.1 after
    f30 = lr_schedule(r.schedule, r.lr, r.div, warmup=warmup_fraction(r.replace(epochs=30)),
                      warmup_shape=r.warmup_shape)
    assert values(f30, [0.99 / 30, 1.01 / 30]) == pytest.approx([0.01, 0.1])


def test_a_fit_follows_the_warmup_batch_by_batch():
    "fastai's ParamScheduler sets the lr from the fraction of batches done: 2 of 16 batches are 1/8 of training."
    x = torch.randn(64, 3)
    ds = list(zip(x, (x.sum(1) > 0).long()))
    dls = DataLoaders(DataLoader(ds, bs=8, shuffle=False, drop_last=True), DataLoader(ds, bs=32))
    learn = Learner(dls, nn.Linear(3, 2), loss_func=nn.CrossEntropyLoss(), opt_func=SGD)
    r = Recipe(schedule='step', lr=0.1, div=10, warmup_epochs=0.25, warmup_shape='constant', milestones=(0.5,),
               gamma=0.1, epochs=2)
    cb = schedule_callback(r, param_groups(r, r.lr))
    with learn.no_bar(), learn.no_logging(): learn.fit(r.epochs, lr=0.1, cbs=[cb])
    # 8 batches an epoch, 16 in all; a quarter epoch is 1/8 of training: batches 0-1 (pct 0, 1/16) warm up at 0.01;
    # the step schedule's 0.5 falls at 1/8 + 7/8·0.5 = 0.5625 = 9/16, so batches 2-8 train at 0.1 and 9-15 at 0.01
    assert learn.recorder.hps['lr'] == pytest.approx([0.01] * 2 + [0.1] * 7 + [0.01] * 7)

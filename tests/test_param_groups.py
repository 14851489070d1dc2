"""The parameter groups built once per run (`cifar_fast.optim.param_groups`): each group's lr and weight decay against
airbench's published formulas (airbench94.py and airbench94_muon.py, K. Jordan), and the schedule and the optimiser
reading the same object."""
import pytest

from cifar_fast.callback.schedule import schedule_callback
from cifar_fast.optim import param_groups
from cifar_fast.recipe import DataConfig, Recipe, SpeedConfig


def test_the_default_is_one_group_with_the_recipes_lr_and_decay():
    g = param_groups(Recipe(lr=0.02, wd=5e-4), 0.02)
    assert g.names == ['all'] and g.fit_hypers() == (0.02, 5e-4)


def test_decoupled_units_and_the_bias_scaler_match_airbench94():
    r = Recipe(lr=11.5, wd=0.0153, momentum=0.85, opt='sgd', data=DataConfig(batch_size=1024),
               speed=SpeedConfig(decoupled=True, bias_lr_scale=64., loss_reduction='sum'))
    g = param_groups(r, r.lr)
    # airbench94.py: kilostep_scale = 1024 * (1 + 1 / (1 - momentum)); lr = hyp lr / kilostep_scale;
    # wd = hyp weight_decay * batch_size / kilostep_scale; lr_biases = lr * bias_scaler;
    # groups: (norm biases, lr_biases, wd / lr_biases), (other params, lr, wd / lr)
    kilostep = 1024 * (1 + 1 / (1 - 0.85))
    lr, wd = 11.5 / kilostep, 0.0153 * 1024 / kilostep
    lr_biases = lr * 64
    lrs, wds = g.fit_hypers()
    assert g.names == ['norm_bias', 'rest']
    assert lrs == pytest.approx([lr_biases, lr]) and wds == pytest.approx([wd / lr_biases, wd / lr])


def test_muon_groups_match_airbench94_muon_and_the_schedule_reads_them():
    r = Recipe(lr=0.02, wd=5e-4, speed=SpeedConfig(muon=True, bias_lr_scale=4., muon_lr=0.24, muon_wd=0.,
                                                   muon_momentum=0.6))
    g = param_groups(r, r.lr)
    assert g.names == ['norm_bias', 'muon', 'rest']
    # airbench94_muon.py: Muon(filter_params, lr=0.24, momentum=0.6, nesterov=True), no weight decay on the filters
    assert g['muon'].momentum == 0.6 and g['muon'].wd == 0. and g.lrs()[1] == pytest.approx(0.24)
    assert g['norm_bias'].wd == pytest.approx(5e-4 / 4) and g.lrs()[0] == pytest.approx(0.08)
    sched = schedule_callback(r, g).scheds
    for pct in (0., 0.3, 1.):
        lr_now = sched['lr'](pct)
        assert lr_now[1] / lr_now[2] == pytest.approx(0.24 / 0.02) and lr_now[0] / lr_now[2] == pytest.approx(4)
        mom = sched['mom'](pct)
        assert mom[1] == 0.6 and mom[0] == mom[2]  # one_cycle moves SGD's momentum only

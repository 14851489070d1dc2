"""cifar-fast tune: the search space (sweep's grammar plus ranges) and its refusals; pruning that really stops a trial
and says so in its run folder; a study whose process is killed with SIGKILL mid-trial continues, keeping its finished
trials; --show. Trials are 2-3 epoch fits of a tiny fastnet on the synthetic set."""
import argparse
import io
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cifar_fast.errors import CifarFastError, ConfigError
from cifar_fast.recipe import DataConfig, Recipe
from cifar_fast.rundir import read_json, read_metrics

optuna = pytest.importorskip('optuna')
from optuna.trial import TrialState  # noqa: E402

from cifar_fast.tuning import Param, add_commands, load_study, parse_space, show, study_summary, tune  # noqa: E402


def tiny(synthetic, epochs=2) -> Recipe:
    return Recipe(name='tiny', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=epochs, lr=0.02,
                  seed=0, precision='fp32', tta=0, data=DataConfig(source=str(synthetic), batch_size=32))


def test_space_reads_ranges_log_ranges_and_choices(synthetic):
    s = parse_space(['lr=0.01..0.1:log', 'label_smoothing=0,0.1,0.2', 'epochs=1..3'], tiny(synthetic))
    assert s['lr'] == Param('lr', 0.01, 0.1, True)
    assert s['label_smoothing'].choices == (0.0, 0.1, 0.2)
    assert s['epochs'] == Param('epochs', 1, 3, False) and isinstance(s['epochs'].lo, int)  # an int field: ints


@pytest.mark.parametrize('spec, message', [
    ('lrr=0.01..0.1', 'unknown recipe field'),  # sweep's own check, with its suggestion
    ('lr=0.1..0.01', 'low end must be below'),
    ('label_smoothing=0..0.5:log', 'log range needs LO > 0'),
    ('lr=0.01..0.1:ln', "only flag is ':log'"),
    ('label_smoothing=0..2', 'label_smoothing'),  # the high end fails the field's own bounds
    ('lr=..0.1', 'a range is LO..HI'),
    ('name=a..b', 'numeric field'),
])
def test_bad_space_is_refused_before_anything_starts(synthetic, tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        tune(tiny(synthetic), [spec], 2, runs_root=tmp_path)
    assert not any(tmp_path.iterdir())  # no study folder, no run folder


def test_bad_trials_and_missing_optuna(synthetic, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match='--trials'):
        tune(tiny(synthetic), ['lr=0.01,0.02'], 0, runs_root=tmp_path)
    import importlib
    real = importlib.import_module
    monkeypatch.setattr(importlib, 'import_module',
                        lambda n, *a: (_ for _ in ()).throw(ImportError(n)) if n == 'optuna' else real(n, *a))
    with pytest.raises(CifarFastError, match=r"pip install 'cifar_fast\[tune\]'"):
        tune(tiny(synthetic), ['lr=0.01,0.02'], 2, runs_root=tmp_path)


def test_pruning_really_stops_a_trial(synthetic, tmp_path):
    "A pruner that prunes everything after epoch 1 (accuracy can never reach 1.01): one epoch run of 3, said so."
    pruner = optuna.pruners.ThresholdPruner(lower=1.01, n_warmup_steps=0)
    res = tune(tiny(synthetic, epochs=3), ['lr=0.01,0.02'], 1, runs_root=tmp_path, study='p', pruner=pruner, seed=0)
    assert res['n_pruned'] == 1 and res['n_complete'] == 0
    run = tmp_path / 'p' / 'trial-0000'
    assert len(read_metrics(run / 'metrics.csv')) == 1  # stopped after its first epoch of three
    status, summary = read_json(run / 'status.json'), read_json(run / 'summary.json')
    assert status['state'] == 'pruned' and status['epoch'] == 1
    assert summary['pruned'] is True and summary['pruned_at_epoch'] == 1 and summary['epochs'] == 1
    t = load_study(tmp_path / 'p').trials[0]
    assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [1]
    assert res['epoch_seconds_saved'] > 0  # two epochs not run
    # --show: the table, and the history figure beside the journal
    from rich.console import Console
    buf = io.StringIO()
    assert show('p', str(tmp_path), Console(file=buf, width=200)) == 0
    assert 'pruned' in buf.getvalue() and (tmp_path / 'p' / 'history.png').stat().st_size > 1000


def test_an_existing_study_refuses_another_space(synthetic, tmp_path):
    from cifar_fast.rundir import write_json
    write_json(tmp_path / 's' / 'study.json', dict(hash='other', space={}))
    with pytest.raises(ConfigError, match='another recipe or space'):
        tune(tiny(synthetic), ['lr=0.01,0.02'], 1, runs_root=tmp_path, study='s')


CHILD = textwrap.dedent('''
    import os, signal, sys
    from fastai.callback.core import Callback
    from cifar_fast.recipe import DataConfig, Recipe
    from cifar_fast.tuning import tune

    class DieInSecondTrial(Callback):
        "SIGKILL in the second trial's first epoch: no handler, no cleanup, as the kernel's OOM killer would."
        def after_epoch(self):
            if self.learn.path.name == 'trial-0001': os.kill(os.getpid(), signal.SIGKILL)

    r = Recipe(name='tiny', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=2, lr=0.02, seed=0,
               precision='fp32', tta=0, data=DataConfig(source=sys.argv[1], batch_size=32))
    tune(r, ['lr=0.01,0.02,0.03'], 2, runs_root=sys.argv[2], study='k', pruner='none', seed=0,
         extra_cbs=[DieInSecondTrial()])
''')


def test_a_killed_study_resumes_keeping_its_trials(synthetic, tmp_path):
    p = subprocess.run([sys.executable, '-c', CHILD, str(synthetic), str(tmp_path)], capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, PYTHONWARNINGS='ignore'))
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    before = load_study(tmp_path / 'k').trials
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    first = (before[0].params, before[0].value)
    res = tune(tiny(synthetic), ['lr=0.01,0.02,0.03'], 2, runs_root=tmp_path, study='k', pruner='none', seed=0)
    after = load_study(tmp_path / 'k').trials
    assert res['retried'] == [1]
    assert [t.state for t in after] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert (after[0].params, after[0].value) == first  # the finished trial is kept, not run again
    assert after[2].params == before[1].params  # the killed trial's point is tried again
    assert res['n_complete'] == 2 and study_summary(tmp_path / 'k')['best'] is not None


def test_cli_parses_tune_and_show():
    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest='command'))
    a = p.parse_args(['tune', 'recipes/quick.py', '--param', 'lr=5..20:log', '--param', 'label_smoothing=0,0.2',
                      '--trials', '12', '--pruner', 'halving'])
    assert a.param == ['lr=5..20:log', 'label_smoothing=0,0.2'] and a.trials == 12 and a.func.__name__ == 'cmd_tune'
    a = p.parse_args(['tune', '--show', 'quick-tune'])
    assert a.show == 'quick-tune' and a.recipe_path is None
    with pytest.raises(ConfigError, match='--trials'):
        a = p.parse_args(['tune', 'recipes/quick.py', '--param', 'lr=5..20'])
        a.func(a)


def test_show_an_unknown_study_says_how_to_start_one(tmp_path):
    from rich.console import Console
    with pytest.raises(ConfigError, match='no study .*cifar-fast tune RECIPE'):
        show('nope', str(tmp_path), Console(file=io.StringIO()))


def test_the_last_epoch_is_never_pruned(synthetic, tmp_path):
    "Pruning after the last epoch saves nothing and would drop a finished result: such a trial completes."
    pruner = optuna.pruners.ThresholdPruner(lower=1.01, n_warmup_steps=0)
    res = tune(tiny(synthetic, epochs=1), ['lr=0.01,0.02'], 1, runs_root=tmp_path, study='l', pruner=pruner, seed=0)
    assert res['n_complete'] == 1 and res['n_pruned'] == 0
    assert read_json(tmp_path / 'l' / 'trial-0000' / 'status.json')['state'] == 'complete'

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


def test_pruning_really_stops_a_trial(synthetic, tmp_path, capsys):
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
    # `cifar-fast runs`: the trial under its study's row, pruned (not complete) after epoch 1 of 3
    out = _runs_output(tmp_path, capsys)
    row = out[_line(out, '│', 'p/trial-0000')]
    assert _line(out, 'study p', '1 trial ', '1 pruned') < out.index(row)
    assert 'pruned at epoch 1' in row and '1/3' in row and 'complete' not in row
    assert f"{100 * summary['test_accuracy']:.2f}%" in row  # its accuracy at the epoch it stopped


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


# ---- `cifar-fast runs`: a study's trials, grouped, and a pruned trial said to be pruned ---------------------------

def _run_folder(d, r: Recipe, epochs: int, acc: float | None = None, state: str = 'complete', mtime: float = 0.):
    """A run folder as `train` leaves it (recipe.json, status.json, and summary.json last for a finished run), with
    no training: what `runs` reads. `mtime`: the folder's age, which orders the listing."""
    from cifar_fast.recipe import recipe_hash, to_dict
    from cifar_fast.rundir import set_status, write_json
    write_json(d / 'recipe.json', dict(recipe=to_dict(r), hash=recipe_hash(r)))
    set_status(d, state, epoch=epochs)
    if state == 'complete':
        write_json(d / 'summary.json', dict(recipe=r.name, model=r.model, epochs=epochs, epochs_planned=r.epochs,
                                            test_accuracy=acc, test_accuracy_tta=None, best_epoch_accuracy=acc,
                                            wall_seconds=12.0, stopped_early=epochs < r.epochs))
    else: (d / 'checkpoints').mkdir(); (d / 'checkpoints' / 'last.pth').write_bytes(b'')  # resumable
    os.utime(d, (mtime, mtime))
    return d


def _runs_output(root, capsys) -> list[str]:
    "The lines `cifar-fast runs --runs ROOT` prints."
    from cifar_fast.cli import main
    capsys.readouterr()  # what came before (a trial's training log) is not this listing
    assert main(['runs', '--runs', str(root)]) == 0
    return capsys.readouterr().out.splitlines()


def _line(lines: list[str], *words) -> int:
    "The index of the one line holding all `words`."
    hits = [i for i, x in enumerate(lines) if all(w in x for w in words)]
    assert len(hits) == 1, (words, '\n'.join(lines))
    return hits[0]


def test_runs_groups_trials_under_their_study_and_says_pruned(synthetic, tmp_path, capsys):
    from cifar_fast.resume import check_resumable
    from cifar_fast.rundir import write_json
    from cifar_fast.tuning import mark_pruned
    r = tiny(synthetic, epochs=3)
    _run_folder(tmp_path / 'plain-1', r, 3, 0.50, mtime=1000)
    s1 = tmp_path / 's1'
    write_json(s1 / 'study.json', dict(recipe={}, hash='h', space={}))
    _run_folder(s1 / 'trial-0000', r, 3, 0.40, mtime=2000)
    mark_pruned(_run_folder(s1 / 'trial-0001', r, 1, 0.20, mtime=2001), 1, 1, 's1')  # as tune marks a pruned trial
    _run_folder(s1 / 'trial-0002', r, 3, 0.45, mtime=2002)
    s2 = tmp_path / 's2'
    write_json(s2 / 'study.json', dict(recipe={}, hash='h', space={}))
    _run_folder(s2 / 'trial-0000', r, 1, state='interrupted', mtime=3000)
    _run_folder(tmp_path / 'plain-2', r, 2, 0.30, mtime=4000)  # newer than both studies: still with plain-1
    out = _runs_output(tmp_path, capsys)
    # each group's heading, then its members; groups ordered by their oldest folder, trials by number
    heads = [_line(out, 'not in a sweep or study'), _line(out, 'study s1', '3 trials', '2 complete, 1 pruned'),
             _line(out, 'study s2', '1 trial ', '1 interrupted')]
    members = [[_line(out, '│', 'plain-1 '), _line(out, '│', 'plain-2 ')],
               [_line(out, '│', f's1/trial-000{i}') for i in range(3)], [_line(out, '│', 's2/trial-0000')]]
    assert heads == sorted(heads) and all(h < m[0] for h, m in zip(heads, members))
    assert members[0][-1] < heads[1] and members[1] == sorted(members[1]) and members[1][-1] < heads[2]
    pruned = out[members[1][1]]  # honest: pruned when, how far of the planned epochs, and its accuracy then
    assert 'pruned at epoch 1' in pruned and '1/3' in pruned and '20.00%' in pruned and 'complete' not in pruned
    assert 'complete (best)' in out[members[1][2]] and '(best)' not in out[members[1][0]]  # 45% beats 40%
    assert any("stopped early by its study's pruner" in x for x in out[members[-1][0]:])
    # a trial is the study's to retry, not `train --resume`'s
    hint = out[_line(out, 's2/trial-0000 (interrupted)')]
    assert 'cifar-fast tune' in hint and '--resume' not in hint
    # the state and its consequences outside the table
    from cifar_fast.rundir import run_state
    assert run_state(s1 / 'trial-0001') == 'pruned' and run_state(s1 / 'trial-0000') == 'complete'
    with pytest.raises(ConfigError, match="pruner stopped .*nothing to resume"): check_resumable(s1 / 'trial-0001')
    # a study's own folder as --runs: its trials under its heading
    out = _runs_output(s1, capsys)
    assert _line(out, 'study s1', '3 trials') < _line(out, 's1/trial-0000') < _line(out, 's1/trial-0002')

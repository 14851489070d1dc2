"""Faults a user causes or meets, through the command line as a user meets them: exit code 2, one message naming the
file, field or value and the way out, no traceback (unless --debug), no temporary files, and a status.json that
tells the truth. (Data-source and cache faults: tests/test_data_faults.py and test_data_validation.py.)"""
import os
import subprocess
import sys

import pytest
import torch
from fastai.callback.core import Callback

from cifar_fast.cli import main
from cifar_fast.recipe import Recipe, field_paths
from cifar_fast.rundir import read_json, run_state
from cifar_fast.training import train

TINY = ['--model_kwargs.widths', '[8,16,32]', '--data.batch_size', '32', '--precision', 'fp32', '--tta', '0']


@pytest.fixture
def cli(synthetic, tmp_path, capsys, monkeypatch):
    "cifar-fast in this process, from an empty folder, on the synthetic set: (exit code, everything it printed)."
    monkeypatch.chdir(tmp_path)
    quick = str(__import__('pathlib').Path(__file__).resolve().parents[1] / 'recipes' / 'quick.py')

    def run(*argv, recipe=True):
        args = list(argv)
        if recipe and args[0] == 'train': args = ['train', quick, '--data', str(synthetic), *TINY, *args[1:]]
        code = main(args)
        out = capsys.readouterr()
        return code, ' '.join((out.out + out.err).split())  # rich wraps long lines: compare words
    return run


def _no_traceback(text): assert 'Traceback' not in text and 'File "' not in text, text[-800:]
def _no_temp(root): assert not [p for p in root.rglob('*') if '.tmp' in p.name], list(root.rglob('*.tmp*'))


# ---- training that goes wrong ----------------------------------------------------------------------------------

def test_an_exploding_loss_without_nan_stops_as_diverged(cli, tmp_path):
    code, out = cli('train', '--epochs', '2', '--lr', '1e6')
    assert code == 2 and 'diverged' in out and 'exploded' in out and 'Lower the learning rate' in out, out
    _no_traceback(out)
    [d] = (tmp_path / 'runs').iterdir()
    assert run_state(d) == 'diverged' and 'exploded' in read_json(d / 'status.json')['message']
    _no_temp(d)


class _NanValidation(Callback):
    "The validation loss of epoch 2 becomes NaN while training stays finite (the weights are fine)."
    order = 0
    def after_loss(self):
        if not self.training and self.epoch == 1: self.learn.loss = self.loss * float('nan')


def test_a_nan_validation_loss_stops_as_diverged(synthetic, tmp_path):
    from cifar_fast.errors import TrainingDiverged
    r = Recipe(name='t', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=3, lr=0.02, seed=0,
               data=__import__('cifar_fast').DataConfig(source=str(synthetic), batch_size=32))
    with pytest.raises(TrainingDiverged,
                       match=r'validation loss became nan at epoch 2:.*last good checkpoint \(epoch 1\)'):
        train(r, runs_root=tmp_path, extra_cbs=[_NanValidation()])
    [d] = tmp_path.iterdir()
    assert run_state(d) == 'diverged' and not (d / 'summary.json').exists()
    assert torch.load(d / 'checkpoints' / 'last.pth', weights_only=True)['epoch'] == 0


def test_a_training_set_smaller_than_a_batch_is_refused_before_anything_is_written(cli, tmp_path):
    code, out = cli('train', '--data.train_size', '20', '--data.batch_size', '64')
    assert code == 2 and 'data.train_size=20 is smaller than one batch' in out and '--data.batch_size 20' in out
    code, out = cli('train', '--data.batch_size', '512')  # the whole (synthetic) set, 200 images, is too small
    assert code == 2 and 'training set (200 images) is smaller than one batch' in out, out
    assert not (tmp_path / 'runs').exists() or not list((tmp_path / 'runs').iterdir())


FLOATS = sorted(k for k, (_, tp) in field_paths().items() if 'float' in str(tp) and k != 'lr' or k == 'lr')


@pytest.mark.parametrize('field', FLOATS)
@pytest.mark.parametrize('value', ['nan', 'inf', '-inf'])
def test_non_finite_numbers_are_refused_for_every_float_field(field, value):
    from cifar_fast.errors import ConfigError
    from cifar_fast.recipe import apply_overrides, parse_overrides
    with pytest.raises(ConfigError, match=rf'{field}=(nan|inf|-inf)'):
        apply_overrides(Recipe(), parse_overrides([f'--{field}', value]))


def test_lr_nan_leaves_no_run_folder(cli, tmp_path):
    code, out = cli('train', '--lr', 'nan')
    assert code == 2 and 'lr=nan: must be a finite number' in out and not (tmp_path / 'runs').exists()


# ---- messages that name the right thing ------------------------------------------------------------------------

@pytest.mark.parametrize('argv,msg', [
    (['--model', 'fastnett'], "Unknown model 'fastnett'"),  # quick has speed.whiten: still named as the model
    (['--data.engine', 'dali', '--data.alt_flip', 'true'], "data.engine='dali': allowed values"),
    (['--data.train_size', '999999'], 'data.train_size=999999 is larger than the train split'),
])
def test_each_field_is_checked_alone_before_combinations(cli, argv, msg):
    code, out = cli('train', *argv)
    assert code == 2 and msg in out, out
    _no_traceback(out)


def test_resume_of_a_missing_or_non_run_folder_says_what_it_is_and_lists_runs(cli, tmp_path):
    code, _ = cli('train', '--epochs', '1')
    assert code == 0
    code, out = cli('train', '--resume', 'runs/nope', recipe=False)
    assert code == 2 and 'runs/nope: does not exist' in out and 'Most recent runs under runs/: quick-' in out, out
    (tmp_path / 'runs' / 'notes').mkdir()
    code, out = cli('train', '--resume', 'runs/notes', recipe=False)
    assert code == 2 and 'is not a run folder' in out and '(complete)' in out, out


# ---- files and disks -------------------------------------------------------------------------------------------

def test_a_runs_folder_under_a_file_is_one_message(cli, tmp_path):
    (tmp_path / 'afile').write_text('x')
    code, out = cli('train', '--runs', 'afile/runs')
    assert code == 2 and 'cannot write afile/runs' in out and 'a part of this path is a file' in out, out
    assert '--runs' in out, out
    _no_traceback(out)


def test_debug_shows_the_traceback(cli, tmp_path):
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(OSError): cli('train', '--runs', 'afile/runs', '--debug')


def test_a_full_disk_while_checkpointing_fails_the_run_and_cleans_up(synthetic, tmp_path):
    """RLIMIT_FSIZE makes every write past 150 kB fail (EFBIG), as a full disk would, in a subprocess: the run
    folder's small files fit, the first checkpoint does not."""
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from cifar_fast.cli import main
resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, resource.RLIM_INFINITY))
sys.exit(main(['train', {str(__import__('pathlib').Path(__file__).resolve().parents[1] / 'recipes' / 'quick.py')!r},
               '--data', {str(synthetic)!r}, '--epochs', '1', '--runs', 'runs', '--model_kwargs.widths', '[64,128,256]',
               '--data.batch_size', '32', '--precision', 'fp32', '--tta', '0']))
"""
    from cifar_fast.data import cifar_data
    cifar_data(synthetic, progress=False)  # the session's decode cache is written here, before the limit
    p = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = ' '.join((p.stdout + p.stderr).split())
    assert p.returncode == 2 and 'no space left' in out and 'Free some space' in out, out[-2000:]
    assert 'cannot write runs/' in out and 'checkpoints' in out  # the file being written, named
    _no_traceback(out)
    [d] = (tmp_path / 'runs').iterdir()
    st = read_json(d / 'status.json')
    assert st['state'] == 'failed' and 'no space left' in st.get('error', ''), st
    _no_temp(d)


def test_a_damaged_last_checkpoint_resumes_from_the_one_before(synthetic, tmp_path, recwarn):
    from helpers import SignalAt
    r = Recipe(name='t', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=3, lr=0.02, seed=0,
               data=__import__('cifar_fast').DataConfig(source=str(synthetic), batch_size=32))
    d = train(r, runs_root=tmp_path, extra_cbs=[SignalAt(2, 1)]).run_dir  # 2 epochs done: last.pth and prev.pth
    ck = d / 'checkpoints' / 'last.pth'
    ck.write_bytes(ck.read_bytes()[:1000])  # a crash of the machine mid-write
    res = train(None, resume=d)
    assert res.summary['epochs'] == 3
    assert any('damaged' in str(w.message) and 'prev.pth' in str(w.message) for w in recwarn)
    d = train(r, runs_root=tmp_path / 'again', extra_cbs=[SignalAt(2, 1)]).run_dir
    for name in ('last.pth', 'prev.pth'): (d / 'checkpoints' / name).write_bytes(b'not a checkpoint')
    from cifar_fast.errors import ConfigError
    with pytest.raises(ConfigError, match=r'last.pth is damaged .* no earlier checkpoint: this run cannot be resumed'):
        train(None, resume=d)


def test_a_damaged_model_pth_is_named_by_evaluate_interpret_and_predict(cli, tmp_path, synthetic):
    code, _ = cli('train', '--epochs', '1')
    [d] = (tmp_path / 'runs').iterdir()
    (d / 'model.pth').write_bytes((d / 'model.pth').read_bytes()[:500])
    img = next((synthetic / 'test').rglob('*.png'))
    for argv in (['evaluate', str(d)], ['interpret', str(d)], ['predict', str(d), str(img)]):
        code, out = cli(*argv, recipe=False)
        assert code == 2 and 'model.pth is damaged' in out and '--trust-pickle' in out, (argv, out)
        _no_traceback(out)


def test_a_read_only_runs_folder_is_one_message(synthetic):
    "As root, which ignores permissions, the CLI runs in a child that drops to an unprivileged user (as setpriv would)."
    import shutil
    import tempfile
    from pathlib import Path

    from helpers import NOBODY, cli_in_child
    top = Path(tempfile.mkdtemp(prefix='cifar_fast_ro_'))
    try:
        top.chmod(0o755)
        shutil.copytree(synthetic, top / 'cifar10')
        ro = top / 'runs'
        ro.mkdir()
        root = os.geteuid() == 0
        if root:
            try: os.chown(ro, NOBODY, NOBODY)
            except OSError as e: pytest.skip(f'running as root and cannot hand the folder to uid {NOBODY}: {e}')
        ro.chmod(0o500)
        # The recipe from a folder the unprivileged child can read, wherever the checkout lies (mktemp -d is 0700).
        quick = str(shutil.copy(Path(__file__).resolve().parents[1] / 'recipes' / 'quick.py', top / 'quick.py'))
        code, out = cli_in_child(['train', quick, '--data', str(top / 'cifar10'), *TINY, '--runs', str(ro)],
                                 {'CIFAR_FAST_CACHE': str(top / 'cache')}, uid=NOBODY if root else None)
        out = ' '.join(out.split())
        assert code == 2 and f'cannot write {ro}/quick-' in out and 'not writable' in out, out
        assert '--runs FOLDER' in out, out
        _no_traceback(out)
        assert list(ro.iterdir()) == []
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_recipe_in_a_folder_the_user_cannot_enter_is_named_as_unreadable(tmp_path):
    "Not 'cannot write': the file is to be read. As root the CLI child drops to nobody, whom a 0700 folder keeps out."
    from pathlib import Path

    from helpers import NOBODY, cli_in_child
    shut = tmp_path / 'private'
    shut.mkdir()
    (shut / 'mine.py').write_text((Path(__file__).resolve().parents[1] / 'recipes' / 'quick.py').read_text())
    root = os.geteuid() == 0
    shut.chmod(0o700 if root else 0o000)
    try: code, out = cli_in_child(['train', str(shut / 'mine.py')], {}, uid=NOBODY if root else None)
    finally: shut.chmod(0o700)
    out = ' '.join(out.split())
    assert code == 2 and f'recipe file {shut}/mine.py cannot be read (Permission denied)' in out, out
    assert 'cannot write' not in out
    _no_traceback(out)

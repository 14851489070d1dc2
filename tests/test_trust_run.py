"""A run's honesty at every way out: a stop signal at any step (decoding, lr_find, the fit, the end of the run), an
exception of any kind, kill -9; one owner per run folder; a resume that continues exactly the recipe, device and
precision its checkpoint was made with; a checkpoint whose every key is read back; and time figures that add up
over the segments of a resumed run. Through the command line where a user meets it, else the public API."""
import os
import shutil
import signal
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fastai.callback.core import Callback

import cifar_fast.run_files as RF
import cifar_fast.training as T
from cifar_fast.callback.checkpoint import KEYS, Checkpointer
from cifar_fast.cli import main
from cifar_fast.errors import ConfigError
from cifar_fast.recipe import DataConfig, Recipe, dict_hash
from cifar_fast.rundir import read_json, run_state, write_json
from cifar_fast.stop import StopRequested, StopSignals
from helpers import SignalAt, cli_in_child, torch_threads

QUICK = str(Path(__file__).resolve().parents[1] / 'recipes' / 'quick.py')
TINY = ['--model_kwargs.widths', '[8,16,32]', '--data.batch_size', '32', '--precision', 'fp32', '--tta', '0']


def _recipe(source, **kw):
    return Recipe(**{**dict(name='t', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=3, lr=0.02,
                            seed=0, precision='fp32', data=DataConfig(source=str(source), batch_size=32)), **kw})


@pytest.fixture
def cli(synthetic, tmp_path, capsys, monkeypatch):
    "cifar-fast in this process from an empty folder: (exit code, everything it printed, words joined by one space)."
    monkeypatch.chdir(tmp_path)

    def run(*argv):
        args = list(argv)
        if args[0] == 'train' and '--resume' not in args:
            args = ['train', QUICK, '--data', str(synthetic), *TINY, *args[1:]]
        code = main(args)
        out = capsys.readouterr()
        return code, ' '.join((out.out + out.err).split())
    return run


def _no_traceback(text): assert 'Traceback' not in text and 'File "' not in text, text[-800:]


def _no_temp(root: Path):
    left = [p for p in root.rglob('*')
            if '.tmp' in p.name or (p.parent.name == 'checkpoints' and p.name.startswith('tmp'))]
    assert not left, left


def _only_run(root: Path) -> Path:
    [d] = [p for p in root.iterdir() if p.is_dir()]
    return d


@pytest.fixture(scope='module')
def cut_run(synthetic, tmp_path_factory):
    "A 3-epoch run stopped by SIGTERM in its second epoch: one completed epoch, resumable. Tests copy it."
    res = T.train(_recipe(synthetic), runs_root=tmp_path_factory.mktemp('cut'),
                  extra_cbs=[SignalAt(1, 1, signal.SIGTERM)])
    assert res.summary['state'] == 'interrupted'
    return res.run_dir


@pytest.fixture
def cut(cut_run, tmp_path) -> Path:
    return Path(shutil.copytree(cut_run, tmp_path / 'runs' / cut_run.name))


# ---- a stop signal at any step ---------------------------------------------------------------------------------

def _kill_when_called(monkeypatch, module, name, sig=signal.SIGTERM):
    "Replace module.name by a wrapper that sends `sig` to this process, then carries on with the real thing."
    real = getattr(module, name)
    def wrapper(*a, **k):
        os.kill(os.getpid(), sig)
        return real(*a, **k)
    monkeypatch.setattr(module, name, wrapper)


def test_sigterm_while_decoding_exits_143_and_leaves_no_run_folder(cli, tmp_path, monkeypatch, fresh_cache):
    import cifar_fast.data.loaders as L
    _kill_when_called(monkeypatch, L, 'load_arrays')
    code, out = cli('train')
    assert code == 143 and 'Interrupted after 0 epoch(s) (SIGTERM)' in out and 'nothing to resume' in out, out
    _no_traceback(out)
    runs = tmp_path / 'runs'
    assert not runs.exists() or not list(runs.iterdir())  # a folder that held nothing of ours is not left behind
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers were put back


def test_sigterm_in_lr_find_is_an_honest_interruption_with_no_temporary_weights(cli, tmp_path, monkeypatch):
    from fastai.callback.schedule import LRFinder
    def after_batch(self, real=LRFinder.after_batch):
        if self.train_iter == 5: os.kill(os.getpid(), signal.SIGTERM)
        return real(self)
    monkeypatch.setattr(LRFinder, 'after_batch', after_batch)
    code, out = cli('train', '--lr', 'valley', '--speed.decoupled', 'false')
    assert code == 143 and 'nothing to resume' in out, out
    _no_traceback(out)
    d = _only_run(tmp_path / 'runs')
    st = read_json(d / 'status.json')
    assert st['state'] == 'interrupted' and st['signal'] == 'SIGTERM' and 'start the run again' in st['message']
    _no_temp(d)  # fastai's LRFinder keeps the weights in checkpoints/tmp*/ until its after_fit, which the stop skips


def test_sighup_inside_the_fit_stops_at_the_batch_and_resumes(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(T, 'fit_callbacks', _with_extra(T.fit_callbacks, SignalAt(1, 1, signal.SIGHUP)))
    code, out = cli('train', '--epochs', '3')
    d = _only_run(tmp_path / 'runs')
    assert code == 129 and 'Interrupted after 1 epoch(s) (SIGHUP)' in out and f'--resume runs/{d.name}' in out, out
    assert run_state(d) == 'interrupted' and read_json(d / 'status.json')['signal'] == 'SIGHUP'
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    code, out = cli('train', '--resume', str(d))
    assert code == 0 and run_state(d) == 'complete', out


def _with_extra(real, *extra):
    def fit_callbacks(run, extra_cbs=()): return real(run, [*extra_cbs, *extra])
    return fit_callbacks


class SignalTwice(Callback):
    "Two SIGINTs in one batch: what each torchrun worker gets from one Ctrl-C (the terminal's and the agent's)."
    def __init__(self, n=2): self.n = n
    def after_batch(self):
        if self.training and (self.epoch, self.iter) == (1, 1):
            for _ in range(self.n): os.kill(os.getpid(), signal.SIGINT)


def test_a_second_ctrl_c_still_stops_at_the_batch_boundary_and_a_third_stops_at_once(synthetic, tmp_path):
    res = T.train(_recipe(synthetic), runs_root=tmp_path / 'two', extra_cbs=[SignalTwice(2)])
    assert (res.summary['state'], res.summary['exit_code'], res.summary['epochs_completed']) == ('interrupted', 130, 1)
    assert res.summary['resume'] and run_state(res.run_dir) == 'interrupted'
    res = T.train(_recipe(synthetic), runs_root=tmp_path / 'three', extra_cbs=[SignalTwice(3)])
    assert res.summary['state'] == 'interrupted' and run_state(res.run_dir) == 'interrupted'
    _no_temp(tmp_path)


def test_distributed_signals_never_raise_inside_the_fit():
    s = StopSignals(distributed=True)
    with s, s.deferred():
        for _ in range(6): os.kill(os.getpid(), signal.SIGINT)  # a user pressing Ctrl-C three times under torchrun
    assert s.requested and s.name == 'SIGINT' and s.count == 6
    with pytest.raises(StopRequested) as e:
        with StopSignals() as s: os.kill(os.getpid(), signal.SIGTERM)  # outside a fit: at once
    assert e.value.exit_code == 143


def test_sigterm_at_the_end_of_the_run_resumes_to_a_complete_one(cli, tmp_path, monkeypatch):
    _kill_when_called(monkeypatch, RF, 'plot_curves')
    code, out = cli('train', '--epochs', '2')
    d = _only_run(tmp_path / 'runs')
    assert code == 143 and 'Interrupted after 2 epoch(s)' in out and not (d / 'summary.json').exists(), out
    _no_temp(d)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    code, out = cli('train', '--resume', str(d))
    s = read_json(d / 'summary.json')
    assert code == 0 and s['epochs'] == 2 and s['resumed'] == 1 and len(s['segments']) == 2, out


def test_any_exception_at_the_end_of_the_run_marks_it_failed_and_releases_the_lock(synthetic, tmp_path, monkeypatch):
    def boom(*a, **k): raise ValueError('drawing failed')
    monkeypatch.setattr(RF, 'plot_curves', boom)
    with pytest.raises(ValueError): T.train(_recipe(synthetic, epochs=1), runs_root=tmp_path)
    d = _only_run(tmp_path)
    st = read_json(d / 'status.json')
    assert st['state'] == 'failed' and 'drawing failed' in st['error'] and run_state(d) == 'failed'
    from cifar_fast.runlock import is_locked
    assert is_locked(d) is False


# ---- kill -9, and one owner per run folder ---------------------------------------------------------------------

def test_a_killed_run_shows_as_crashed_with_its_resume_command(synthetic, tmp_path):
    class Kill9(Callback):
        order = 100  # after the checkpoint of epoch 1 is written
        def after_epoch(self):
            if self.epoch == 0: os.kill(os.getpid(), signal.SIGKILL)
    real = T.fit_callbacks
    T.fit_callbacks = _with_extra(real, Kill9())
    try:
        code, _ = cli_in_child(['train', QUICK, '--data', str(synthetic), *TINY, '--epochs', '2', '--threads', '1',
                                 '--runs', str(tmp_path / 'runs')], {})  # one thread: OpenMP hangs in a forked child
    finally: T.fit_callbacks = real
    assert code == -signal.SIGKILL
    d = _only_run(tmp_path / 'runs')
    assert read_json(d / 'status.json')['state'] == 'running' and run_state(d) == 'crashed'
    code, out = cli_in_child(['runs', '--runs', str(tmp_path / 'runs')], {})
    text = ' '.join(out.split())
    assert code == 0 and 'crashed' in text and f'cifar-fast train --resume {d}' in text, text
    with torch_threads(): res = T.train(None, resume=d)  # its recipe says threads=1, which torch keeps for the process
    assert run_state(d) == 'complete' and res.summary['resumed'] == 1


class ResumeWhileTraining(Callback):
    "A second `train --resume` of the same folder, tried while this run trains into it."
    def after_epoch(self):
        if self.epoch == 0:
            with pytest.raises(ConfigError) as e: T.train(None, resume=self.learn.path)
            self.refusal = str(e.value)


def test_a_second_process_cannot_resume_a_live_run(synthetic, tmp_path):
    cb = ResumeWhileTraining()
    res = T.train(_recipe(synthetic, epochs=2), runs_root=tmp_path, extra_cbs=[cb])
    assert f'pid {os.getpid()} on host' in cb.refusal and 'is being trained by another process' in cb.refusal
    assert run_state(res.run_dir) == 'complete'  # the refused one changed nothing


# ---- resume: the same recipe, device and precision ---------------------------------------------------------------

def test_an_edited_recipe_json_is_refused_naming_each_changed_field(cut):
    rj = read_json(cut / 'recipe.json')
    rj['recipe']['epochs'], rj['recipe']['lr'] = 5, 0.1
    write_json(cut / 'recipe.json', rj)
    with pytest.raises(ConfigError, match=r"epochs: 3 -> 5; lr: 0.02 -> 0.1.*train a new run") as e:
        T.train(None, resume=cut)
    assert run_state(cut) == 'interrupted', e.value  # a refusal changes nothing in the folder


def test_a_recipe_json_without_a_newer_field_resumes_with_a_warning_naming_it(cut):
    rj = read_json(cut / 'recipe.json')
    del rj['recipe']['patience']  # as an earlier version of cifar_fast wrote it
    rj['hash'] = dict_hash(rj['recipe'])
    write_json(cut / 'recipe.json', rj)
    ck = torch.load(cut / 'checkpoints' / 'last.pth', weights_only=True)
    del ck['run']['recipe']['patience']
    torch.save(ck, cut / 'checkpoints' / 'last.pth')
    with pytest.warns(UserWarning, match=r'fields patience=None are new and take their defaults'):
        T.train(None, resume=cut)
    assert run_state(cut) == 'complete'


def test_another_model_in_an_older_checkpoint_is_a_clear_refusal(cut):
    ck = torch.load(cut / 'checkpoints' / 'last.pth', weights_only=True)
    del ck['run']  # a checkpoint written before the recipe was kept in it
    torch.save(ck, cut / 'checkpoints' / 'last.pth')
    rj = read_json(cut / 'recipe.json')
    rj['recipe']['model_kwargs'] = dict(widths=[8, 16, 48])
    write_json(cut / 'recipe.json', rj)
    with pytest.raises(ConfigError, match='was changed after the run started .its hash is'): T.train(None, resume=cut)
    rj['hash'] = dict_hash(rj['recipe'])  # an edit that even fixed the hash: the weights still say no
    write_json(cut / 'recipe.json', rj)
    with pytest.raises(ConfigError, match="checkpoint's weights do not fit this run's model"): T.train(None, resume=cut)


def test_resuming_in_another_precision_says_so(cut):
    ck = torch.load(cut / 'checkpoints' / 'last.pth', weights_only=True)
    ck['run']['precision'] = 'bf16'
    torch.save(ck, cut / 'checkpoints' / 'last.pth')
    with pytest.warns(UserWarning, match=r'resuming on cpu in fp32; the checkpoint was written on cpu in bf16'):
        T.train(None, resume=cut)


def test_a_moved_dataset_is_named_and_the_users_data_is_preferred(cut, synthetic, tmp_path, cli, monkeypatch):
    rj = read_json(cut / 'recipe.json')
    moved = str(tmp_path / 'elsewhere' / 'cifar10')
    rj['recipe']['data']['source'] = moved  # as recorded on the machine that trained it...
    write_json(cut / 'recipe.json', rj)
    ck = torch.load(cut / 'checkpoints' / 'last.pth', weights_only=True)
    ck['run']['recipe']['data']['source'] = moved  # ...consistently: this is not an edit
    torch.save(ck, cut / 'checkpoints' / 'last.pth')
    code, out = cli('train', '--resume', str(cut))
    assert code == 2 and moved in out and 'not on this machine' in out and '--data PATH' in out, out
    monkeypatch.setenv('CIFAR_FAST_DATA', str(synthetic))
    code, out = cli('train', '--resume', str(cut))
    assert code == 0
    assert '$CIFAR_FAST_DATA, preferred to the path' in (cut / 'console.log').read_text().replace('\n', ' ')


# ---- the checkpoint: every key written is read back ---------------------------------------------------------------

class ReadTracking(dict):
    "A checkpoint that remembers which of its keys were read."
    reads: set
    def __getitem__(self, k): self.reads.add(k); return super().__getitem__(k)
    def get(self, k, default=None): self.reads.add(k); return super().get(k, default)


def test_every_checkpoint_key_is_written_and_read_back(cut, monkeypatch):
    import cifar_fast.callback.checkpoint as C
    import cifar_fast.resume as R
    state = ReadTracking(C.load_checkpoint(cut / 'checkpoints' / 'last.pth'))
    state.reads = set()
    assert set(state) == set(KEYS)  # what is written is what the table documents
    monkeypatch.setattr(R, 'load_checkpoint', lambda path: state)
    T.train(None, resume=cut)
    assert state.reads == set(KEYS), f'written but never read back: {set(KEYS) - state.reads}'


def _stub_learn(scaler):
    model = torch.nn.Linear(2, 2)
    rec = SimpleNamespace(smooth_loss=SimpleNamespace(val=torch.tensor(0.5), count=3), rows=[])
    return SimpleNamespace(scaler=scaler, recorder=rec, cbs=[], epoch=0, opt=SimpleNamespace(state_dict=dict),
                           dls=None, model=model), model, rec


def test_the_fp16_loss_scaler_round_trips_through_the_checkpoint():
    "The loss scaler exists for fp16 on CUDA only; its state goes through the checkpoint the same way on the CPU."
    from torch.amp import GradScaler
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "GradScaler is enabled, but CUDA is not available" on some builds
        used = GradScaler('cpu', init_scale=2.**10, growth_interval=7)
        fresh = GradScaler('cpu')
    used.scale(torch.ones(()))  # a step's use, then an overflow-style rescale: state a fresh scaler does not have
    used.update(new_scale=torch.tensor(64.))
    learn, model, rec = _stub_learn(used)
    writer = Checkpointer(Path('unused.pth'), model, rec)
    writer.learn = learn
    state = writer.capture()
    assert state['scaler']['scale'] == 64. and state['scaler']['growth_interval'] == 7
    learn2, model2, rec2 = _stub_learn(fresh)
    reader = Checkpointer(Path('unused.pth'), model2, rec2, state=state)
    reader.learn = learn2
    reader.before_fit()
    assert fresh.state_dict() == used.state_dict()


# ---- time figures over segments -----------------------------------------------------------------------------------

def test_a_resumed_runs_wall_time_counts_every_segment(cut):
    res = T.train(None, resume=cut)
    s = res.summary
    assert s['resumed'] == 1 and [seg['first_epoch'] for seg in s['segments']] == [1, 2]
    assert s['wall_seconds'] == pytest.approx(sum(seg['wall_seconds'] for seg in s['segments']), abs=0.01)
    assert s['wall_seconds'] >= s['train_seconds']  # was the last segment's alone: below the training time


def test_an_uninterrupted_run_has_one_segment(finished_run):
    s = read_json(finished_run / 'summary.json')
    assert s['resumed'] == 0 and len(s['segments']) == 1
    assert s['wall_seconds'] == pytest.approx(s['segments'][0]['wall_seconds'], abs=0.01)



# ---- checkpoints written in the background (a GPU run's) --------------------------------------------------------

def test_background_checkpoints_hold_what_inline_ones_do_and_are_on_disk_when_the_fit_ends(synthetic, tmp_path,
                                                                                           monkeypatch):
    "A GPU run writes its checkpoints from a background thread: the same contents as a CPU run's, every one finished."
    from cifar_fast import rundir
    inline = T.train(_recipe(synthetic, epochs=2), runs_root=tmp_path / 'inline').run_dir
    init = rundir.BackgroundWrites.__init__
    monkeypatch.setattr(rundir.BackgroundWrites, '__init__', lambda self, background=False: init(self, True))
    back = T.train(_recipe(synthetic, epochs=2), runs_root=tmp_path / 'back').run_dir
    for name in ('last.pth', 'prev.pth', 'best.pth'):
        a, b = (torch.load(d / 'checkpoints' / name, weights_only=True) for d in (inline, back))
        sd = (lambda x: x['model']) if name != 'best.pth' else (lambda x: x)
        assert sd(a).keys() == sd(b).keys() and all(torch.equal(sd(a)[k], sd(b)[k]) for k in sd(a))
        untimed = lambda rows: [{k: v for k, v in r.items() if 'seconds' not in k} for r in rows]
        if name != 'best.pth': assert a['epoch'] == b['epoch'] and untimed(a['rows']) == untimed(b['rows'])
    assert not list((back / 'checkpoints').glob('.*tmp*'))  # nothing half-written left


def test_detached_copies_are_not_changed_by_training_and_write_errors_surface(tmp_path):
    from cifar_fast.rundir import BackgroundWrites, detached
    w = torch.zeros(3)
    snap = detached(dict(model={'w': w}, rows=[dict(epoch=1)], n=2))
    w.add_(1.)  # the next step changes the live weights in place
    assert torch.equal(snap['model']['w'], torch.zeros(3)) and snap['n'] == 2
    writes, order = BackgroundWrites(), []
    for i in range(3): writes.submit(order.append, i)
    def boom(): raise OSError(28, 'No space left on device', str(tmp_path / 'last.pth'))
    writes.submit(boom)
    with pytest.raises(OSError, match='No space'): writes.wait()
    assert order == [0, 1, 2]

"""W&B logging, offline and without an API key: what a run logs is read back from its own .wandb file with wandb's
own reader (`wandb leet inspect`) and compared with the run folder; W&B failures cost one warning, never the run."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from cifar_fast.callback import wandb as W
from cifar_fast.callback.wandb import WandbCallback, WandbWarning
from cifar_fast.console import RunConsole
from cifar_fast.recipe import DataConfig, Recipe, WandbConfig
from cifar_fast.rundir import read_json, read_metrics, run_state
from cifar_fast.training import train
from helpers import SignalAt

WB = WandbConfig(enabled=True, mode='offline')
WANDB_EXE = Path(sys.executable).with_name('wandb')  # the venv's CLI, the same version as the library


@pytest.fixture(autouse=True)
def one_thread():
    """These runs are tiny: with torch's 2 intra-op threads on a busy 2-core machine, the same 2-epoch run took
    0.2-17 s of training (threads spinning); with 1 thread, 0.3-0.4 s every time (8 runs each, load 3-5)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def local(monkeypatch):
    "No WANDB_DIR/WANDB_DATA_DIR/WANDB_CACHE_DIR (the conftest sets them): W&B's files go into the run folder."
    for var in ('WANDB_DIR', 'WANDB_DATA_DIR', 'WANDB_CACHE_DIR'): monkeypatch.delenv(var, raising=False)


@pytest.fixture
def recipe(synthetic):
    return Recipe(name='t', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=2, lr=0.02, seed=0,
                  data=DataConfig(source=str(synthetic), batch_size=32), wandb=WB)


def _inspect(run_dir: Path, *flags) -> str:
    "`wandb leet inspect --json` on an offline run folder: wandb's own reading of its transaction log."
    return subprocess.run([str(WANDB_EXE), 'leet', 'inspect', '--json', *flags, str(run_dir)], capture_output=True,
                          text=True, check=True, timeout=60).stdout


def _records(run_dir: Path) -> list[dict]: return [json.loads(line) for line in _inspect(run_dir).splitlines() if line]
def _history(d: Path) -> list[dict]: return [r['history']['item'] for r in _records(d) if r['type'] == 'history']
def _summary(run_dir: Path) -> dict: return json.loads(_inspect(run_dir, '--summary'))
def _ours(recwarn) -> list: return [w for w in recwarn if issubclass(w.category, WandbWarning)]


def test_offline_run_logs_what_the_run_folder_holds(recipe, tmp_path, monkeypatch, local):
    monkeypatch.delenv('WANDB_CONFIG_DIR', raising=False)
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))  # whatever wandb would put in the home folder lands here
    out = io.StringIO()
    log = RunConsole(terminal=Console(file=out, width=400))
    res = train(recipe.replace(tta=1), runs_root=tmp_path / 'runs', log=log)
    d, s = res.run_dir, res.summary
    run_id = read_json(d / 'wandb.json')['id']
    [seg] = list(d.glob('wandb/offline-run-*'))  # the W&B files are inside the run folder...
    assert seg.name.endswith(run_id) and (seg / f'run-{run_id}.wandb').is_file() and (d / 'wandb' / 'data').is_dir()
    assert not [p for p in home.rglob('*') if 'wandb' in p.name]  # ...and nothing went to the home folder
    assert f'wandb sync {seg}' in out.getvalue()
    assert not {'WANDB_DATA_DIR', 'WANDB_CACHE_DIR'} & set(os.environ)  # put back for the next run in this process

    hist, rows = _history(seg), read_metrics(d / 'metrics.csv')
    ep = [h for h in hist if 'valid/accuracy' in h]
    assert [h['epoch'] for h in ep] == [r['epoch'] for r in rows]  # epochs count from 1 in metrics.csv and W&B alike
    assert [h['valid/accuracy'] for h in ep] == [r['accuracy'] for r in rows]
    assert [h['valid/loss'] for h in ep] == [r['valid_loss'] for r in rows]
    assert all(h['epoch/images_per_sec'] > 0 and h['epoch/seconds'] > 0 for h in ep)
    steps = [h for h in hist if 'train/step' in h]
    n = len(res.learn.dls.train)
    assert [h['train/step'] for h in steps] == list(range(1, 2 * n + 1))
    lrs, moms = [h['train/lr'] for h in steps], [h['train/mom'] for h in steps]
    peak = lrs.index(max(lrs))  # one-cycle: up, then down; momentum the other way
    assert 0 < peak < len(lrs) - 1 and lrs[0] < max(lrs) / 10 and lrs[-1] < max(lrs) / 10 and moms[peak] < moms[0]

    sm = _summary(seg)
    assert sm['state'] == 'finished' and sm['exit_code'] == 0 and sm['run_id'] == run_id
    assert sm['name'] == 't-fastnet_cpu-s0' and {'t', 'fastnet_cpu', 'seed:0'} <= set(sm['tags'])
    assert sm['config']['recipe_hash'] == read_json(d / 'recipe.json')['hash'] == s['hash']
    assert sm['config']['params'] == s['params'] and sm['config']['env'] == read_json(d / 'env.json')
    assert sm['config']['lr'] == 0.02 and sm['config']['data']['batch_size'] == 32
    for k in ('test_accuracy', 'test_accuracy_tta', 'best_epoch'): assert sm['summary'][k] == s[k], k
    assert sm['summary']['outcome'] == 'complete'

    recs = _records(seg)
    assert next(r['run'] for r in recs if r['type'] == 'run')['run_group'] == 't'
    arts = {r['artifact']['name']: r['artifact'] for r in recs if r['type'] == 'artifact'}
    model = arts[f't-fastnet_cpu-{run_id}']  # one model artifact, named for this run
    files = {c['path']: c['local_path'] for c in model['manifest']['contents']}
    assert model['type'] == 'model' and set(files) == {'model.pth', 'export.pkl', 'recipe.json', 'data.json'}
    assert files['model.pth'] == str((d / 'model.pth').resolve()) and json.loads(model['metadata'])['hash'] == s['hash']
    final = next(h for h in hist if 'final/top_losses._type' in h)
    assert final['final/confusion_matrix_table._type'] == 'table-file'
    assert final['final/confusion_matrix_table.nrows'] == 10 * 10  # W&B's chart table: one row per (true, predicted)
    assert final['final/per_class.nrows'] == 10 and final['final/curves._type'] == 'image-file'
    assert final['final/samples.count'] == 8 and final['final/top_losses.nrows'] == WB.n_top_losses
    top = json.loads((seg / 'files' / final['final/top_losses.path']).read_text())
    assert top['columns'] == ['image', 'true', 'predicted', 'loss', 'probability', 'p_true']
    losses = [row[3] for row in top['data']]
    assert losses == sorted(losses, reverse=True)
    [table] = [a['manifest']['contents'] for a in arts.values()
               if 'final/top_losses.table.json' in {c['path'] for c in a['manifest']['contents']}]
    assert sum(c['path'].startswith('media/images/') for c in table) == WB.n_top_losses  # its images went with it
    config_updates = [r['config']['update'] for r in recs if r['type'] == 'config']
    assert any('_wandb.visualize.final/confusion_matrix' in u for u in config_updates)  # drawn as W&B's own chart


def test_wandb_init_failure_costs_one_warning_not_the_run(recipe, tmp_path, monkeypatch, recwarn):
    import wandb

    def refuse(*args, **kwargs): raise RuntimeError('no W&B today')
    monkeypatch.setattr(wandb, 'init', refuse)
    res = train(recipe.replace(epochs=1), runs_root=tmp_path)
    [w] = _ours(recwarn)
    assert 'W&B init failed' in str(w.message) and 'no W&B today' in str(w.message)
    assert run_state(res.run_dir) == 'complete' and (res.run_dir / 'summary.json').is_file()
    assert (res.run_dir / 'model.pth').is_file() and (res.run_dir / 'export.pkl').is_file()


def test_logging_failure_mid_run_costs_one_warning_not_the_run(recipe, tmp_path, monkeypatch, recwarn):
    import wandb
    calls, real_log = [], wandb.Run.log

    def flaky(self, data, *args, **kwargs):
        calls.append(data)
        if len(calls) == 3: raise ConnectionError('W&B went away')
        return real_log(self, data, *args, **kwargs)
    monkeypatch.setattr(wandb.Run, 'log', flaky)
    res = train(recipe.replace(epochs=1), runs_root=tmp_path)  # fails in epoch 0's flush of step rows
    [w] = _ours(recwarn)
    assert 'W&B logging failed' in str(w.message) and 'W&B went away' in str(w.message)
    assert len(calls) == 3  # nothing more was sent to W&B after the failure
    assert run_state(res.run_dir) == 'complete' and (res.run_dir / 'summary.json').is_file()
    run_id = read_json(res.run_dir / 'wandb.json')['id']
    assert not (res.run_dir / 'wandb').exists()  # WANDB_DIR is set here (conftest): W&B's files go there instead
    [seg] = Path(os.environ['WANDB_DIR']).glob(f'wandb/offline-run-*-{run_id}')
    assert _summary(seg)['exit_code'] == 1  # the W&B run was still closed, marked as not complete


def test_old_wandb_is_refused_with_one_warning(recipe, tmp_path, monkeypatch, recwarn):
    import wandb
    monkeypatch.setattr(wandb, '__version__', '0.24.0')
    cb = WandbCallback(recipe, tmp_path, n_params=1)
    [w] = _ours(recwarn)
    assert not cb.active and 'newer than 0.24.0' in str(w.message)
    cb.close('complete')
    assert not list(tmp_path.iterdir())  # never started: nothing written


def test_auto_mode_is_online_only_with_a_key_and_a_server(tmp_path, monkeypatch):
    for var in ('WANDB_MODE', 'WANDB_API_KEY', 'WANDB_IDENTITY_TOKEN_FILE', 'WANDB_BASE_URL'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('NETRC', str(tmp_path / 'netrc'))
    asked = []
    monkeypatch.setattr(W, 'server_answers', lambda *a, **k: asked.append(1) or True)
    assert W.resolve_mode('auto') == 'offline' and not asked  # no key: the server is not even asked
    (tmp_path / 'netrc').write_text(f"machine api.wandb.ai login user password {'k' * 40}\n")
    assert W.resolve_mode('auto') == 'online'
    monkeypatch.setattr(W, 'server_answers', lambda *a, **k: False)
    assert W.resolve_mode('auto') == 'offline' and W.resolve_mode('online') == 'online'
    monkeypatch.setenv('WANDB_MODE', 'disabled')
    assert W.resolve_mode('auto') == 'disabled'


def test_server_probe_gives_up_quickly_without_a_server():
    t0 = time.perf_counter()
    assert W.server_answers('http://127.0.0.1:9', timeout=1) is False  # port 9 (discard): nothing listens
    assert time.perf_counter() - t0 < 2


def test_a_resumed_run_continues_the_same_wandb_run(recipe, tmp_path, local):
    res = train(recipe, runs_root=tmp_path, extra_cbs=[SignalAt(1, 0, signal.SIGINT)])
    d = res.run_dir
    assert res.summary['state'] == 'interrupted'
    run_id = read_json(d / 'wandb.json')['id']
    [seg] = d.glob('wandb/offline-run-*')
    while time.strftime('%Y%m%d_%H%M%S') <= seg.name.split('-')[2]: time.sleep(0.05)  # wandb names folders by second
    train(None, resume=d)
    assert run_state(d) == 'complete' and read_json(d / 'wandb.json')['id'] == run_id
    first, second = segs = sorted(d.glob('wandb/offline-run-*'))  # offline, each start is a segment of one run
    a, b = (_summary(s) for s in segs)
    assert a['run_id'] == b['run_id'] == run_id
    assert (a['exit_code'], a['summary']['outcome']) == (1, 'interrupted')
    assert (b['exit_code'], b['summary']['outcome']) == (0, 'complete')
    h1, h2 = _history(first), _history(second)
    n = len(res.learn.dls.train)
    assert [h['epoch'] for h in h1 if 'valid/accuracy' in h] == [1]
    assert [h['epoch'] for h in h2 if 'valid/accuracy' in h] == [2]
    assert [h['train/step'] for h in h2 if 'train/step' in h] == list(range(n + 1, 2 * n + 1))  # continues, no rewind
    assert max(h['train/step'] for h in h1 if 'train/step' in h) == n + 1  # epoch 1's first batch, before the stop


def test_smoothed_loss_is_true_at_every_step_with_lazy_sync(recipe, tmp_path, local):
    """With speed.sync_every > 1, learn.smooth_loss is only read back every N batches (LazySync); W&B must still log the
    smoothed loss of each step: fastai's debiased EMA (β = 0.98) of the logged per-step losses, computed here by hand."""
    from cifar_fast.recipe import SpeedConfig
    res = train(recipe.replace(speed=SpeedConfig(sync_every=4), precision='fp32'), runs_root=tmp_path / 'runs')
    [seg] = list(res.run_dir.glob('wandb/offline-run-*'))
    steps = sorted((h for h in _history(seg) if 'train/loss' in h), key=lambda h: h['train/step'])
    assert [h['train/step'] for h in steps] == list(range(1, len(steps) + 1)) and len(steps) > 8
    val, beta = 0., 0.98
    for i, h in enumerate(steps, 1):
        val = beta * val + (1 - beta) * h['train/loss']
        assert h['train/smooth_loss'] == pytest.approx(val / (1 - beta ** i), rel=1e-5), h['train/step']

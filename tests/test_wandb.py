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
from rich.console import Console

from cifar_fast import wandb_mode as W
from cifar_fast.callback.wandb import WandbCallback, WandbWarning
from cifar_fast.console import RunConsole
from cifar_fast.recipe import DataConfig, Recipe, WandbConfig
from cifar_fast.rundir import read_json, read_metrics, run_state
from cifar_fast.training import train
from helpers import SignalAt, torch_threads

WB = WandbConfig(enabled=True, mode='offline')
WANDB_EXE = Path(sys.executable).with_name('wandb')  # the venv's CLI, the same version as the library


@pytest.fixture(autouse=True)
def one_thread():
    """These runs are tiny: with torch's 2 intra-op threads on a busy 2-core machine, the same 2-epoch run took
    0.2-17 s of training (threads spinning); with 1 thread, 0.3-0.4 s every time (8 runs each, load 3-5)."""
    with torch_threads(1): yield


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
    assert W.resolve_mode('auto') == ('offline', None) and not asked  # no key: the server is not even asked
    (tmp_path / 'netrc').write_text(f"machine api.wandb.ai login user password {'k' * 40}\n")
    assert W.resolve_mode('auto') == ('online', None)
    monkeypatch.setattr(W, 'server_answers', lambda *a, **k: False)
    # No answer: offline, with the reason, whether online was asked for by 'auto' or explicitly (what the run does).
    assert W.resolve_mode('auto') == W.resolve_mode('online') == ('offline', 'did not answer within 3 s')
    monkeypatch.setenv('WANDB_MODE', 'disabled')
    assert W.resolve_mode('auto') == ('disabled', None)


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
    """With speed.sync_every > 1, learn.smooth_loss is only read back every N batches (LazySync); W&B must still log
    the smoothed loss of each step: fastai's debiased EMA (β = 0.98) of the logged per-step losses, computed here by
    hand."""
    from cifar_fast.recipe import SpeedConfig
    res = train(recipe.replace(speed=SpeedConfig(sync_every=4), precision='fp32'), runs_root=tmp_path / 'runs')
    [seg] = list(res.run_dir.glob('wandb/offline-run-*'))
    steps = sorted((h for h in _history(seg) if 'train/loss' in h), key=lambda h: h['train/step'])
    assert [h['train/step'] for h in steps] == list(range(1, len(steps) + 1)) and len(steps) > 8
    val, beta = 0., 0.98
    for i, h in enumerate(steps, 1):
        val = beta * val + (1 - beta) * h['train/loss']
        assert h['train/smooth_loss'] == pytest.approx(val / (1 - beta ** i), rel=1e-5), h['train/step']


# ---- online without a server: offline at once, said once ---------------------------------------------------------
# Before: wandb.init retried for its 90 s init_timeout plus a 10 s grace (105 s measured against port 9), then W&B was
# off for the run. These runs take 2-6 s; 30 s leaves room for a busy 2-core machine and still fails the old wait.
NO_SERVER_SECONDS = 30
FAKE_KEY = 'k' * 40  # the length of a real key, so wandb accepts its form and goes on to the server


@pytest.fixture
def silent_server():
    "A local socket that accepts connections and never answers: a server that hangs."
    import socket
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    s.listen(16)  # the kernel completes the handshakes; nobody reads or replies
    yield f'http://127.0.0.1:{s.getsockname()[1]}'
    s.close()


def _online_env(monkeypatch, url: str):
    "WANDB_MODE=online against `url`, a key of the right form, and wandb's own output on (the conftest silences it)."
    monkeypatch.setenv('WANDB_MODE', 'online')
    monkeypatch.setenv('WANDB_BASE_URL', url)
    monkeypatch.setenv('WANDB_API_KEY', FAKE_KEY)
    monkeypatch.delenv('WANDB_SILENT', raising=False)


@pytest.mark.parametrize('server,mode', [('refused', 'online'), ('hangs', 'auto')])
def test_online_without_a_server_logs_offline_at_once_and_says_so_once(server, mode, recipe, tmp_path, monkeypatch,
                                                                      local, capfd, recwarn, request):
    url = 'http://127.0.0.1:9' if server == 'refused' else request.getfixturevalue('silent_server')  # 9: none listens
    _online_env(monkeypatch, url)
    out = io.StringIO()
    t0 = time.perf_counter()
    res = train(recipe.replace(epochs=1, wandb=WandbConfig(enabled=True, mode=mode)), runs_root=tmp_path,
                log=RunConsole(terminal=Console(file=out, width=400)))
    seconds = time.perf_counter() - t0
    d = res.run_dir
    assert seconds < NO_SERVER_SECONDS, seconds
    assert run_state(d) == 'complete' and not _ours(recwarn)  # said through the run's console, not as a warning
    saved = read_json(d / 'wandb.json')
    [seg] = d.glob('wandb/offline-run-*')  # logged offline, into the run folder
    assert saved['mode'] == 'offline' and (seg / f"run-{saved['id']}.wandb").is_file()
    assert _summary(seg)['summary']['outcome'] == 'complete'
    term, log_file = out.getvalue(), (d / 'console.log').read_text()
    captured = capfd.readouterr()
    for text in (term, log_file):
        [line] = [ln for ln in text.splitlines() if 'wandb sync' in ln]  # once: not again at the end of the run
        assert url in line and 'did not answer' in line and line.endswith(f'wandb sync {seg}')  # the probe's word
        assert text.count('wandb sync') == 1
    for text in (term, log_file, captured.out, captured.err):
        assert 'WANDB_MODE=online' not in text  # wandb's offline hint: it is set already
        assert '\x1b[' not in text  # none of this is a terminal


def test_the_offline_notice_without_a_console_is_one_warning(recipe, tmp_path, monkeypatch, local, capsys, recwarn):
    _online_env(monkeypatch, 'http://127.0.0.1:9')
    cb = WandbCallback(recipe.replace(wandb=WandbConfig(enabled=True, mode='online')), tmp_path, n_params=1)
    cb._init()
    [w] = _ours(recwarn)
    [seg] = tmp_path.glob('wandb/offline-run-*')
    msg = str(w.message)
    assert 'http://127.0.0.1:9' in msg and 'logged offline' in msg and msg.endswith(f'wandb sync {seg}')
    cb.close('complete')
    assert 'wandb sync' not in capsys.readouterr().out and len(_ours(recwarn)) == 1  # the command was given once


_REJECTING_RUN = """
import sys, time, torch
from rich.console import Console
from cifar_fast.console import RunConsole
from cifar_fast.recipe import DataConfig, Recipe, WandbConfig
from cifar_fast.training import train
torch.set_num_threads(1)
r = Recipe(name='t', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=1, lr=0.02, seed=0,
           data=DataConfig(source=sys.argv[1], batch_size=32), wandb=WandbConfig(enabled=True, mode='online'))
t0 = time.perf_counter()
res = train(r, runs_root=sys.argv[2], log=RunConsole(terminal=Console(file=sys.stdout)))
print('SECONDS', time.perf_counter() - t0, 'RUN_DIR', res.run_dir)
"""


def test_a_server_that_rejects_the_run_logs_offline_without_colour_codes(synthetic, tmp_path):
    """The server answers the probe but refuses wandb.init (401: a wrong key): offline, said once. In a subprocess with
    pipes, as in a log file: wandb-core prints the footer of the run it closes at exit with colour codes unless the run
    is silent (wandb 0.31), and only the end of a process shows it."""
    import http.server
    import threading
    seen = []

    class Rejecting(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.rfile.read(int(self.headers.get('Content-Length') or 0))
            seen.append(self.path)
            self.send_response(200 if self.path.startswith('/healthz') else 401)
            self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'{}')
        do_GET = do_POST = _answer
        def log_message(self, *args): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Rejecting)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f'http://127.0.0.1:{srv.server_address[1]}'
    # wandb's own output on, and its files in the run folder (the conftest's WANDB_SILENT and WANDB_DIR & co. off)
    drop = ('WANDB_SILENT', 'WANDB_DIR', 'WANDB_DATA_DIR', 'WANDB_CACHE_DIR')
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(WANDB_MODE='online', WANDB_BASE_URL=url, WANDB_API_KEY=FAKE_KEY, HOME=str(tmp_path))
    try:
        p = subprocess.run([sys.executable, '-c', _REJECTING_RUN, str(synthetic), str(tmp_path / 'runs')], env=env,
                           cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
                           check=False)
    finally: srv.shutdown(); srv.server_close()
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert any(s.startswith('/graphql') for s in seen)  # wandb.init did try the server, and was refused
    seconds, d = float(out.split('SECONDS ')[1].split()[0]), Path(out.split('RUN_DIR ')[1].split()[0])
    assert seconds < NO_SERVER_SECONDS, seconds
    [seg] = d.glob('wandb/offline-run-*')
    [line] = [ln for ln in out.splitlines() if 'wandb sync' in ln]
    assert url in line and 'did not start the run' in line and line.endswith(f'wandb sync {seg}')
    assert 'WANDB_MODE=online' not in out and '\x1b[' not in out, out[-3000:]
    assert '\x1b[' not in (d / 'console.log').read_text() and read_json(d / 'wandb.json')['mode'] == 'offline'

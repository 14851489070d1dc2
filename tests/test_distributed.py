"""Two gloo processes through torchrun on the CPU: one run folder, disjoint shards, rank-0-only writes; as two nodes, a
dead process that fails the job on both and a resume that finishes it exactly; the `--nproc` hand-over with a Ctrl-C."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_fast.rundir import read_json, run_state

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name('dist_worker.py')


def torchrun(*args, timeout=240):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


def _rows(d):
    with open(d / 'metrics.csv') as f:
        return [{k: v for k, v in r.items() if k != 'seconds'} for r in csv.DictReader(f)]


@pytest.fixture(scope='module')
def full_run(synthetic, tmp_path_factory):
    "An uninterrupted 3-epoch, 2-process run, recording each rank's samples per epoch."
    tmp = tmp_path_factory.mktemp('dist')
    p = torchrun(WORKER, '--data', synthetic, '--runs', tmp / 'runs', '--out', tmp, '--epochs', 3)
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp


def test_one_run_folder_disjoint_shards_and_rank0_accuracy_equals_evaluate(full_run):
    (d,) = list((full_run / 'runs').iterdir())
    assert run_state(d) == 'complete' and read_json(d / 'env.json')['world_size'] == 2
    assert [r['epoch'] for r in _rows(d)] == ['1', '2', '3']  # written once: one row per epoch, not one per rank
    ranks = [json.loads((full_run / f'rank{i}.json').read_text()) for i in range(2)]
    for a, b in zip(*ranks):  # each epoch: disjoint halves that together cover the 200 training images
        assert len(a) == len(b) == 100 and not set(a) & set(b) and set(a) | set(b) == set(range(200))
    assert ranks[0][0] != ranks[0][1]  # and a new shuffle every epoch
    from cifar_fast.inference import evaluate_run
    assert evaluate_run(d)['accuracy'] == pytest.approx(float(_rows(d)[-1]['accuracy']), abs=1e-6)


@pytest.mark.parametrize('argv, kept', [
    (['train', 'r.py', '--epochs', '2', '--nproc', '2'], ['train', 'r.py', '--epochs', '2']),
    (['train', 'r.py', '--nproc=4', '--lr', '4'], ['train', 'r.py', '--lr', '4']),
    (['train', 'r.py', '--nproc', '3', '--seed', '3'], ['train', 'r.py', '--seed', '3'])])
def test_the_hand_over_drops_only_the_nproc_option(argv, kept):
    from cifar_fast.cli import without_nproc
    assert without_nproc(argv) == kept


def test_lr_find_refuses_under_distribution(synthetic, monkeypatch):
    from cifar_fast.errors import ConfigError
    from cifar_fast.recipe import DataConfig, Recipe
    from cifar_fast.training import train
    monkeypatch.setenv('WORLD_SIZE', '2')  # refused before any process group is needed
    with pytest.raises(ConfigError, match='runs lr_find, which runs in one process'):
        train(Recipe(lr='valley', data=DataConfig(source=str(synthetic))))


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def two_nodes(*args, timeout=300):
    """Two torchrun launchers on this machine, one process each, meeting through a c10d rendezvous on localhost: the
    shape of a 2-node job. Returns both launchers' (returncode, stderr)."""
    port, run_id = _free_port(), f'cf{os.getpid()}'
    procs = [subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', '--nproc_per_node=1',
                               f'--node_rank={i}', '--rdzv_backend=c10d', f'--rdzv_endpoint=127.0.0.1:{port}',
                               f'--rdzv_id={run_id}', '--max_restarts=0', *map(str, args)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, 'OMP_NUM_THREADS': '1'}) for i in range(2)]
    errs = [p.communicate(timeout=timeout)[1] for p in procs]
    return [(p.returncode, e) for p, e in zip(procs, errs)]


def test_two_nodes_one_run_folder_a_dead_node_fails_the_job_and_resume_finishes(synthetic, tmp_path, full_run):
    ok = two_nodes(WORKER, '--data', synthetic, '--runs', tmp_path / 'whole', '--out', tmp_path, '--epochs', 3)
    assert [code for code, _ in ok] == [0, 0], ok[0][1][-3000:] + ok[1][1][-3000:]
    (d,) = list((tmp_path / 'whole').iterdir())  # one run folder for the two nodes
    assert run_state(d) == 'complete' and read_json(d / 'env.json')['world_size'] == 2
    (full,) = list((full_run / 'runs').iterdir())
    assert _rows(d) == _rows(full)  # 2 nodes × 1 process trains exactly as 1 node × 2 processes

    # Node 1's only process dies in epoch 2: node 0 fails the job with the message, the folder is not complete...
    dead = two_nodes(WORKER, '--data', synthetic, '--runs', tmp_path / 'cut', '--out', tmp_path, '--epochs', 3,
                     '--die-rank', 1)
    assert dead[0][0] != 0 and dead[1][0] != 0  # both launchers report the failed job
    assert 'exitcode  : 3' in dead[1][1], dead[1][1][-3000:]  # node 1's torchrun names the process that died
    (d,) = list((tmp_path / 'cut').iterdir())
    assert run_state(d) == 'failed' and not (d / 'summary.json').exists(), dead[0][1][-3000:]
    assert 'another process of this 2-process job died' in read_json(d / 'status.json')['error']
    # ...and the same two launchers with --resume finish it exactly.
    resumed = two_nodes(WORKER, '--resume', d, '--out', tmp_path)
    assert [code for code, _ in resumed] == [0, 0], resumed[0][1][-3000:]
    assert run_state(d) == 'complete' and _rows(d) == _rows(full)


def test_one_ctrl_c_under_torchrun_stops_every_rank_at_one_batch_without_a_traceback(synthetic, tmp_path):
    """A terminal's Ctrl-C goes to the whole process group, and torchrun's agent sends it on again: each worker gets
    SIGINT twice. Every rank must stop at the same batch, the job say once how to resume, and nothing print a
    traceback."""
    import signal
    import time
    recipe = tmp_path / 'tiny.py'
    recipe.write_text("from cifar_fast import DataConfig, Recipe\n"
                      "recipe = Recipe(name='tiny', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]),"
                      " epochs=2, lr=0.02, tta=0, precision='fp32',"
                      f" data=DataConfig(source={str(synthetic)!r}, batch_size=32))\n")
    # `--nproc 2` hands over to torchrun; `--epochs 60` beside it must reach the workers (the run outlasts the Ctrl-C)
    p = subprocess.Popen([sys.executable, '-m', 'cifar_fast.cli', 'train', recipe, '--epochs', '60', '--nproc', '2',
                          '--runs', tmp_path / 'runs'],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'})
    deadline = time.monotonic() + 180
    while not list((tmp_path / 'runs').glob('*/metrics.csv')) and time.monotonic() < deadline: time.sleep(0.2)
    os.killpg(p.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    out = p.communicate(timeout=180)[0]
    (d,) = list((tmp_path / 'runs').iterdir())
    st = read_json(d / 'status.json')
    assert p.returncode == 130 and st['state'] == 'interrupted' and st['signal'] == 'SIGINT', out[-3000:]
    assert out.count('Resume with: cifar-fast train --resume') == 1 and 'Traceback' not in out, out[-3000:]
    assert len(_rows(d)) == st['epoch'] < 60  # the checkpoint of the last completed epoch is where it resumes
    assert read_json(d / 'env.json')['world_size'] == 2 and read_json(d / 'recipe.json')['recipe']['epochs'] == 60

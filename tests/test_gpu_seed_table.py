"""benchmarks/gpu_seed_table.py: its process pool against a deadline (with stand-in workers that import nothing), its
table from hand-made lines against hand computations, and its --dry-run on the synthetic set, which must take the
whole path (worker processes, both phases, the table, a continued --out) on CPU."""
import json
import sys
import time
from pathlib import Path

import pytest
from helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ('wrn28_3_5_gpu', 'resnet56_gpu', 'resnet18_5m_gpu', 'vgg16_gpu')


@pytest.fixture(scope='module')
def st():
    return load_benchmark('gpu_seed_table')


def env_line(cid='command 1', gpu='NVIDIA H200'):
    return dict(kind='env', command_id=cid, gpu=gpu, driver='580', torch='2.11.0', cuda='13.0', fastai='2.8.12',
                python='3.12', command='cmd', concurrency=4, alone_mode='rate', budget_s=540, dry_run=False)


def fake(st, tmp_path, name, code, kind='run', seed=0):
    "A stand-in worker: a bare Python process running `code` with the result path as argv[1]."
    res = tmp_path / f'{name}_{seed}.json'
    return st.Job(kind, name, seed, False, [sys.executable, '-c', code, str(res)], res)


def test_every_recipe_has_a_goal_and_a_shipped_file(st):
    assert set(st.GOALS) == set(RECIPES)
    assert all((ROOT / 'recipes' / f'{r}.py').is_file() for r in RECIPES)
    assert st.GOALS['wrn28_3_5_gpu'] == 92.5 and st.GOALS['resnet56_gpu'] == 90.5  # issue 29
    # 20 warm-up + 60 timed batches of the recipes' 512 images fit in CIFAR-10's 50,000 training images
    assert (st.GPU['tp_warm'] + st.GPU['tp_timed']) * 512 <= st.N_TRAIN


def test_pool_runs_fails_stops_and_skips_against_the_deadline(st, tmp_path):
    (tmp_path / 'logs').mkdir()
    t = st.Table(tmp_path, time.monotonic() + 3., lines=[env_line()], env=env_line())
    t.write = lambda: None
    write = "import json, sys; json.dump(dict(accuracy=0.9, train_s=1.0), open(sys.argv[1], 'w'))"
    ok = fake(st, tmp_path, 'resnet56_gpu', write)
    bad = fake(st, tmp_path, 'vgg16_gpu', "import sys; print('CUDA out of memory'); sys.exit(3)")
    slow = fake(st, tmp_path, 'wrn28_3_5_gpu', 'import time; time.sleep(60)')
    late = fake(st, tmp_path, 'resnet56_gpu', write, seed=1)
    st.run_pool(t, [ok, bad, slow], width=2)
    # resnet56's first run took its process_s, so a second one expected to take as long is not started after the
    # deadline; nothing is dropped: every job is one line
    st.run_pool(t, [late], width=2)
    by = {(x['recipe'], x['seed']): x for x in t.lines if x['kind'] != 'env'}
    assert by[('resnet56_gpu', 0)]['kind'] == 'run' and by[('resnet56_gpu', 0)]['accuracy'] == 0.9
    assert by[('vgg16_gpu', 0)]['kind'] == 'failed' and 'CUDA out of memory' in by[('vgg16_gpu', 0)]['error']
    assert by[('wrn28_3_5_gpu', 0)]['reason'].startswith('not finished (stopped at the deadline after')
    assert by[('resnet56_gpu', 1)]['reason'] == 'not run (budget)'
    assert t.failed and slow.proc.returncode != 0  # the stand-in was stopped, not left running
    kinds = [json.loads(x)['kind'] for x in (tmp_path / 'runs.jsonl').read_text().splitlines()]
    assert sorted(kinds[:2]) == ['failed', 'run'] and kinds[2:] == ['not_run', 'not_run']  # the first two race


def test_expected_time_from_the_rate_alone_then_from_the_last_run(st, tmp_path):
    t = st.Table(tmp_path, 0., lines=[dict(kind='rate', recipe='vgg16_gpu', est_train_s=100., process_s=20.,
                                           timed_s=5.)])
    j = st.Job('run', 'vgg16_gpu', 0)
    assert t.expected(j) == 115.  # 100 s of training at the rate alone + the rate process's 20 − 5 s outside it
    t.lines.append(dict(kind='run', recipe='vgg16_gpu', seed=0, process_s=130.))
    assert t.expected(j) == 130. and t.expected(st.Job('run', 'wrn28_3_5_gpu', 0)) == 0.


def test_table_from_lines_by_hand(st):
    run = dict(kind='run', command_id='command 1', alone=False, width=4)
    lines = [env_line(),
             dict(kind='rate', recipe='wrn28_3_5_gpu', command_id='command 1', est_train_s=150.4, images_per_s=16_620.,
                  process_s=20., timed_s=2.),
             dict(run, recipe='wrn28_3_5_gpu', seed=0, accuracy=0.93, train_s=200.),
             dict(run, recipe='wrn28_3_5_gpu', seed=1, accuracy=0.94, train_s=210., width=3),
             dict(run, recipe='resnet56_gpu', seed=0, accuracy=0.90, train_s=180.),
             dict(kind='not_run', recipe='resnet56_gpu', seed=1, job='run', reason='not run (budget)',
                  command_id='command 1'),
             dict(kind='failed', recipe='vgg16_gpu', seed=0, job='rate', error='boom', command_id='command 1')]
    text = st.render(lines, list(RECIPES))
    rows = {r.split('|')[1].strip(): [c.strip() for c in r.split('|')[1:-1]] for r in text.splitlines()
            if r.startswith('| ') and not r.startswith('| recipe')}
    # 93% and 94%: mean 93.50, sample std 0.71; goal 92.5 met by 1.00 point; train s 200 and 210: 205.0 ± 7.1, which
    # is 205 / 150.4 = 1.36 × the time alone
    assert rows['wrn28_3_5_gpu'][1:6] == ['92.5%', '93.50 ± 0.71%', '2', '≈ 150 (16,620 img/s)',
                                          '205.0 ± 7.1 (k = 3/4, ×1.36 alone)']
    assert rows['wrn28_3_5_gpu'][6] == 'NVIDIA H200 · 2.11.0 · 13.0'
    assert rows['wrn28_3_5_gpu'][7] == 'goal met (+1.00 pt)'
    assert rows['resnet56_gpu'][2:6] == ['90.00%', '1', '–', '180.0 (k = 4)']  # no time alone: no ratio
    assert rows['resnet56_gpu'][7] == 'goal: n < 2; s1: not run (budget)'
    assert rows['vgg16_gpu'][2:4] == ['–', '0'] and rows['vgg16_gpu'][7] == 'rate: failed (boom)'
    assert rows['resnet18_5m_gpu'][2:6] == ['–', '0', '–', '–']


@pytest.mark.slow
def test_dry_run_takes_the_whole_path_and_continues(st, synthetic, tmp_path, capsys):
    """Both phases in worker processes on CPU, then a continued --out whose one new seed does not fit its budget. The
    command's own process is this one (its `main`, which sets nothing process-wide), saving an import of the stack;
    the workers are the script's own processes, as on a GPU."""
    out = tmp_path / 'out'
    base = ['--data', str(synthetic), '--dry-run', '--out', str(out), '--recipes', 'resnet56_gpu']
    t0 = time.monotonic()
    rc = st.main(base + ['--seeds', '2', '--concurrency', '2'])
    print(f'gpu_seed_table --dry-run took {time.monotonic() - t0:.0f} s')
    assert rc == 0, capsys.readouterr().out[-3000:]
    lines = [json.loads(x) for x in (out / 'runs.jsonl').read_text().splitlines()]
    assert [x['kind'] for x in lines] == ['env', 'rate', 'run', 'run']
    runs = lines[2:]
    assert sorted(x['seed'] for x in runs) == [0, 1] and {x['width'] for x in runs} <= {1, 2}
    for x in runs:
        assert 0 <= x['accuracy'] <= 1 and x['tta_level'] == 2 and x['epochs'] == 1 and x['train_s'] > 0
        assert x['recipe_hash'] == lines[1]['recipe_hash']
    table = (out / 'seed_table.md').read_text()
    assert 'DRY RUN' in table and '| resnet56_gpu | 90.5% |' in table and ' ± ' in table
    assert (out / 'logs' / 'resnet56_gpu_s1.log').is_file()

    # Continued: the two seeds and the rate are kept, seed 2 is planned, and with a budget shorter than the time kept
    # back for the report it is reported as not run, without a worker process
    assert st.main(base + ['--seeds', '3', '--budget', '1']) == 0, capsys.readouterr().out[-3000:]
    lines = [json.loads(x) for x in (out / 'runs.jsonl').read_text().splitlines()]
    assert [x['kind'] for x in lines[4:]] == ['env', 'not_run'] and lines[5]['seed'] == 2
    table = (out / 'seed_table.md').read_text()
    assert 'command 2' in table and 's2: not run (budget)' in table and '| 2 |' in table

"""benchmarks/gpu_check.py: its budget schedule and N-GPU estimate against hand computations, and its --dry-run on the
synthetic set, which must run every part through the GPU code path and write the table and the raw lines."""
import json
import time
from pathlib import Path

import pytest
from helpers import load_benchmark, torch_threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def gc():
    return load_benchmark('gpu_check')


def test_deadlines_are_cumulative(gc):
    # setup 30 s, then parts of 150 and 170 s from t0=1000: each part may use what the ones before it left
    assert gc.deadlines(1000., {'setup': 30, 1: 150, 2: 170}) == {'setup': 1030., 1: 1180., 2: 1350.}
    assert gc.fits(now=1100., expected_s=80., deadline=1180.)
    assert not gc.fits(now=1100., expected_s=80.5, deadline=1180.)


def test_budget_shares_fill_nine_minutes(gc):
    assert sum(gc.BUDGET_S.values()) == 9 * 60
    assert list(gc.BUDGET_S) == ['setup', 1, 2, 3, 4, 5]


def test_n_gpu_estimate_by_hand(gc):
    # 1000 img/s at batch 100: 0.1 s of compute per step. 1M params = 4 MB of fp32 gradients; a ring over 2 GPUs
    # sends 2·1/2 of it, 4 MB, at 4 GB/s: 1 ms. Efficiency 0.1 / 0.101; 2 GPUs: 2 · 1000 · 0.1/0.101 img/s.
    ips, eff = gc.n_gpu_estimate(1000., 1_000_000, 100, 2, link_gbps=4.)
    assert eff == pytest.approx(0.1 / 0.101)
    assert ips == pytest.approx(2000 * 0.1 / 0.101)
    # 8 GPUs: 2·7/8 · 4 MB = 7 MB at 4 GB/s = 1.75 ms
    assert gc.n_gpu_estimate(1000., 1_000_000, 100, 8, link_gbps=4.)[1] == pytest.approx(0.1 / 0.10175)
    assert gc.n_gpu_estimate(1000., 1_000_000, 100, 1) == (1000., 1.)


@pytest.mark.slow
def test_dry_run_covers_every_part(gc, synthetic, tmp_path, capsys):
    """The whole check, a few steps per part on CPU: exit 0, a table row for parts 1-5, parseable raw lines. Its `main`
    runs in this process (an import of the stack saved); the one thing it sets process-wide, the dry run's single
    torch thread, is put back."""
    out = tmp_path / 'out'
    t0 = time.monotonic()
    with torch_threads(): rc = gc.main(['--data', str(synthetic), '--dry-run', '--out', str(out)])
    secs = time.monotonic() - t0
    assert rc == 0, capsys.readouterr().out[-3000:]
    print(f'gpu_check --dry-run took {secs:.0f} s')

    table = (out / 'gpu_check.md').read_text()
    rows = [r.split('|')[1:-1] for r in table.splitlines() if r.startswith('| ') and not r.startswith('| part')]
    rows = [[x.strip() for x in r] for r in rows]
    assert {r[0] for r in rows} == {'1', '2', '3', '4', '5'}
    names = {(r[0], r[1]) for r in rows}
    assert {('1', 'airbench94'), ('1', 'speed94'), ('2', 'airbench95'), ('2', 'speed95'),
            ('3', 'speed94 --speed.muon true')} <= names
    assert {('4', m) for m in ('wrn28_3_5', 'resnet18_5m', 'resnet56', 'vgg16')} <= names
    assert {('5', f.stem) for f in (ROOT / 'recipes').glob('*.py')} <= names
    assert {('1', 'airbench94 (profiled)'), ('1', 'speed94 (profiled)')} <= names
    for r in rows:  # run (n ≥ 1), or not run with its reason
        assert int(r[2]) >= 1 or 'not run (' in r[7], r
    assert 'airbench' in table and 'DRY RUN' in table

    lines = [json.loads(x) for x in (out / 'runs.jsonl').read_text().splitlines()]
    assert lines[0]['kind'] == 'env' and lines[0]['dry_run'] is True
    runs = [x for x in lines if x['kind'] == 'run']
    assert not [x for x in lines if x['kind'] == 'failed']
    part4 = {x['item']: x for x in runs if x['part'] == 4}
    assert set(part4) == {'wrn28_3_5', 'resnet18_5m', 'resnet56', 'vgg16'}
    for x in part4.values():
        assert x['images_per_s'] > 0
        assert [e['n'] for e in x['n_gpu']] == [1, 2, 4, 8]
        assert all(0 < e['efficiency'] <= 1 for e in x['n_gpu'])
    part5 = [x for x in runs if x['part'] == 5]
    assert sorted(x['item'] for x in part5) == sorted(gc.DRY['part5'])  # the others: rows saying why not (above)
    for x in part5:
        assert 0 <= x['accuracy'] <= 1 and x['images_per_s'] > 0
    prof = next(x for x in runs if x['item'] == 'speed94 (profiled)')  # the traced window: host time, no kernels on CPU
    assert prof['profiled_steps'] >= 1 and prof['host_us_per_step'] > 0 and prof['kernels_per_step'] == 0
    assert prof['gpu_busy'] is None and prof['syncs_per_run'] is None and (out / prof['trace']).is_file()
    assert all(x['cudnn'] == dict(deterministic=False, benchmark=True) for x in runs if x['part'] in (1, 2, 3))
    for x in lines:  # what did not run says why (no run failed, see above); airbench cannot run in a dry run
        if x['kind'] == 'not_run': assert x['reason'].startswith('not run (')
    assert any(x['kind'] == 'not_run' and x['item'] == 'airbench94' for x in lines)


def test_attempt_reports_budget_and_failure(gc, tmp_path):
    "A run past its part's deadline is not started; a failing run stops its item; both are reported, neither dropped."
    now = time.monotonic()
    c = gc.Check(tmp_path, 'cpu', 'data', gc.DRY, tmp_path / 'runs', tmp_path, gc.BUDGET_S,
                 {'setup': now, 1: now - 1., 2: now + 3600.}, gc.LINK_GBPS)
    late, bad, ok = c.item(1, 'late', 3), c.item(2, 'bad', 2), c.item(2, 'ok', 2)
    calls = []
    assert c.attempt(late, lambda: calls.append(1)) is None and not calls
    assert late.reason == 'not run (budget)'

    def boom(): raise RuntimeError('CUDA out of memory')
    assert c.attempt(bad, boom) is None and c.failed
    assert c.attempt(bad, lambda: calls.append(1)) is None and not calls  # the rest of a failed item is not run
    assert bad.reason == 'failed (RuntimeError: CUDA out of memory)'
    c.attempt(ok, lambda: dict(accuracy=0.5, wall_s=1.0, images_per_s=10.))
    c.attempt(ok, lambda: dict(accuracy=0.7, wall_s=3.0, images_per_s=30.))
    assert ok.reason is None and len(ok.runs) == 2
    ab = c.item(2, 'airbench', 1)  # airbench's runs report accuracy and wall time, no images/s
    c.attempt(ab, lambda: dict(accuracy=0.9, wall_s=2.0))

    table = gc.render(c, dict(dry_run=True, date='d', gpu='g', driver='-', cuda='-', torch='-', fastai='-', timm='-',
                              airbench=None, python='-'), 'cmd', {}, 0.)
    assert '| 1 | late | 0 | – | – | – | – | 3 of 3 not run (budget) |' in table
    assert '| 2 | bad | 0 | – | – | – | – | 2 of 2 failed (RuntimeError: CUDA out of memory) |' in table
    # mean ± sample std of 50% and 70%: 60.00 ± 14.14; of 1 s and 3 s: 2.00 ± 1.41
    assert '| 2 | ok | 2 | 60.00 ± 14.14% | 2.00 ± 1.41 | – | 20 ± 14 |' in table
    assert '| 2 | airbench | 1 | 90.00% | 2.00 | – | – |' in table
    lines = [json.loads(x) for x in (tmp_path / 'runs.jsonl').read_text().splitlines()]
    assert [x['kind'] for x in lines] == ['failed', 'run', 'run', 'run']

"""`compare`: the predictions file the end of a run writes, the paired statistics against independent computations
(a hand-counted McNemar table, an index bootstrap, scipy's t interval, noncentral-t power), and every refusal."""
import json
import shutil
from math import comb

import numpy as np
import pytest
from scipy import stats

from cifar_fast import compare as K
from cifar_fast.errors import ConfigError
from cifar_fast.predfile import FILE, add_level, load_predictions


def test_finish_run_writes_predictions(finished_run):
    p = load_predictions(finished_run)
    summary = json.loads((finished_run / 'summary.json').read_text())
    assert p['meta']['tta_levels'] == [0] and p['probs'][0].shape == (summary['n_test'], 10)
    assert p['probs'][0].dtype == np.float32 and abs(p['probs'][0].sum(1) - 1).max() < 5e-3  # float16 on disk
    assert float((p['preds'][0] == p['targets']).mean()) == pytest.approx(summary['test_accuracy'], abs=1e-6)
    assert p['meta']['test_set'] and p['meta']['pixels'] and p['meta']['weights'] == 'last'
    assert (finished_run / FILE).stat().st_size < 30 * summary['n_test'] + 2000  # ~20 bytes an image and level


def test_mcnemar_matches_a_hand_counted_table():
    # 7 images only A gets right, 2 only B: two-sided exact p = 2 · P(X ≤ 2), X ~ Binomial(9, 1/2)
    a = np.array([1] * 7 + [0] * 2 + [1] * 50 + [0] * 41, bool)
    b = np.array([0] * 7 + [1] * 2 + [1] * 50 + [0] * 41, bool)
    s = K.pair_stats(a, b)
    assert (s['a_only'], s['b_only'], s['both'], s['neither']) == (7, 2, 50, 41)
    assert s['p_mcnemar'] == pytest.approx(2 * sum(comb(9, k) for k in range(3)) / 2 ** 9)
    assert s['diff'] == pytest.approx(0.05) and K.mcnemar_exact(0, 0) == 1.0


def test_bootstrap_contains_the_difference_matches_an_index_bootstrap_and_shrinks():
    rng = np.random.default_rng(0)
    a, b = rng.random(2000) < 0.8, rng.random(2000) < 0.75
    diff, lo, hi = K.paired_bootstrap(a, b)
    assert lo < diff < hi and diff == pytest.approx(a.mean() - b.mean())
    idx = rng.integers(0, len(a), (4000, len(a)))  # the plain index bootstrap, resampling images
    ref = np.quantile(a[idx].mean(1) - b[idx].mean(1), [0.025, 0.975])
    assert abs(lo - ref[0]) < 0.006 and abs(hi - ref[1]) < 0.006
    _, lo4, hi4 = K.paired_bootstrap(np.tile(a, 4), np.tile(b, 4))
    assert (hi4 - lo4) == pytest.approx((hi - lo) / 2, rel=0.1)  # width ∝ 1/√n


def test_group_stats_and_detectable_difference():
    accs = [0.8600, 0.8575, 0.8631]
    g = K.group_stats(accs)
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(accs), scale=stats.sem(accs))
    assert g['std'] == pytest.approx(np.std(accs, ddof=1)) and (g['lo'], g['hi']) == pytest.approx((lo, hi))
    n1 = g['seeds_for']['1']
    assert K.detectable_difference(g['std'], n1) <= 0.01 < K.detectable_difference(g['std'], n1 - 1)
    # at the detectable difference a two-sided 5% t-test of two arms of n has ~80% power (noncentral t)
    for n in (3, 5, 10):
        d = K.detectable_difference(0.003, n)
        df, nc, tc = 2 * n - 2, d / (0.003 * np.sqrt(2 / n)), stats.t.ppf(0.975, 2 * n - 2)
        power = 1 - stats.nct.cdf(tc, df, nc) + stats.nct.cdf(-tc, df, nc)
        assert 0.77 < power < 0.83
        assert K.seeds_needed(0.003, d) == n
    w = K.welch([0.86, 0.861, 0.859], [0.85, 0.851, 0.849])
    assert w['p_welch'] == pytest.approx(stats.ttest_ind([0.86, 0.861, 0.859], [0.85, 0.851, 0.849]).pvalue)


def _copy(run, dst):
    shutil.copytree(run, dst)
    return dst


def test_compare_two_runs_writes_tables_and_files(finished_run, tmp_path, capsys):
    b = _copy(finished_run, tmp_path / 'b')
    args = K.parser().parse_args(['compare', str(finished_run), str(b), '--out', str(tmp_path / 'cmp')])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert 'McNemar' in out and 'TTA level 0' in out and '+0.00 pts' in out
    res = json.loads((tmp_path / 'cmp' / 'compare.json').read_text())
    assert res['pairs'][0]['a_only'] == res['pairs'][0]['b_only'] == 0 and res['pairs'][0]['p_mcnemar'] == 1
    assert len(res['groups']) == 1 and next(iter(res['groups'].values()))['n'] == 2  # one recipe, two runs
    for f in ('pairs.csv', 'groups.csv', 'per_class.csv', 'per_class.png'): assert (tmp_path / 'cmp' / f).is_file()


def test_compare_globs_and_wandb_table(finished_run, tmp_path):
    for i in range(2): _copy(finished_run, tmp_path / f'runs/x-{i}')
    res = K.compare_runs([str(tmp_path / 'runs/x-*')])
    assert [r['run'] for r in res['runs']] == ['x-0', 'x-1']
    files = K.save_comparison(res, tmp_path / 'o')
    wid = K.log_wandb(res, files=files)  # offline in tests (conftest)
    import os
    from pathlib import Path
    assert list(Path(os.environ['WANDB_DIR']).glob(f'wandb/offline-run-*-{wid}'))


def test_refusals_name_the_run(finished_run, tmp_path):
    with pytest.raises(ConfigError, match='no run folder matches'): K.compare_runs([str(tmp_path / 'none-*')])
    with pytest.raises(ConfigError, match='two or more runs'): K.compare_runs([str(finished_run)])
    b = _copy(finished_run, tmp_path / 'no_preds')
    (b / FILE).unlink()
    with pytest.raises(ConfigError, match=f'run {b} has no {FILE}.*--predict'): K.compare_runs([finished_run, b])
    res = K.compare_runs([finished_run, b], predict=True)  # asked: computed from model.pth, stored
    assert (b / FILE).is_file() and res['pairs'][0]['a_only'] == res['pairs'][0]['b_only'] == 0
    u = _copy(finished_run, tmp_path / 'unfinished')
    (u / 'summary.json').unlink()
    from cifar_fast.rundir import set_status
    set_status(u, 'interrupted', epoch=1)
    with pytest.raises(ConfigError, match=f'run {u} is not finished.*interrupted'): K.compare_runs([finished_run, u])


def test_refuses_another_test_set_or_tta_level(finished_run, tmp_path):
    other = _copy(finished_run, tmp_path / 'subset')
    with np.load(other / FILE) as z: arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays['meta'].tobytes())
    meta.update(test_set='0123456789abcdef', subset=50)
    arrays['meta'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(other / FILE, **arrays)
    with pytest.raises(ConfigError, match=f'run {other} was evaluated on other test images.*subsets 50 vs None'):
        K.compare_runs([finished_run, other])
    tta = _copy(finished_run, tmp_path / 'tta1')
    rec = json.loads((tta / 'recipe.json').read_text())
    rec['recipe']['tta'] = 1
    (tta / 'recipe.json').write_text(json.dumps(rec))
    p = load_predictions(tta)
    add_level(tta, 1, p['probs'][0])
    with pytest.raises(ConfigError, match=f'run {tta} is evaluated at TTA level 1.*--tta'):
        K.compare_runs([finished_run, tta])
    assert K.compare_runs([finished_run, tta], tta=0)['tta'] == 0
    with pytest.raises(ConfigError, match='TTA level.*not 2'): K.compare_runs([finished_run, tta], tta=2)

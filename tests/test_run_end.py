"""The end of a run: one prediction of the test split makes summary.json, interpret/ and W&B; the chosen weights stay
in memory; export.pkl carries no images and still predicts in a fresh process; data.json is what evaluation reads."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cifar_fast.predictions as P
import cifar_fast.run_files as RF
import cifar_fast.training as T
from cifar_fast.errors import DataError
from cifar_fast.inference import evaluate_run
from cifar_fast.interpret import interpret_run
from cifar_fast.predictions import FILES
from cifar_fast.recipe import DataConfig, Recipe, WandbConfig
from cifar_fast.rundir import read_json, write_json


@pytest.fixture(scope='module')
def run(synthetic, tmp_path_factory, monkeypatch_module):
    "One 2-epoch run with TTA and W&B (offline), every prediction pass recorded with the TTA levels it computed."
    calls = []
    real = P.predict_levels
    def spy(model, dl, levels=(0,)):
        calls.append(list(levels))
        return real(model, dl, levels)
    monkeypatch_module.setattr(P, 'predict_levels', spy)
    monkeypatch_module.setattr(RF, 'predict_levels', spy)
    r = Recipe(name='t', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=2, lr=0.02, seed=0, tta=1,
               precision='fp32', checkpoint='best', data=DataConfig(source=str(synthetic), batch_size=32),
               wandb=WandbConfig(enabled=True, mode='offline'))
    # Figures drawn as on a GPU, by the helper process (cifar_fast.drawing), so the end of the run must wait for them
    monkeypatch_module.setenv('CIFAR_FAST_RUN_FIGURES', 'background')
    monkeypatch_module.chdir(tmp_path_factory.mktemp('cwd'))
    res = T.train(r, runs_root='runs')  # relative, as from the command line
    return res, list(calls)


@pytest.fixture(scope='module')
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_the_test_split_is_predicted_in_one_pass_plain_and_with_tta(run):
    res, calls = run
    assert calls == [[0, 1]]  # summary.json, interpret/ and W&B from the plain level, the TTA figure from the other
    assert (res.run_dir / 'curves.png').is_file()  # every figure there, drawn beside the run, when train returns
    s, p = res.summary, res.predictions
    assert s['test_accuracy'] == float((p.probs.argmax(1) == p.targs).float().mean()) and s['n_test'] == p.n
    assert sorted(f.name for f in (res.run_dir / 'interpret').iterdir()) == sorted(FILES)
    with open(res.run_dir / 'interpret' / 'confusion.csv') as f:
        rows = list(csv.reader(f))[1:]
    assert [[int(v) for v in row[1:]] for row in rows] == p.confusion.tolist()


def test_the_chosen_weights_are_recorded_and_are_the_ones_evaluated(run):
    res, _ = run
    s, w = res.summary, torch.load(res.run_dir / 'model.pth', weights_only=True)
    assert s['checkpoint'] == w['selected'] == 'best' and s['weights_average'] is None and w['average'] is None
    rows = list(csv.DictReader(open(res.run_dir / 'metrics.csv')))
    best = max(rows, key=lambda r: float(r['accuracy']))
    # Epochs count from 1 in metrics.csv, summary.json, model.pth and on the console alike.
    assert int(best['epoch']) == s['best_epoch'] == w['best_epoch'] and [r['epoch'] for r in rows] == ['1', '2']
    shown = re.search(r'best epoch\W+(\d+) \(', (res.run_dir / 'console.log').read_text())
    assert shown and int(shown.group(1)) == s['best_epoch']
    assert all(torch.equal(v, res.learn.raw_model.state_dict()[k]) for k, v in w['best'].items())
    assert evaluate_run(res.run_dir)['accuracy'] == pytest.approx(s['test_accuracy'], abs=1e-6)


def test_best_weights_are_written_atomically(run):
    res, _ = run
    ck = res.run_dir / 'checkpoints'
    assert (ck / 'best.pth').is_file() and not [p for p in res.run_dir.rglob('*') if '.tmp' in p.name]
    sd = torch.load(ck / 'best.pth', weights_only=True)
    best = torch.load(res.run_dir / 'model.pth', weights_only=True)['best']
    assert all(torch.equal(sd[k], v) for k, v in best.items())


def test_export_carries_no_images_and_predicts_in_a_fresh_process(run, synthetic):
    res, _ = run
    d = res.run_dir
    assert (d / 'export.pkl').stat().st_size <= (d / 'model.pth').stat().st_size + 1_000_000
    p = res.predictions
    names = p.dl.dataset.names[:5]
    code = (f"import json, sys; from fastai.learner import load_learner; "
            f"learn = load_learner({str(d / 'export.pkl')!r}); "
            f"print(json.dumps([learn.predict({str(synthetic)!r} + '/' + n)[2].tolist() for n in {names!r}]))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, p.probs[:5], atol=1e-5, rtol=1e-4)


def test_wandb_model_artifact_names_its_files_by_absolute_path(run):
    "So that `wandb sync` of the offline run finds them from any folder (the run folder here is relative)."
    res, _ = run
    assert not res.run_dir.is_absolute()
    run_id = read_json(res.run_dir / 'wandb.json')['id']
    [seg] = Path(os.environ['WANDB_DIR']).glob(f'wandb/offline-run-*-{run_id}')
    out = subprocess.run([str(Path(sys.executable).with_name('wandb')), 'leet', 'inspect', '--json', str(seg)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    arts = [json.loads(x)['artifact'] for x in out.splitlines() if x and json.loads(x)['type'] == 'artifact']
    [model] = [a for a in arts if a['type'] == 'model']
    files = {e['path']: e['local_path'] for e in model['manifest']['contents']}
    assert set(files) == {'model.pth', 'export.pkl', 'recipe.json', 'data.json'}
    assert all(Path(p).is_absolute() and Path(p) == (res.run_dir / name).resolve() for name, p in files.items())


def test_evaluation_reads_classes_and_statistics_from_data_json(run, tmp_path):
    import shutil
    res, _ = run
    d = tmp_path / 'copy'
    shutil.copytree(res.run_dir, d)
    info = read_json(d / 'data.json')
    assert info['classes'] == list(res.predictions.classes) and len(info['mean']) == len(info['std']) == 3
    base = evaluate_run(d)
    write_json(d / 'data.json', dict(info, mean=[m + 0.5 for m in info['mean']]))  # other statistics: other inputs
    assert evaluate_run(d)['loss'] != pytest.approx(base['loss'], abs=1e-6)
    write_json(d / 'data.json', dict(info, classes=info['classes'][::-1]))
    with pytest.raises(DataError, match='trained on classes'): interpret_run(d)


def test_without_figures_the_run_writes_the_tables_and_says_where_figures_come_from(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv('CIFAR_FAST_RUN_FIGURES', '0')
    r = Recipe(name='t', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=1, lr=0.02, seed=0,
               data=DataConfig(source=str(synthetic), batch_size=32))
    d = T.train(r, runs_root=tmp_path).run_dir / 'interpret'
    assert sorted(p.name for p in d.iterdir()) == sorted(f for f in FILES if not f.endswith('.png'))
    assert 'cifar-fast interpret' in (d / 'report.md').read_text() and '.png' not in (d / 'report.md').read_text()

"""What a user types or downloads is data, never markup or code: names print literally, predict reads
folders, a subset report never replaces the full one, a sweep file is not overwritten silently, a recipe.json's
model_kwargs cannot make timm read a file, and a run folder's recorded data path is followed only if it is here."""
import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from cifar_fast.cli import main
from cifar_fast.errors import ConfigError
from cifar_fast.models import validate_model
from cifar_fast.rundir import read_json

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--model_kwargs.widths', '[8,16,32]', '--data.batch_size', '32', '--precision', 'fp32', '--tta', '0']
NAME = 'x[red]y[bold]z'  # rich markup would print it as 'xyz'


def _words(text: str) -> str: return ' '.join(text.split())  # rich wraps long lines: compare words


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    "cifar-fast in this process, from an empty folder: (exit code, everything it printed)."
    monkeypatch.chdir(tmp_path)

    def run(*argv):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, _words(out.out + out.err)
    return run


@pytest.fixture(scope='module')
def bracket_run(synthetic, tmp_path_factory):
    "A 1-epoch tiny run named NAME, trained through the CLI: (runs root, run folder, what train printed)."
    root = tmp_path_factory.mktemp('bracket_runs')
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # rich's Console writes to whatever sys.stdout is at print time
        code = main(['train', str(ROOT / 'recipes' / 'quick.py'), '--data', str(synthetic), *TINY, '--epochs', '1',
                     '--name', NAME, '--runs', str(root)])
    assert code == 0, buf.getvalue()[-2000:]
    [d] = root.iterdir()
    return root, d, _words(buf.getvalue())


def _copy(run: Path, tmp_path: Path) -> Path:
    d = tmp_path / 'copied' / run.name
    shutil.copytree(run, d)
    return d


def _edit_recipe(d: Path, **changes) -> None:
    rj = read_json(d / 'recipe.json')
    rj['recipe'].update(changes)
    (d / 'recipe.json').write_text(json.dumps(rj))


# ---- 1. user text prints literally -------------------------------------------------------------------------------

def test_train_prints_a_bracketed_run_name_and_path_literally(bracket_run):
    root, d, out = bracket_run
    assert d.name.startswith(NAME + '-'), d
    assert str(d) in out and f'{NAME}: fastnet_cpu' in out, out[:800]
    assert 'xyz' not in out


def test_runs_lists_a_bracketed_name_literally(bracket_run, cli):
    root, d, _ = bracket_run
    code, out = cli('runs', '--runs', root)
    assert code == 0 and d.name in out and 'xyz' not in out, out


def test_predict_prints_a_bracketed_file_name_literally(finished_run, synthetic, cli, tmp_path):
    img = tmp_path / 'a[red]b[bold]c.png'
    shutil.copy(next((synthetic / 'test').rglob('*.png')), img)
    code, out = cli('predict', finished_run, img)
    assert code == 0 and 'a[red]b[bold]c.png' in out and 'abc.png' not in out, out


# ---- 2. predict on a folder --------------------------------------------------------------------------------------

def test_predict_classifies_a_folder_recursively_in_sorted_order(finished_run, synthetic, cli, tmp_path):
    src = sorted((synthetic / 'test').rglob('*.png'))[:3]
    folder = tmp_path / 'imgs'
    (folder / 'sub').mkdir(parents=True)
    for name, s in zip(['b.png', 'a.png', 'sub/c.png'], src): shutil.copy(s, folder / name)
    (folder / 'notes.txt').write_text('not an image')
    code, out = cli('predict', finished_run, folder)
    assert code == 0, out
    shown = [w for w in out.split() if w.endswith('.png')]
    assert shown == [str(folder / 'a.png'), str(folder / 'b.png'), str(folder / 'sub' / 'c.png')], out
    assert 'notes.txt' not in out


def test_predict_names_a_path_that_is_neither_an_image_nor_a_folder_of_images(finished_run, cli, tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'notes.txt').write_text('x')
    code, out = cli('predict', finished_run, tmp_path / 'empty')
    assert code == 2 and f"folder {tmp_path / 'empty'} holds no image files" in out, out
    code, out = cli('predict', finished_run, tmp_path / 'notes.txt')
    assert code == 2 and f"{tmp_path / 'notes.txt'} is neither an image file" in out and 'folder' in out, out
    code, out = cli('predict', finished_run, tmp_path / 'nope.png')
    assert code == 2 and 'does not exist' in out, out


# ---- 3. a subset report sits beside the full one -----------------------------------------------------------------

def test_interpret_subset_leaves_the_full_report_intact(finished_run, cli, tmp_path):
    d = _copy(finished_run, tmp_path)
    code, out = cli('interpret', d, '--top-losses', '4')
    assert code == 0, out
    full = {f.name: f.read_bytes() for f in (d / 'interpret').iterdir()}
    assert 'confusion.png' in full, sorted(full)
    code, out = cli('interpret', d, '--subset', '10', '--top-losses', '4')
    assert code == 0 and str(d / 'interpret-subset10') in out, out
    assert {f.name: f.read_bytes() for f in (d / 'interpret').iterdir()} == full
    assert sum(int(n) for line in (d / 'interpret-subset10' / 'confusion.csv').read_text().splitlines()[1:]
               for n in line.split(',')[1:]) == 10


# ---- 4. a sweep file is not overwritten silently -----------------------------------------------------------------

def test_sweep_refuses_to_overwrite_its_file_without_force(cli, tmp_path):
    quick = ROOT / 'recipes' / 'quick.py'
    code, out = cli('sweep', quick, '--param', 'lr=0.1,0.2', '--out', 's.yaml')
    assert code == 0, out
    before = (tmp_path / 's.yaml').read_bytes()
    code, out = cli('sweep', quick, '--param', 'lr=0.3,0.4', '--out', 's.yaml')
    assert code == 2 and 's.yaml already exists' in out and '--force' in out and '--out' in out, out
    assert (tmp_path / 's.yaml').read_bytes() == before
    code, out = cli('sweep', quick, '--param', 'lr=0.3,0.4', '--out', 's.yaml', '--force')
    assert code == 0 and (tmp_path / 's.yaml').read_bytes() != before, out


# ---- 5. model_kwargs are architecture options only ---------------------------------------------------------------

@pytest.mark.parametrize('key,value', [('checkpoint_path', '/etc/passwd'), ('pretrained', True),
                                       ('pretrained', False), ('pretrained_cfg', dict(file='/tmp/w.pth')),
                                       ('pretrained_cfg_overlay', dict(url='https://example.com/w.pth')),
                                       ('cache_dir', '/tmp'), ('features_only', True)])
def test_timm_loading_options_are_refused(key, value):
    with pytest.raises(ConfigError, match=rf'model_kwargs\.{key}: .*architecture options only'):
        validate_model('timm/resnet10t', {key: value})


@pytest.mark.parametrize('value', ['/tmp/layer.py', 'weights.pth', '~/x', 'https://example.com/a', ['relu', '../x']])
def test_timm_path_like_values_are_refused(value):
    with pytest.raises(ConfigError, match=r'model_kwargs\.act_layer=.*looks like a file path or URL'):
        validate_model('timm/resnet10t', {'act_layer': value})


def test_timm_architecture_options_still_pass():
    validate_model('timm/resnet10t', dict(drop_path_rate=0.1, act_layer='relu', stem_width=16))


def test_a_downloaded_recipe_json_cannot_point_timm_at_a_file(finished_run, cli, tmp_path, synthetic):
    d = _copy(finished_run, tmp_path)
    _edit_recipe(d, model='timm/resnet10t', model_kwargs=dict(checkpoint_path=str(d / 'model.pth')))
    img = next((synthetic / 'test').rglob('*.png'))
    for argv in (['evaluate', d, '--data', synthetic], ['predict', d, img]):
        code, out = cli(*argv)
        assert code == 2 and 'model_kwargs.checkpoint_path' in out and 'architecture options only' in out, (argv, out)


# ---- 6. a run folder's recorded data path ------------------------------------------------------------------------

@pytest.fixture
def moved_run(finished_run, tmp_path):
    "A copy of the finished run whose recipe.json records a data path that is not on this machine."
    d = _copy(finished_run, tmp_path)
    rj = read_json(d / 'recipe.json')
    rj['recipe']['data']['source'] = str(tmp_path / 'their-machine' / 'cifar10')
    (d / 'recipe.json').write_text(json.dumps(rj))
    return d


def test_a_recorded_data_path_not_here_names_it_and_the_way_out(moved_run, cli, tmp_path):
    code, out = cli('evaluate', moved_run)
    assert code == 2 and str(tmp_path / 'their-machine' / 'cifar10') in out and 'not on this machine' in out, out
    assert '--data' in out and '$CIFAR_FAST_DATA' in out, out


def test_cifar_fast_data_is_used_before_a_recorded_path_and_said(moved_run, cli, synthetic, monkeypatch):
    monkeypatch.setenv('CIFAR_FAST_DATA', str(synthetic))
    code, out = cli('evaluate', moved_run)
    assert code == 0 and f'data: {synthetic} ($CIFAR_FAST_DATA' in out and 'test accuracy' in out, out


def test_data_flag_is_used_and_said(moved_run, cli, synthetic, monkeypatch):
    monkeypatch.setenv('CIFAR_FAST_DATA', '/nowhere')  # --data comes first
    code, out = cli('evaluate', moved_run, '--data', synthetic)
    assert code == 0 and f'data: {synthetic} (--data)' in out and 'test accuracy' in out, out
    code, out = cli('interpret', moved_run, '--data', synthetic, '--subset', '10', '--top-losses', '2')
    assert code == 0 and f'data: {synthetic} (--data)' in out, out

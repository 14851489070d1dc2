"""Shared fixtures: an isolated cache and W&B folder per session, the synthetic dataset, the real archive."""
import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports cifar_fast or wandb: keep every cache, W&B file and matplotlib window inside the session.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix='cifar_fast_tests_'))
os.environ['CIFAR_FAST_CACHE'] = str(_SESSION_TMP / 'cache')
os.environ.setdefault('MPLBACKEND', 'Agg')
for var in ('WANDB_DIR', 'WANDB_DATA_DIR', 'WANDB_CACHE_DIR', 'WANDB_CONFIG_DIR'):
    os.environ[var] = str(_SESSION_TMP / 'wandb')
os.environ['WANDB_MODE'] = 'offline'
# The end of a run draws interpret/'s three figures (~2 s of matplotlib here) unless told not to; over the suite's ~90
# short runs that was minutes. Tests of those figures (test_run_end, test_interpret, the notebooks) turn them on.
os.environ['CIFAR_FAST_RUN_FIGURES'] = '0'
os.environ['WANDB_SILENT'] = 'true'
os.environ.pop('WANDB_API_KEY', None)
os.environ.pop('CIFAR_FAST_DATA', None)

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / 'shared' / 'data' / 'cifar10.tgz'


@pytest.fixture(scope='session')
def synthetic(tmp_path_factory) -> Path:
    "A learnable CIFAR-layout dataset: 10 classes, 20 train and 10 test PNGs per class."
    from cifar_fast.data.synthetic import make_synthetic_cifar
    return make_synthetic_cifar(tmp_path_factory.mktemp('synthetic') / 'cifar10', n_train=20, n_test=10)


@pytest.fixture(scope='session')
def real_data() -> Path:
    "The shared JPEG CIFAR-10 archive, or a visible skip where it is absent."
    if not REAL_DATA.is_file(): pytest.skip(f'real CIFAR-10 archive not found at {REAL_DATA}')
    return REAL_DATA


@pytest.fixture
def no_real_data():
    "For a synthetic stand-in of a real-data test: skips where the archive is present, as the real test covers it."
    if REAL_DATA.is_file(): pytest.skip(f'the real archive is present: its test covers this ({REAL_DATA})')


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    "An empty cache folder for tests that check what is (not) written."
    d = tmp_path / 'cache'
    monkeypatch.setenv('CIFAR_FAST_CACHE', str(d))
    return d


@pytest.fixture(scope='session')
def finished_run(synthetic, tmp_path_factory) -> Path:
    """One complete 2-epoch run of a tiny fastnet on the synthetic set, shared by every test that only reads a run
    folder (evaluate, interpret, predict, runs). Tests that change a run folder copy it first (shutil.copytree)."""
    from cifar_fast.recipe import DataConfig, Recipe
    from cifar_fast.training import train
    r = Recipe(name='shared', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=2, lr=0.02, seed=0,
               precision='fp32', tta=0, data=DataConfig(source=str(synthetic), batch_size=32))
    return train(r, runs_root=tmp_path_factory.mktemp('shared_runs'), show_progress=False).run_dir

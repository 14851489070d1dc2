"""Every notebook in nbs/ runs top to bottom headless (nbclient, a fresh kernel each), and is stored without outputs.

Each runs in a copy of nbs/ beside a link to recipes/ (the notebooks read '../recipes/...'), so their run folders land
in a temporary folder. The data is the shared JPEG archive when present, else a synthetic set large enough for the
notebooks' default subset (2,000 training and 1,000 test images)."""
import os
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / 'shared' / 'data' / 'cifar10.tgz'
NBS = sorted((ROOT / 'nbs').glob('*.ipynb'))
# Less than a third of the default subset, and batches of 64 (notebook 00's lr_find runs a fixed 40 batches): every
# cell still runs, in less time (the suite runs all six notebooks)
TEST_PARAMETERS = 'TRAIN_SIZE, VALID_SIZE, BATCH_SIZE = (None, None, 512) if FULL_DATA else (600, 300, 64)'
EXPECTED = ['00_quickstart', '01_recipes', '02_mixup_cutmix', '03_interpret', '04_custom_model', '05_wandb']


def test_the_walkthrough_is_complete():
    assert [p.stem for p in NBS] == EXPECTED


@pytest.mark.parametrize('path', NBS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    "Outputs and execution counts are stripped in the repository; clear them with `jupyter nbconvert --clear-output`."
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == 'code' and (c.outputs or c.execution_count)]
    assert not dirty, (f'{path.name}: cells {dirty} hold outputs; '
                       f'run `jupyter nbconvert --clear-output --inplace {path}`')
    assert 'widgets' not in nb.metadata


@pytest.mark.parametrize('path', NBS, ids=lambda p: p.stem)
def test_uses_the_default_subset(path):
    "The parameters cell switches between the small default run and the full data, nothing else."
    src = nbformat.read(path, as_version=4).cells[1].source
    assert 'FULL_DATA = False' in src and 'TRAIN_SIZE, VALID_SIZE, EPOCHS' in src


@pytest.fixture(scope='module')
def notebook_data(tmp_path_factory) -> Path:
    if REAL_DATA.is_file(): return REAL_DATA
    from cifar_fast.data.synthetic import make_synthetic_cifar
    return make_synthetic_cifar(tmp_path_factory.mktemp('nb_data') / 'cifar10', n_train=200, n_test=100)


def execute(path: Path, root: Path):
    """Run one notebook in root/nbs beside root/recipes (a link); the executed copy, outputs and all, stays there to
    read after a failure. Returns (notebook, nbs folder, the exception that stopped it or None)."""
    from nbclient import NotebookClient
    (root / 'nbs').mkdir(parents=True)
    (root / 'recipes').symlink_to(ROOT / 'recipes')
    nb = nbformat.read(shutil.copy(path, root / 'nbs'), as_version=4)
    # papermill's way: a cell after the parameters cell sets the test's size; the notebook runs as stored otherwise
    nb.cells.insert(2, nbformat.v4.new_code_cell(TEST_PARAMETERS, metadata={'tags': ['injected-parameters']}))
    err = None
    try: NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(root / 'nbs')}}
                        ).execute()
    except Exception as e: err = e  # reported by the notebook's own test, with the executed copy's folder
    finally: nbformat.write(nb, root / 'nbs' / path.name)
    return nb, root / 'nbs', err


@pytest.fixture(scope='module')
def executed(tmp_path_factory, notebook_data) -> dict:
    """Every notebook, run two at a time, each kernel in one thread: a kernel spends seconds importing, in one thread,
    so two kernels keep both of this machine's cores busy where one in turn would leave one idle. The kernels inherit
    this environment."""
    from concurrent.futures import ThreadPoolExecutor
    env = {'CIFAR_FAST_DATA': str(notebook_data), 'OMP_NUM_THREADS': '1',
           'CIFAR_FAST_RUN_FIGURES': '1',  # a user's default: notebook 03 shows the run's figures
           'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items(): mp.setenv(k, v)
        # W&B files go into each run folder, as a user's would; the conftest's MPLBACKEND=Agg would stop inline figures
        for var in ('WANDB_DIR', 'WANDB_DATA_DIR', 'WANDB_CACHE_DIR', 'MPLBACKEND'): mp.delenv(var, raising=False)
        with ThreadPoolExecutor(2) as pool:
            jobs = {p.stem: pool.submit(execute, p, tmp_path_factory.mktemp(p.stem)) for p in NBS}
            return {k: j.result() for k, j in jobs.items()}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize('path', NBS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path, executed):
    nb, workdir, err = executed[path.stem]
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert err is None and not errors, f'{path.name}: {err or errors[0]}; executed copy in {workdir}'
    images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if 'image/png' in o.get('data', {})]
    if path.stem != '05_wandb': assert images, f'{path.name} shows no figure'
    runs = list((workdir / 'runs').glob('*/summary.json')) if (workdir / 'runs').is_dir() else []
    if path.stem != '00_quickstart': assert runs, f'{path.name} finished no run'

"""W&B sweeps: the config wandb loads, the exact command its agent runs (trained here, offline), and every bad
`--param` refused with its name and value before any file is written."""
import argparse
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from cifar_fast.errors import ConfigError
from cifar_fast.recipe import load_recipe, parse_overrides
from cifar_fast.rundir import read_json
from cifar_fast.cli import add_sweep_parser, cmd_sweep
from cifar_fast.sweep import parse_params, sweep_config, sweep_groups, write_sweep

TINY = '''from cifar_fast import DataConfig, Recipe, WandbConfig
recipe = Recipe(name='tiny', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=1, lr=0.02, seed=0,
                data=DataConfig(source={src!r}, batch_size=32), wandb=WandbConfig(log_model=False, n_top_losses=0))
'''


@pytest.fixture
def tiny(tmp_path, synthetic, monkeypatch) -> Path:
    "A one-epoch recipe on the synthetic fixture, in the current folder (tmp_path) as an agent would find it."
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'tiny.py').write_text(TINY.format(src=str(synthetic)))
    return Path('tiny.py')


def _yaml(path) -> dict: return yaml.safe_load(Path(path).read_text())


def _sweep_cli(*argv):
    "Run `cifar-fast sweep ...` through the subcommand's own parser."
    p = argparse.ArgumentParser()
    add_sweep_parser(p.add_subparsers(dest='command'))
    return cmd_sweep(p.parse_args(['sweep', *argv]))


def test_cli_writes_typed_values_and_prints_how_to_run(tiny, tmp_path, capsys):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args, load_sweep_config
    assert _sweep_cli(str(tiny), '--param', 'lr=0.05,valley', '--param', 'data.batch_size=16,32', '--param',
                      'nesterov=true,false', '--param', 'moms=[0.9,0.8,0.9],[0.95,0.85,0.95]', '--param',
                      'model_kwargs.widths=[8,16,32],[16,32,64]', '--method', 'bayes', '--project', 'proj',
                      '--entity', 'me', '--count', '3', '--out', 'sw/tiny.yaml') == 0
    cfg = load_sweep_config('sw/tiny.yaml')  # what `wandb sweep FILE` reads
    assert cfg['program'] == 'tiny.py' and cfg['method'] == 'bayes' and cfg['run_cap'] == 3
    assert cfg['metric'] == {'name': 'test_accuracy', 'goal': 'maximize'}
    assert (cfg['project'], cfg['entity']) == ('proj', 'me')
    assert cfg['command'] == ['${env}', '${interpreter}', '-m', 'cifar_fast.cli', 'train', 'tiny.py', '--wandb',
                              '${args}']
    values = {k: v['values'] for k, v in cfg['parameters'].items()}
    assert values == {'lr': [0.05, 'valley'], 'data.batch_size': [16, 32], 'nesterov': [True, False],
                      'moms': [[0.9, 0.8, 0.9], [0.95, 0.85, 0.95]], 'model_kwargs.widths': [[8, 16, 32], [16, 32, 64]]}
    assert type(values['data.batch_size'][0]) is int and type(values['lr'][0]) is float
    # every value survives wandb's own ${args} formatting and our train command's parsing
    for k, vs in values.items():
        for v in vs:
            (flag,) = create_sweep_command_args({'args': {k: {'value': v}}})['args']
            back = parse_overrides([flag])[k]
            assert (list(back) if isinstance(back, tuple) else back) == v, flag
    out = ' '.join(capsys.readouterr().out.split())
    assert 'wandb sweep sw/tiny.yaml' in out and 'wandb agent --count 3 me/proj/<sweep_id>' in out


def test_defaults_come_from_the_recipe(tiny, capsys):
    _sweep_cli(str(tiny), '--param', 'lr=0.1')
    cfg = _yaml('sweeps/tiny.yaml')
    assert cfg['method'] == 'grid' and cfg['project'] == 'cifar_fast' and 'entity' not in cfg
    assert 'wandb agent cifar_fast/<sweep_id>' in ' '.join(capsys.readouterr().out.split())


def test_config_passes_the_sweeps_schema(tiny):
    "The validation `wandb sweep --controller` runs; it needs the optional `sweeps` package (wandb[sweeps])."
    sweeps = pytest.importorskip('sweeps')
    for method in ('grid', 'random', 'bayes'):
        cfg = sweep_config(tiny, {'lr': [0.05, 0.1], 'moms': [[0.9, 0.8, 0.9]]}, method, project='p', run_cap=2)
        assert sweeps.schema_violations_from_proposed_config(cfg) == []


def test_the_agents_command_trains_with_the_overrides(tiny, tmp_path, monkeypatch):
    "wandb's own Agent renders the command for one parameter set and starts it; the run folder records the values."
    from wandb.sdk.launch.sweeps.utils import load_sweep_config
    from wandb.wandb_agent import Agent
    params = parse_params(['lr=0.05,0.1', 'mixup=0,0.4'], load_recipe(tiny))
    cfg = load_sweep_config(str(write_sweep(sweep_config(tiny, params), 'sweep.yaml')))
    # ${interpreter} is `python` found on PATH, as it is for an agent started inside the environment
    monkeypatch.setenv('PATH', f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setenv('WANDB_SWEEP_ID', 'sw0test1')  # `wandb agent` sets it; _command_run reads it
    for var in ('WANDB_RUN_ID', 'WANDB_SWEEP_PARAM_PATH'): monkeypatch.setenv(var, 'x')  # the agent sets them: restore
    agent = Agent(api=None, queue=None, sweep_id='sw0test1')
    agent._sweep_command = cfg['command']  # as Agent.run takes it from the sweep's stored config
    agent._command_run(dict(run_id='run0001', program=cfg['program'],
                            args={'lr': {'value': 0.1}, 'mixup': {'value': 0.4}}))
    proc = agent._run_processes['run0001']
    try: rc = proc.wait(timeout=240)
    finally:
        if proc.poll() is None: proc.kill()
    assert proc._popen.args == ['/usr/bin/env', 'python', '-m', 'cifar_fast.cli', 'train', 'tiny.py', '--wandb',
                                '--lr=0.1', '--mixup=0.4']
    assert rc == 0
    (d,) = (tmp_path / 'runs').iterdir()
    rec = read_json(d / 'recipe.json')['recipe']
    assert rec['lr'] == 0.1 and rec['mixup'] == 0.4 and rec['epochs'] == 1 and rec['wandb']['enabled']
    assert read_json(d / 'wandb.json')['id'] == 'run0001'  # the agent's run id, as W&B expects
    assert cfg['metric']['name'] in read_json(d / 'summary.json')  # the key the W&B callback puts in the summary
    assert sweep_groups([d]) == {'sw0test1': [d]}  # env.json records the sweep


BAD = [  # (arguments, what the message must contain)
    (['--param', 'lrr=0.1'], '--param lrr: unknown recipe field. Did you mean: lr'),
    (['--param', 'data.batch_sze=8'], 'Did you mean: data.batch_size'),
    (['--param', 'epochs=3.5'], "--param epochs=3.5: --epochs '3.5': expected int"),
    (['--param', 'lr=0.1,abc'], "--param lr=abc: recipe field lr='abc'"),
    (['--param', 'lr=-1'], '--param lr=-1: recipe field lr=-1.0 is out of range'),
    (['--param', 'mixup=0.4,-0.1'], '--param mixup=-0.1: recipe field mixup=-0.1 is out of range'),
    (['--param', 'schedule=cosin'], "--param schedule=cosin: recipe field schedule='cosin': allowed values"),
    (['--param', 'lr='], '--param lr: no values'),
    (['--param', 'lr'], "--param 'lr': write NAME=V1,V2"),
    (['--param', 'lr=0.1', '--param', 'lr=0.2'], '--param lr is given twice'),
    (['--param', 'lr=0.1,0.1'], '--param lr=0.1: value given twice'),
    (['--param', 'model_kwargs.depth=3'], "--param model_kwargs.depth=3: Model 'fastnet_cpu' has no option 'depth'"),
    (['--param', 'model_kwargs.widths=3'], "--param model_kwargs.widths=3: Model 'fastnet_cpu' cannot be built with"),
    (['--param', 'model_kwargs={"widths":[8]}'], '--param model_kwargs={"widths":[8]}: the W&B agent would pass it'),
    (['--param', 'wandb.project=x'], '--param wandb.project: W&B settings are not hyperparameters'),
    (['--param', 'data.engine=fast,datablock', '--param', 'data.alt_flip=false,true'],
     '--param data.engine="datablock" data.alt_flip=true: recipe field data.alt_flip=True needs'),
    (['--param', 'lr=0.1', '--method', 'bayes', '--metric', 'none'], '--method bayes needs a --metric'),
    (['--param', 'lr=0.1', '--method', 'random', '--metric', 'none'], '--method random needs a --metric'),
    (['--param', 'lr=0.1', '--metric', 'acc'], "--metric 'acc': one of accuracy"),
    (['--param', 'tta=0,1', '--metric', 'accuracy_tta'], '--metric accuracy_tta needs tta > 0'),
    (['--param', 'lr=0.1', '--count', '0'], '--count 0'),
    ([], 'give at least one --param'),
]


@pytest.mark.parametrize('argv,msg', BAD, ids=[' '.join(a) or 'no-param' for a, _ in BAD])
def test_bad_input_is_refused_before_writing(tiny, tmp_path, argv, msg):
    with pytest.raises(ConfigError, match=re.escape(msg)): _sweep_cli(str(tiny), *argv, '--out', 'out.yaml')
    assert not list(tmp_path.rglob('*.yaml'))


def test_write_is_atomic_and_replaces(tmp_path):
    cfg = dict(program='a.py', method='grid', parameters={'lr': {'values': [0.1]}})
    p = write_sweep(cfg, tmp_path / 's' / 'x.yaml')
    write_sweep(dict(cfg, parameters={'lr': {'values': [0.2]}}), p)
    assert _yaml(p)['parameters']['lr']['values'] == [0.2]
    assert [f.name for f in p.parent.iterdir()] == ['x.yaml']  # no temporary file left behind


def test_sweep_groups_reads_env_json(tmp_path):
    dirs = [tmp_path / n for n in 'abcde']
    for d in dirs: d.mkdir()
    (dirs[0] / 'env.json').write_text('{"wandb_sweep_id": "s1"}')
    (dirs[1] / 'env.json').write_text('{"wandb_sweep_id": null}')
    (dirs[3] / 'env.json').write_text('{"wandb_sweep_id": "s1"}')
    (dirs[4] / 'env.json').write_text('{not json')
    assert sweep_groups(dirs) == {'s1': [dirs[0], dirs[3]], None: [dirs[1], dirs[2], dirs[4]]}

"""Recipes: typed, validated before any work, overridable from the command line, hashed; shipped recipes load."""
from pathlib import Path

import pytest

from cifar_fast.errors import ConfigError
from cifar_fast.recipe import (DataConfig, Recipe, apply_overrides, from_dict, load_recipe, parse_overrides,
                               recipe_hash, to_dict)

RECIPES = sorted((Path(__file__).resolve().parents[1] / 'recipes').glob('*.py'))


@pytest.mark.parametrize('path', RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipe_loads_validates_and_hashes_stably(path):
    r = load_recipe(path)
    assert r.name == path.stem
    assert recipe_hash(r) == recipe_hash(load_recipe(path)) == recipe_hash(from_dict(to_dict(r)))
    assert path.read_text().startswith('"""') and 'Source' in path.read_text()[:1500]  # header cites its source


def test_expected_recipes_are_shipped():
    assert {p.stem for p in RECIPES} >= {'quick', 'resnet56', 'resnet18_5m', 'wrn28_3_5', 'vgg16', 'resnet9'}


@pytest.mark.parametrize('kw,match', [
    (dict(epochs='10'), r'epochs=.*expected int'),
    (dict(epochs=0), r'epochs=0 is out of range'),
    (dict(lr=-0.1), r'lr=-0.1 is out of range'),
    (dict(lr='fast'), r"lr='fast'.*valley"),
    (dict(schedule='exp'), r"schedule='exp'.*allowed values.*one_cycle"),
    (dict(label_smoothing=1.0), r'label_smoothing=1.0 is out of range'),
    (dict(moms=(0.9, 0.8)), r'moms'),
    (dict(data=DataConfig(batch_size=0)), r'data.batch_size=0 is out of range'),
    (dict(data=DataConfig(engine='dali')), r"data.engine='dali'"),
    (dict(data=DataConfig(policy='rand')), r"data.policy='rand'.*allowed values.*'trivial', 'auto'"),
    (dict(data=DataConfig(engine='datablock', alt_flip=True)), r"recipe field data.alt_flip=True .*'fast'"),
    (dict(name='my run'), r'name='),
    (dict(warmup=0.1), r"warmup=0.1 applies to schedule cosine, step, linear_decay, not schedule='one_cycle'"),
    (dict(warmup_epochs=1), r"warmup_epochs=1 applies to schedule .*not schedule='one_cycle' \(it rises from"),
    (dict(schedule='flat_cos', warmup=0.1), r"schedule='flat_cos' \(it has no warm-up\)"),
    (dict(schedule='step', warmup=0.1, warmup_epochs=2), r"warmup=0.1 and warmup_epochs=2: give the warm-up's length"),
    (dict(schedule='step', warmup_shape='constant'), r"warmup_shape='constant' needs a warm-up: set warmup_epochs"),
    (dict(schedule='step', warmup=0.1, warmup_shape='cubic'), r"warmup_shape='cubic'.*'linear', 'constant'"),
    (dict(schedule='step', warmup=1.0), r'warmup=1.0 is out of range'),
    (dict(schedule='step', warmup_epochs=-1), r'warmup_epochs=-1 is out of range'),
])
def test_bad_values_name_field_value_and_allowed(kw, match):
    with pytest.raises(ConfigError, match=match): Recipe(**kw)


@pytest.mark.parametrize('engine', ['fast', 'datablock'])
def test_a_policy_is_valid_on_both_engines(engine):
    assert Recipe(data=DataConfig(engine=engine, policy='auto')).data.policy == 'auto'


def test_building_a_recipe_imports_neither_torch_nor_timm():
    import subprocess
    import sys
    code = ("import sys; from cifar_fast.recipe import Recipe; Recipe(model='wrn28_3_5'); "
            "print(sorted(m for m in ('torch', 'timm', 'fastai') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'


@pytest.mark.parametrize('kw,match', [
    (dict(model='resnet57'), r'resnet57.*Did you mean'),
    (dict(model='resnet20', model_kwargs=dict(widht=2)), r'widht'),
])
def test_a_run_checks_the_model_before_it_writes_anything(kw, match, tmp_path):
    from cifar_fast.training import train
    with pytest.raises(ConfigError, match=match): train(Recipe(**kw), runs_root=tmp_path)
    assert not any(tmp_path.iterdir())  # no run folder was made


def test_overrides_are_typed_and_nested():
    over = parse_overrides(['--epochs', '30', '--data.batch_size=256', '--lr', 'valley', '--compile',
                            '--model_kwargs.zero_init_residual', 'true', '--moms', '0.9,0.8,0.9', '--patience', 'none',
                            '--wandb.tags', 'a,b'])
    assert over == {'epochs': 30, 'data.batch_size': 256, 'lr': 'valley', 'compile': True,
                    'model_kwargs.zero_init_residual': True, 'moms': (0.9, 0.8, 0.9), 'patience': None,
                    'wandb.tags': ('a', 'b')}
    r = apply_overrides(Recipe(), over)
    assert r.epochs == 30 and r.data.batch_size == 256 and r.model_kwargs == {'zero_init_residual': True}
    assert r.data.translate == Recipe().data.translate  # untouched siblings kept


@pytest.mark.parametrize('tokens,match', [
    (['--epohcs', '3'], r'unknown recipe field --epohcs.*epochs'),
    (['--data.batchsize', '3'], r'data.batch_size'),
    (['--epochs', 'three'], r"--epochs 'three': expected int"),
    (['--lr', '1e-3x'], None),  # a string: refused by validation below
    (['epochs', '3'], r'unexpected argument'),
])
def test_bad_overrides(tokens, match):
    if match is None:
        with pytest.raises(ConfigError, match='lr='): apply_overrides(Recipe(), parse_overrides(tokens))
    else:
        with pytest.raises(ConfigError, match=match): parse_overrides(tokens)


def test_recipe_files_errors(tmp_path):
    with pytest.raises(ConfigError, match=r'nope\.py does not exist'): load_recipe(tmp_path / 'nope.py')
    (tmp_path / 'r.txt').write_text('x')
    with pytest.raises(ConfigError, match='not a Python file'): load_recipe(tmp_path / 'r.txt')
    (tmp_path / 'syntax.py').write_text('recipe = Recipe(\n')
    with pytest.raises(ConfigError, match=r'syntax\.py has a syntax error at line'): load_recipe(tmp_path / 'syntax.py')
    (tmp_path / 'none.py').write_text('x = 1\n')
    with pytest.raises(ConfigError, match=r'defines no `recipe = Recipe'): load_recipe(tmp_path / 'none.py')
    (tmp_path / 'bad.py').write_text('from cifar_fast import Recipe\nrecipe = Recipe(epochs=-1)\n')
    with pytest.raises(ConfigError, match=r'bad\.py: recipe field epochs=-1'): load_recipe(tmp_path / 'bad.py')


def test_hash_ignores_wandb_but_not_training_fields():
    from cifar_fast.recipe import WandbConfig
    r = Recipe()
    assert recipe_hash(r) == recipe_hash(r.replace(wandb=WandbConfig(enabled=True)))
    assert recipe_hash(r) != recipe_hash(r.replace(seed=1))

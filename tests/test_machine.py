"""The run's choices for its machine (cifar_fast.machine): what 'auto' resolves to, that env.json records each choice
and where it came from, that the run uses what it recorded, and that the recipe or command line overrides each."""
import os

import pytest
import torch

import cifar_fast.machine as M
from cifar_fast.errors import ConfigError
from cifar_fast.inference import evaluate_run, load_run
from cifar_fast.machine import Choices, choose, resolve_precision
from cifar_fast.recipe import DataConfig, Recipe, apply_overrides, parse_overrides
from cifar_fast.rundir import read_json
from cifar_fast.training import train
from helpers import torch_threads


@pytest.fixture
def recipe(synthetic):
    return Recipe(name='m', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=1, lr=0.02, seed=0,
                  data=DataConfig(source=str(synthetic), batch_size=32))


@pytest.fixture
def keep_threads():
    "Runs set torch's thread count for the process: put it back for the tests after."
    with torch_threads(): yield


def test_auto_precision_follows_the_cpu(monkeypatch):
    """'auto' is bf16 on a CPU that computes bf16 natively (the kernel's CPU flags amx_bf16 or avx512_bf16 on x86,
    bf16 on Arm), else fp32; then the rule as a table, with the hardware queries stubbed."""
    from pathlib import Path

    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.is_file():
        flags = set()
        for line in cpuinfo.read_text().splitlines():
            key, _, val = line.partition(':')
            if key.strip() in ('flags', 'Features'): flags |= set(val.split())
        native = bool(flags & {'amx_bf16', 'avx512_bf16', 'bf16'})
        assert resolve_precision('auto', 'cpu') == ('bf16' if native else 'fp32'), \
            f"native bf16 flags on this CPU: {sorted(flags & {'amx_bf16', 'avx512_bf16', 'bf16'}) or 'none'}"
    # (device, CUDA has bf16, CPU has native bf16) -> what 'auto' resolves to; an explicit precision is kept as given.
    table = [('cpu', False, True, 'bf16'), ('cpu', True, False, 'fp32'),
             ('cuda', True, False, 'bf16'), ('cuda:0', False, True, 'fp16'),  # fp16 + loss scaler before Ampere
             ('meta', True, True, 'fp32')]
    for device, cuda_bf16, cpu_bf16, expected in table:
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, v=cuda_bf16, **k: v)
        monkeypatch.setattr(M, 'cpu_has_native_bf16', lambda v=cpu_bf16: v)
        assert resolve_precision('auto', device) == expected, (device, cuda_bf16, cpu_bf16)
        for explicit in ('fp32', 'bf16', 'fp16'):
            assert resolve_precision(explicit, device) == explicit, (device, explicit)


def test_auto_layout_compile_and_threads_follow_the_device(monkeypatch):
    """The rules as a table, the machine stubbed: NHWC on CPU and CUDA, no compile until it is measured to pay,
    threads shared out."""
    monkeypatch.setattr(M.os, 'sched_getaffinity', lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(M.torch, 'get_num_threads', lambda: 16)  # torch's default: the machine's cores, say 16
    r = Recipe()
    assert (r.channels_last, r.compile, r.threads) == ('auto', 'auto', 0)  # every shipped default is automatic
    for device, cl, comp in (('cpu', True, False), ('cuda', True, False), ('cuda:1', True, False),
                             ('meta', False, False)):
        c = choose(r, device)
        assert (c.channels_last, c.compile, c.threads) == (cl, comp, 8), device
        assert set(c.auto) == {'precision', 'channels_last', 'compile', 'threads'}
    assert choose(r, 'cpu', local_processes=2).threads == 4 and choose(r, 'cpu', local_processes=16).threads == 1
    monkeypatch.setattr(M.torch, 'get_num_threads', lambda: 1)  # OMP_NUM_THREADS=1, or a caller's set_num_threads(1)
    assert choose(r, 'cpu').threads == 1
    fixed = choose(r.replace(channels_last=False, compile=True, threads=3, precision='fp32'), 'cpu')
    assert (fixed.channels_last, fixed.compile, fixed.threads, fixed.precision, fixed.auto) == \
        (False, True, 3, 'fp32', ())
    assert choose(r.replace(compile='reduce-overhead'), 'cuda').compile == 'reduce-overhead'  # a mode, as named


def test_cli_overrides_each_choice_and_refuses_other_values():
    over = parse_overrides(['--channels_last', 'false', '--compile', 'auto', '--threads', '1'])
    assert over == {'channels_last': False, 'compile': 'auto', 'threads': 1}
    r = apply_overrides(Recipe(), over)
    assert (r.channels_last, r.compile, r.threads) == (False, 'auto', 1)
    with pytest.raises(ConfigError, match=r"channels_last='sometimes'.*'auto', True, False"):
        apply_overrides(Recipe(), parse_overrides(['--channels_last', 'sometimes']))
    with pytest.raises(ConfigError, match=r'threads=-1.*out of range'):
        Recipe(threads=-1)


def test_env_json_records_what_the_run_used(recipe, tmp_path, keep_threads):
    """A default run: env.json says each choice and that it was automatic, and the model and batches really are in
    that layout; a recipe that sets them is recorded as 'recipe' and obeyed (threads included)."""
    res = train(recipe, runs_root=tmp_path / 'auto')
    env = read_json(res.run_dir / 'env.json')
    cores = min(torch.get_num_threads(), len(os.sched_getaffinity(0)))
    assert env['choices'] == dict(precision=dict(value=env['precision'], chosen='auto'),
                                  channels_last=dict(value=True, chosen='auto'),
                                  compile=dict(value=False, chosen='auto'),
                                  threads=dict(value=cores, chosen='auto'))
    assert env['deterministic'] is False and env['cudnn'] == dict(deterministic=False, benchmark=True)
    conv = next(m for m in res.learn.raw_model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    xb, _ = res.learn.dls.train.one_batch()
    assert xb.is_contiguous(memory_format=torch.channels_last) and not xb.is_contiguous()
    _, model = load_run(res.run_dir)  # evaluation computes in the run's layout, so it repeats the run's figure
    assert next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous(
        memory_format=torch.channels_last)
    assert evaluate_run(res.run_dir)['accuracy'] == pytest.approx(res.summary['test_accuracy'], abs=1e-9)

    res = train(recipe.replace(channels_last=False, threads=1, precision='fp32'), runs_root=tmp_path / 'fixed')
    env = read_json(res.run_dir / 'env.json')
    assert env['choices']['channels_last'] == dict(value=False, chosen='recipe')
    assert env['choices']['threads'] == dict(value=1, chosen='recipe') and torch.get_num_threads() == 1
    conv = next(m for m in res.learn.raw_model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous() and res.learn.dls.train.one_batch()[0].is_contiguous()


def test_choices_describe_themselves():
    assert Choices('bf16', True, False, 2).describe() == 'bf16, channels_last, 2 threads'
    assert Choices('fp32', False, True, 1).describe() == 'fp32, compiled, 1 thread'
    assert Choices('bf16', True, 'reduce-overhead', 1).describe() == \
        'bf16, channels_last, compiled (reduce-overhead), 1 thread'
    assert Choices('fp16', True, True, 4, auto=('threads',)).record()['threads'] == dict(value=4, chosen='auto')



def test_seed_run_sets_cudnn_as_the_recipe_asks():
    import torch
    from cifar_fast.machine import seed_run
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        seed_run(3, deterministic=True)
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (True, False)
        a = torch.rand(3)
        seed_run(3, deterministic=False)  # the autotuner back on: fastai's set_seed(reproducible=True) left it off
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
        assert torch.equal(torch.rand(3), a)  # seeded the same either way
    finally: torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old

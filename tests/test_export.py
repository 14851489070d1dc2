"""cifar-fast export: the ONNX graph checked with onnxruntime against the run, its input contract, dynamic batch and
flip TTA; weights without pickle (load_model, timm); the model card; each model family exports or refuses clearly.
One dynamo export of the shared finished run (module fixture, ~15-40 s on 2 busy cores) serves most tests; the family
loop uses torch's faster TorchScript exporter (dynamo=False) on one model per family, `slow` for all the others."""
import json

import numpy as np
import pytest
import torch

from cifar_fast.data.augment import CIFAR_STATS, normalize
from cifar_fast.deploy import INPUTS, DeployModel
from cifar_fast.errors import CifarFastError, ConfigError
from cifar_fast.export import INPUTS as export_inputs
from cifar_fast.export import (ExportCheckFailed, check_onnx, export_run, load_model, onnx_bytes, ort_predict,
                               torch_reference)
from cifar_fast.inference import load_run
from cifar_fast.models import create_model, list_models
from cifar_fast.models.registry import _entry
from cifar_fast.rundir import read_json


@pytest.fixture(scope='module')
def exported(finished_run, tmp_path_factory):
    "The shared run exported once with the default (dynamo) exporter and flip TTA, checked."
    out = tmp_path_factory.mktemp('export')
    return export_run(finished_run, out, tta=1)


def test_export_is_checked_against_the_run(exported, finished_run):
    c = exported['check']
    assert c['passed'] and c['n'] == 100  # the synthetic test split: 10 images per class
    assert abs(c['accuracy_onnx'] - c['accuracy_torch']) <= 0.001
    assert c['max_abs_prob_diff'] < 1e-4
    assert read_json(exported['out'] / 'export_check.json') == json.loads(json.dumps(c))
    assert {p.name for p in exported['out'].iterdir()} == {'model.onnx', 'model.safetensors', 'model.json',
                                                             'export_check.json', 'model_card.md'}


def test_untta_export_equals_the_runs_recorded_accuracy(finished_run, tmp_path):
    "Without TTA the run's own summary.json is the reference; the legacy exporter keeps this test short."
    res = export_run(finished_run, tmp_path, dynamo=False, card=False)
    assert res['check']['accuracy_run'] == read_json(finished_run / 'summary.json')['test_accuracy']
    assert abs(res['check']['accuracy_onnx'] - res['check']['accuracy_run']) <= 0.001


def test_a_broken_export_fails_loudly(finished_run, tmp_path):
    "A graph with the wrong normalisation (ImageNet's statistics, a classic slip) is caught and nothing is written."
    _, model = load_run(finished_run)
    broken = onnx_bytes(model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), dynamo=False)
    with pytest.raises(ExportCheckFailed, match='does not reproduce the run'):
        check_onnx(broken, finished_run)
    zeros = onnx_bytes(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10)), *CIFAR_STATS, dynamo=False)
    with pytest.raises(ExportCheckFailed, match='probabilities differ'):
        check_onnx(zeros, finished_run)


def test_dynamic_batch_and_flip_tta_equal_ours(exported, finished_run):
    "Any batch size runs; the graph's flip TTA equals cifar_fast's TTAModel (level 1) on the same images."
    from cifar_fast.tta import TTAModel
    _, model = load_run(finished_run)
    x = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = TTAModel(model, 1)(normalize(x, *CIFAR_STATS)).softmax(1)
    for bs in (1, 3, 7):
        got = ort_predict(exported['out'] / 'model.onnx', x, bs=bs)
        assert got.shape == (7, 10)
        assert (got - ours).abs().max() < 1e-5
    flip_only = 0.5 * (model(normalize(x, *CIFAR_STATS)) + model(normalize(x.flip(-1), *CIFAR_STATS)))
    assert (got - flip_only.softmax(1)).abs().max() < 1e-5  # by hand: the mean of the two views' logits


def test_input_contract_uint8_and_float(finished_run):
    "input='uint8' takes 0..255 bytes, input='float' [0, 1] floats: the same images give the same probabilities."
    ort = pytest.importorskip('onnxruntime')
    _, model = load_run(finished_run)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    as_u8 = ort.InferenceSession(onnx_bytes(model, *CIFAR_STATS, input='uint8', dynamo=False))
    as_f = ort.InferenceSession(onnx_bytes(model, *CIFAR_STATS, input='float', dynamo=False))
    assert as_u8.get_inputs()[0].type == 'tensor(uint8)' and as_f.get_inputs()[0].type == 'tensor(float)'
    p8 = as_u8.run(['probs'], {'images': x.numpy()})[0]
    pf = as_f.run(['probs'], {'images': (x.float() / 255).numpy()})[0]
    np.testing.assert_allclose(p8, pf, atol=1e-6)
    with pytest.raises(ConfigError, match='input must be one of'):
        DeployModel(model, *CIFAR_STATS, input='int8')
    assert INPUTS == export_inputs  # the parser's copy, which spares the CLI's start an import of torch
    with pytest.raises(ConfigError, match='level 2'):
        DeployModel(model, *CIFAR_STATS, tta=2)


def test_load_model_round_trip_and_timm(exported, finished_run):
    "model.safetensors + model.json give the same logits through load_model and through timm.create_model."
    import timm
    from safetensors.torch import load_file
    _, model = load_run(finished_run)
    model = model.to(memory_format=torch.contiguous_format)  # load_run may pick channels_last: other float rounding
    x = normalize(torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8), *CIFAR_STATS)
    again = load_model(exported['out'])
    assert torch.equal(again(x), model(x))
    meta = read_json(exported['out'] / 'model.json')
    assert meta['classes'] == read_json(finished_run / 'data.json')['classes'] and meta['mean'] == list(CIFAR_STATS[0])
    t = timm.create_model(meta['timm_name'], num_classes=meta['num_classes'], **meta['model_kwargs'])
    t.load_state_dict(load_file(str(exported['out'] / 'model.safetensors')))
    assert torch.equal(t.eval()(x), model(x))


def test_model_card_says_what_was_measured(exported):
    text = (exported['out'] / 'model_card.md').read_text()
    assert text.startswith('---\n') and 'model-index:' in text and 'datasets:\n- cifar10' in text  # HF metadata
    for need in ('95% Wilson interval', 'with flip TTA (level 1)', 'The run recorded', 'expected calibration error',
                 '| airplane |', 'JPEG', 'recipe `shared`',
                 'Intended use and limits', 'huggingface-cli upload', 'ONNX check: onnxruntime'):
        assert need in text, need


def test_wilson_interval_matches_a_known_value():
    "Wilson 95% for 81/263 (Wikipedia's worked example, 'Binomial proportion confidence interval'): 0.2553–0.3662."
    from cifar_fast.model_card import wilson_interval
    lo, hi = wilson_interval(81, 263)
    assert round(lo, 4) == 0.2553 and round(hi, 4) == 0.3662


def test_missing_extra_names_it(monkeypatch, finished_run, tmp_path):
    import importlib
    real = importlib.import_module

    def no_onnx(name, *a):
        if name.startswith('onnxruntime'): raise ImportError(f"No module named '{name}'")
        return real(name, *a)
    monkeypatch.setattr(importlib, 'import_module', no_onnx)
    with pytest.raises(CifarFastError, match=r"pip install 'cifar_fast\[export\]'"):
        export_run(finished_run, tmp_path)
    assert not any(tmp_path.iterdir())  # refused before any work


def test_bad_input_is_refused(finished_run, tmp_path):
    with pytest.raises(ConfigError, match='--input must be one of'):
        export_run(finished_run, tmp_path, input='int8')
    with pytest.raises(ConfigError, match='does not exist'):
        export_run(tmp_path / 'nope', tmp_path)
    with pytest.raises(ConfigError, match='does not exist'):
        load_model(tmp_path / 'nothing-here')


# One model per family, tiny where the family takes widths; every registered model under `slow`.
FAMILY_REPRESENTATIVES = {'fastnet_cpu': dict(widths=(8, 16, 32)), 'resnet20': {}, 'wrn16_4': {}, 'vgg11': {},
                          'timm/resnet18': {}}
FAST = {'fastnet_cpu', 'resnet20'}  # the others export the same way, bigger; they run with -m slow


def _exports(name, kwargs, dynamo=False):
    model = create_model(name, seed=0, **kwargs).eval()
    graph = onnx_bytes(model, *CIFAR_STATS, dynamo=dynamo, name=name)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad(): ref = model(normalize(x, *CIFAR_STATS)).softmax(1)
    assert (ort_predict(graph, x) - ref).abs().max() < 1e-4, name


@pytest.mark.parametrize('name', [pytest.param(n, marks=() if n in FAST else pytest.mark.slow)
                                  for n in FAMILY_REPRESENTATIVES])
def test_each_family_exports(name):
    _exports(name, FAMILY_REPRESENTATIVES[name])


def smallest_of_each_architecture() -> list[str]:
    """One registered model per code path: the fewest parameters among those built by the same builder (resnet20 for
    resnet20-110, which differ only in the depth they pass it), and every model that has no builder of its own."""
    groups: dict = {}
    for name in list_models():
        e = _entry(name)
        groups.setdefault(e.builder or e.fn, []).append(e)
    return sorted(min(g, key=lambda e: e.params).name for g in groups.values())


def test_each_architecture_is_tested_once():
    names = smallest_of_each_architecture()
    assert {'resnet20', 'resnet18_5m', 'resnet9', 'wrn28_2', 'vgg11', 'fastnet_cpu'} <= set(names)
    assert not {'resnet110', 'wrn28_10', 'vgg19'} & set(names)


@pytest.mark.slow
@pytest.mark.parametrize('name', smallest_of_each_architecture())
def test_every_architecture_exports(name):
    _exports(name, {}, dynamo=True)


def test_a_model_that_cannot_export_says_why():
    "An op the exporter does not know is refused with the model's name and the way out, not a raw traceback."
    class Odd(torch.nn.Module):
        def forward(self, x): return torch.fft.fft2(x).abs().flatten(1)[:, :10]  # complex tensors: no ONNX export
    with pytest.raises(ConfigError, match=r'odd cannot be exported to ONNX.*safetensors'):
        onnx_bytes(Odd(), *CIFAR_STATS, dynamo=False, name='odd')


def test_torch_reference_is_the_runs_test_set(finished_run):
    ref = torch_reference(finished_run)
    assert ref['images'].dtype == torch.uint8 and ref['images'].shape == (100, 3, 32, 32)
    assert ref['probs'].shape == (100, 10) and len(ref['classes']) == 10


def test_cli_export(finished_run, tmp_path, capsys):
    "`cifar-fast export RUN` through its argparse wiring (cli.py adds it with export.add_commands)."
    import argparse

    from cifar_fast.export import add_commands
    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest='command'))
    a = p.parse_args(['export', str(finished_run), '--out', str(tmp_path), '--legacy-exporter', '--input', 'float'])
    assert a.func(a) == 0
    out = capsys.readouterr().out
    assert 'checked: onnxruntime' in out and 'model.onnx' in out and 'input float' in out
    assert read_json(tmp_path / 'model.json')['onnx']['input'] == 'float'

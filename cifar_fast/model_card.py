"""model_card.md for an exported run, in Hugging Face's model-card layout (YAML metadata with a `model-index`, then
the sections of huggingface_hub's modelcard template), so the export folder can be pushed as it is:
`huggingface-cli upload USER/NAME RUN/export .` (needs a network and `huggingface-cli login`; nothing here pushes).

Every number comes from the run folder (summary.json, env.json, recipe.json) or from the one prediction pass of the
export (`export.export_run`): accuracy with its 95% Wilson interval, calibration, per-class scores."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .rundir import atomic_write_bytes, read_json

Z95 = 1.959964  # two-sided 95% normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    "Wilson score interval for k successes in n trials (Wilson 1927; Agresti & Coull 1998 recommend it over Wald)."
    if n == 0: return (0., 1.)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0., centre - half), min(1., centre + half))


def _read(d: Path, name: str) -> dict:
    return read_json(d / name) if (d / name).is_file() else {}


def prediction_scores(probs, targs, classes) -> dict:
    "Accuracy, its interval, ECE and per-class precision/recall/F1 from one set of predictions."
    from .predictions import calibration_bins, confusion_matrix, expected_calibration_error, per_class_metrics
    preds, t = probs.argmax(1).numpy(), targs.numpy()
    cm = confusion_matrix(t, preds, len(classes))
    k, n = int(np.trace(cm)), int(cm.sum())
    pc = per_class_metrics(t, preds, cm)
    return dict(accuracy=k / max(n, 1), n=n, interval=wilson_interval(k, n),
                ece=expected_calibration_error(calibration_bins(probs, targs)),
                per_class=[dict(cls=c, precision=float(pc['precision'][i]), recall=float(pc['recall'][i]),
                                f1=float(pc['f1'][i]), support=int(pc['support'][i])) for i, c in enumerate(classes)])


def model_card(run_dir: str | Path, scores: dict | None = None, check: dict | None = None,
               export: dict | None = None) -> str:
    "The card's text."
    d = Path(run_dir)
    s, env, rec = _read(d, 'summary.json'), _read(d, 'env.json'), _read(d, 'recipe.json')
    r, export = rec.get('recipe', {}), export or {}
    name, model = r.get('name', d.name), r.get('model', '?')
    classes = export.get('classes') or _read(d, 'data.json').get('classes') or []
    acc = scores['accuracy'] if scores else s.get('test_accuracy')
    n = scores['n'] if scores else s.get('n_test')
    lo, hi = scores['interval'] if scores else wilson_interval(round((acc or 0) * (n or 0)), n or 0)
    machine = env.get('gpu') or env.get('cpu', 'unknown CPU')
    meta = dict(library_name='pytorch', license='apache-2.0', datasets=['cifar10'], pipeline_tag='image-classification',
                tags=['image-classification', 'cifar10', 'onnx', 'safetensors', 'cifar_fast', model],
                metrics=['accuracy'],
                **{'model-index': [dict(name=f'{name}-{model}', results=[dict(
                    task=dict(type='image-classification', name='Image Classification'),
                    dataset=dict(type='cifar10', name='CIFAR-10 (JPEG re-encoding, test split)', split='test'),
                    metrics=[dict(type='accuracy', value=round(100 * acc, 2) if acc is not None else None,
                                  name='top-1 accuracy (%)')])])]})
    import yaml
    L = ['---', yaml.safe_dump(meta, sort_keys=False).strip(), '---', '',
         f'# {name} ({model}) on CIFAR-10', '',
         f'A {model} image classifier ({s.get("params", env.get("params", "?")):,} parameters) for the 10 CIFAR-10 '
         f'classes, trained with the cifar_fast recipe `{name}` (hash `{rec.get("hash", "?")}`). '
         f'It takes 32×32 RGB images.', '',
         '## Model details', '',
         f'- Architecture: `{model}`'
         + (f', options `{json.dumps(r.get("model_kwargs"))}`' if r.get('model_kwargs') else ''),
         f'- Classes, in output order: {", ".join(classes)}',
         '- Files: `model.onnx` (input `images`, NCHW RGB, '
         f'{export.get("onnx", {}).get("input", "uint8") if export.get("onnx") else "—"}'
         f'; outputs `logits`, `probs`; any batch size; normalisation'
         + (' and flip TTA' if (export.get('onnx') or {}).get('tta') else '') + ' inside the graph), '
         '`model.safetensors` + `model.json` (weights without pickle: `cifar_fast.load_model(folder)`, or '
         f'`timm.create_model("{export.get("timm_name")}", num_classes={len(classes)}, **model_kwargs)` after '
         '`import cifar_fast.models`, then `load_state_dict(safetensors.torch.load_file(...))`)',
         f'- Normalisation: x/255, then (x − mean)/std with mean {export.get("mean")} and std {export.get("std")} '
         "(fastai's cifar_stats)", '',
         '## Training data', '',
         f'CIFAR-10 training split ({env.get("n_train", "?"):,} images) from `{env.get("data_source", "?")}`. '
         'The shared copy these runs use is CIFAR-10 re-encoded as JPEG (quality 75): accuracies are 2–3 points below '
         'what the same recipe reaches on the original PNG/pickle images, and the model has seen JPEG artefacts '
         'only.', '',
         '## Training procedure', '',
         f'- Recipe `{name}`, hash `{rec.get("hash", "?")}` '
         '(the full resolved recipe is `recipe.json` in the run folder)',
         f'- {s.get("epochs", "?")} of {s.get("epochs_planned", "?")} planned epochs, batch '
         f'{r.get("data", {}).get("batch_size", "?")}, lr {r.get("lr")}, weight decay {r.get("wd")}, label smoothing '
         f'{r.get("label_smoothing")}, seed {s.get("seed", r.get("seed"))}; weights: {s.get("checkpoint", "?")}',
         f'- Machine: {machine}, {env.get("precision", "?")}, torch {env.get("torch", "?")}, fastai '
         f'{env.get("fastai", "?")}; {s.get("wall_seconds", "?")} s of training wall time', '',
         '## Evaluation', '']
    tta = (scores or {}).get('tta', 0)
    if acc is not None:
        how = f' with flip TTA (level {tta}), as model.onnx computes' if tta else ' without TTA'
        L.append(f'- Test accuracy of the exported model{how}: **{100 * acc:.2f}%** on {n:,} test images (95% Wilson '
                 f'interval {100 * lo:.2f}–{100 * hi:.2f}%; one run, one seed: seed-to-seed spread is not included)')
    if s.get('test_accuracy') is not None:
        tta_run = (f'; with TTA level {s.get("tta_level")} {100 * s["test_accuracy_tta"]:.2f}%'
                   if s.get('test_accuracy_tta') is not None else '')
        L.append(f'- The run recorded (summary.json): without TTA {100 * s["test_accuracy"]:.2f}%{tta_run}')
    if check:
        run = f'; the run recorded {100 * check["accuracy_run"]:.2f}%' if check.get('accuracy_run') is not None else ''
        L.append(f'- ONNX check: onnxruntime {100 * check["accuracy_onnx"]:.2f}% '
                 f'vs torch {100 * check["accuracy_torch"]:.2f}%'
                 f'{run}; max |Δp| {check["max_abs_prob_diff"]:.2e} (input {check["input"]}, TTA {check["tta"]})')
    else: L.append('- ONNX check: not run for this export')
    if scores:
        L += [f'- Calibration: expected calibration error {100 * scores["ece"]:.2f}% (15 equal-width bins)', '',
              '| class | precision | recall | F1 | support |', '|---|---:|---:|---:|---:|']
        L += [f'| {c["cls"]} | {c["precision"]:.3f} | {c["recall"]:.3f} | {c["f1"]:.3f} | {c["support"]} |'
              for c in scores['per_class']]
    rob = _read(d / 'robustness', 'robustness.json') or _read(d, 'robustness.json')  # `cifar-fast robustness RUN`
    L += ['', '## Robustness', '',
          ('Measured (robustness/robustness.json): ' + ', '.join(f'{k} {v:.4g}' for k, v in rob.items()
                                                                 if isinstance(v, (int, float)) and k != 'seconds'))
          if rob else 'Not measured for this run (no robustness/robustness.json: `cifar-fast robustness RUN`).', '',
          '## Intended use and limits', '',
          '- For CIFAR-10-like 32×32 photographs of the 10 classes above: teaching, benchmarking, baselines.',
          '- Not for other image sizes, other classes, or any decision about people: every input is forced into one of '
          'the 10 classes, and its confidence is not a probability that the image belongs to any of them.',
          '- Evaluated on the JPEG re-encoded test split only; accuracy on other images is not known.', '',
          '## How to push', '',
          'Pushing needs a network and a Hugging Face account (not done here): `huggingface-cli login`, then '
          '`huggingface-cli upload USER/NAME path/to/export .`', '']
    return '\n'.join(L)


def write_model_card(run_dir, path, scores=None, check=None, export=None) -> Path:
    "model_card.md, written atomically."
    return atomic_write_bytes(Path(path), model_card(run_dir, scores, check, export).encode())

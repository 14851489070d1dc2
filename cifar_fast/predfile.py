"""predictions.npz: a finished run's per-image test predictions, kept so that `compare` and other reports never re-run
the model unless asked. Written once by the end of a run (training.finish_run) from the same prediction pass as
summary.json, atomically; read back with `np.load(allow_pickle=False)`, since a run folder may come from elsewhere.

Contents (float16 probabilities, ~20 bytes per image per TTA level for 10 classes, measured in docs/evidence.md):
- `targets` (N,) int16; per stored TTA level t: `probs{t}` (N, C) float16 and `preds{t}` (N,) int16, the argmax of
  the float32 probabilities (float16 rounding could tie two classes and change a prediction);
- `meta`: UTF-8 JSON of the test set's identity (`test_set`: sha256 of the image names and labels; `pixels`: sha256
  of the decoded images, when the loader holds them), its source, subset size, classes, and the weights predicted
  with (the recipe's `checkpoint`, and the average if EMA/lookahead)."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .rundir import atomic_write_bytes

FILE = 'predictions.npz'
VERSION = 1


def _name(n) -> str:
    "An image's name without the machine's folder: split/class/file (what the fast engine records already)."
    return '/'.join(Path(str(n)).parts[-3:])


def test_set_identity(dl, targs) -> dict:
    "What makes two test sets the same: the image names and labels in order, and (fast engine) the decoded pixels."
    ds = dl.dataset
    names = getattr(ds, 'names', None)
    if names is None and getattr(ds, 'items', None) is not None and not hasattr(ds, 'x'): names = ds.items
    t = np.asarray(targs, dtype=np.int64)
    h = hashlib.sha256(('\n'.join(_name(n) for n in names) if names is not None else f'unnamed:{len(t)}').encode())
    h.update(t.tobytes())
    out = dict(test_set=h.hexdigest()[:16], n=len(t))
    if hasattr(ds, 'x'): out['pixels'] = hashlib.sha256(ds.x.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    return out


def save_predictions(run_dir: str | Path, probs: dict, targs, classes, dl, source=None, subset=None,
                     weights: str = 'selected', average=None) -> Path:
    """Write predictions.npz. `probs`: TTA level -> (N, C) float probabilities (torch or numpy), level 0 at least.
    `dl`: the loader predicted on (for the test set's identity); `source`: the data source (recorded as text)."""
    probs = {int(k): np.asarray(v.float().cpu() if hasattr(v, 'float') else v, dtype=np.float32)
             for k, v in probs.items()}
    t = np.asarray(targs.cpu() if hasattr(targs, 'cpu') else targs).astype(np.int16)
    meta = dict(version=VERSION, classes=[str(c) for c in classes], tta_levels=sorted(probs), weights=weights,
                average=average, source=None if source is None else str(source),
                fingerprint=getattr(source, 'fingerprint', None), subset=subset, **test_set_identity(dl, t))
    arrays = dict(targets=t, meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8))
    for k, p in probs.items():
        arrays[f'probs{k}'], arrays[f'preds{k}'] = p.astype(np.float16), p.argmax(1).astype(np.int16)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(Path(run_dir) / FILE, buf.getvalue())


def add_level(run_dir: str | Path, level: int, probs) -> Path:
    "Add (or replace) one TTA level's predictions in an existing predictions.npz, atomically."
    d = Path(run_dir)
    with np.load(d / FILE, allow_pickle=False) as z: arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays['meta'].tobytes())
    p = np.asarray(probs.float().cpu() if hasattr(probs, 'float') else probs, dtype=np.float32)
    if len(p) != meta['n']: raise ConfigError(f'{d / FILE}: {len(p)} predictions for a test set of {meta["n"]}.')
    arrays[f'probs{level}'], arrays[f'preds{level}'] = p.astype(np.float16), p.argmax(1).astype(np.int16)
    meta['tta_levels'] = sorted(set(meta['tta_levels']) | {int(level)})
    arrays['meta'] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(d / FILE, buf.getvalue())


def load_predictions(run_dir: str | Path) -> dict:
    "{'meta': dict, 'targets': (N,), 'probs': {level: (N, C) float32}, 'preds': {level: (N,)}} of a run."
    path = Path(run_dir) / FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z['meta'].tobytes())
            levels = meta['tta_levels']
            return dict(meta=meta, targets=z['targets'].astype(np.int64),
                        probs={k: z[f'probs{k}'].astype(np.float32) for k in levels},
                        preds={k: z[f'preds{k}'].astype(np.int64) for k in levels})
    except (OSError, KeyError, ValueError) as e:
        if not path.is_file(): raise
        raise ConfigError(f'{path} is damaged ({type(e).__name__}: {str(e)[:120]}); recompute it with '
                          f'`cifar-fast compare --predict`.') from None

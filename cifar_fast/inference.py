"""Using a finished run: rebuild the model from recipe.json and load model.pth with `torch.load(weights_only=True)`;
the images are normalised with the statistics, and named with the classes, that data.json records for the run.
A pickled export.pkl can run arbitrary code when loaded, so it is only used with an explicit `trust_pickle=True`.
A run folder may come from another machine: its recorded data path is followed only if it exists here, after the
user's --data and $CIFAR_FAST_DATA (see `data_source`)."""
from __future__ import annotations

from pathlib import Path

import torch

from .data import CIFAR_STATS, recipe_dls, run_data_source
from .errors import ConfigError, DataError
from .machine import resolve_channels_last
from .predictions import accuracy, predict_loader
from .recipe import Recipe, from_dict
from .rundir import check_run_dir, read_json

WEIGHTS = ('selected', 'best', 'last')


def load_run(run_dir: str | Path, weights: str = 'selected', trust_pickle: bool = False, device='cpu'):
    "(recipe, model in eval mode) of a run; `weights` is 'selected' (the run's chosen weights), 'best' or 'last'."
    if weights not in WEIGHTS: raise ConfigError(f"weights must be one of {', '.join(WEIGHTS)}, not {weights!r}.")
    d = check_run_dir(run_dir, ('recipe.json', 'export.pkl' if trust_pickle else 'model.pth'))
    r = from_dict(read_json(d / 'recipe.json')['recipe'])
    if trust_pickle:
        from fastai.learner import load_learner
        model = load_learner(d / 'export.pkl', cpu=torch.device(device).type == 'cpu').model
    else:
        from .models import create_model
        model = create_model(r.model, **r.model_kwargs)
        try:
            state = torch.load(d / 'model.pth', weights_only=True, map_location=device)
            model.load_state_dict(state[state['selected'] if weights == 'selected' else weights])
        except Exception as e:  # truncated, overwritten, or the weights of another model
            raise ConfigError(f"{d / 'model.pth'} is damaged or not this run's weights ({type(e).__name__}: "
                              f"{str(e)[:160]}). Train the run again, or, if you trust it, use its export.pkl with "
                              f"--trust-pickle.") from None
    if resolve_channels_last(r.channels_last, device):  # the layout the run computed in: the same numbers, as fast
        model = model.to(memory_format=torch.channels_last)
    return r, model.to(device).eval()


def run_data(run_dir: str | Path) -> dict:
    """What the run's model expects of its inputs: `classes` (in output order) and `stats` ((mean, std) per channel),
    from data.json. Runs written before data.json existed fall back to env.json's classes and fastai's cifar_stats,
    the only statistics those runs could have used."""
    d = Path(run_dir)
    if (d / 'data.json').is_file():
        info = read_json(d / 'data.json')
        return dict(classes=list(info['classes']), stats=(tuple(info['mean']), tuple(info['std'])))
    env = read_json(d / 'env.json') if (d / 'env.json').is_file() else {}
    return dict(classes=env.get('classes'), stats=CIFAR_STATS)


def data_source(run_dir: str | Path, data=None) -> tuple[str | None, str]:
    """(source, why) of the images a run is evaluated on: `data` (--data), then $CIFAR_FAST_DATA, then the path its
    recipe.json records if it exists on this machine; a recorded path that is not here raises DataError."""
    where = check_run_dir(run_dir) / 'recipe.json'
    recorded = read_json(where)['recipe'].get('data', {}).get('source')
    return run_data_source(recorded, str(data) if data else None, str(where))


def run_dls(r: Recipe, run_dir: str | Path, data=None, device='cpu', **changes):
    """The run's DataLoaders for evaluation (fast engine: both engines normalise identically), normalised as the run
    was, on the images `data_source` picks; refused when their classes are not the ones the model was trained on."""
    info, where = run_data(run_dir), str(Path(run_dir) / 'recipe.json')
    source, why = run_data_source(r.data.source, str(data) if data else None, where)
    # Messages about the source name where it came from: --data, $CIFAR_FAST_DATA, or the recorded data.source
    origin = '--data' if data else f"data.source in {where if why.startswith('data.source') else why}"
    dls = recipe_dls(r, device, progress=False, source=source, source_origin=origin, engine='fast', stats=info['stats'],
                     **changes)
    if info['classes'] is not None and list(info['classes']) != [str(c) for c in dls.vocab]:
        used = source or 'the default download'
        raise DataError(f"run {run_dir} was trained on classes {info['classes']}, but its data ({used}, from {why}) "
                        f"has {list(dls.vocab)}: point --data at the data it was trained on.")
    return dls


def evaluate_run(run_dir, tta: int = 0, data=None, trust_pickle: bool = False, weights: str = 'selected',
                 device='cpu') -> dict:
    "Test accuracy of a run's weights (optionally with TTA), recomputed from model.pth and the recipe's data."
    r, model = load_run(run_dir, weights, trust_pickle, device)
    dls = run_dls(r, run_dir, data, device)
    probs, targs, losses = predict_loader(model, dls.valid, tta)
    return dict(accuracy=accuracy(probs, targs), loss=float(losses.mean()),
                n=len(targs), tta=tta, weights=weights, recipe=r.name, model=r.model)


def image_paths(paths) -> list[Path]:
    """Each path that is an image file, and the image files in each folder: found as fastai's `get_image_files` finds
    them (recursively, skipping hidden folders, by image suffix), in sorted order so that the output is repeatable."""
    from fastai.data.transforms import get_image_files, image_extensions
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(get_image_files(p))
            if not found:
                raise ConfigError(f"folder {p} holds no image files (searched recursively for .png, .jpg, .jpeg, "
                                  f".bmp, ...); give image files, or a folder that holds some.")
            out += found
        elif p.is_file():
            if p.suffix.lower() not in image_extensions:
                raise ConfigError(f"{p} is neither an image file (.png, .jpg, .jpeg, .bmp, ...) nor a folder of "
                                  f"images; give image files or folders of them.")
            out.append(p)
        else: raise ConfigError(f"image {p} does not exist; give image files or folders of them.")
    return out


@torch.no_grad()
def predict_images(run_dir, images, trust_pickle: bool = False, device='cpu', top: int = 3) -> list[dict]:
    """For each image file, and each image in a folder (see `image_paths`): the predicted class, its probability and
    the `top` classes."""
    from .data import augment as A
    from .data.fast import _to_uint8_chw
    files = image_paths([images] if isinstance(images, (str, Path)) else images)  # every path checked before any work
    r, model = load_run(run_dir, 'selected', trust_pickle, device)
    info = run_data(run_dir)
    classes = info['classes'] or [str(c) for c in run_dls(r, run_dir, device=device).vocab]
    out = []
    for img in files:
        x = A.normalize(_to_uint8_chw(img)[None].to(device), *info['stats'])
        p = model(x).float().softmax(1)[0].cpu()
        vals, idx = p.topk(min(top, len(p)))
        out.append(dict(image=str(img), label=classes[int(idx[0])], prob=float(vals[0]),
                        top=[(classes[int(i)], float(v)) for v, i in zip(vals, idx)]))
    return out

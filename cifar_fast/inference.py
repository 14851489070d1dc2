"""Using a finished run: rebuild the model from recipe.json and load model.pth with `torch.load(weights_only=True)`.
A pickled export.pkl can run arbitrary code when loaded, so it is only used with an explicit `trust_pickle=True`."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .recipe import Recipe, from_dict
from .rundir import check_run_dir, read_json


def load_run(run_dir: str | Path, weights: str = 'selected', trust_pickle: bool = False, device='cpu'):
    "(recipe, model in eval mode) of a run; `weights` is 'selected' (the recipe's checkpoint policy), 'best' or 'last'."
    d = check_run_dir(run_dir, ('recipe.json', 'export.pkl' if trust_pickle else 'model.pth'))
    r = from_dict(read_json(d / 'recipe.json')['recipe'])
    if trust_pickle:
        from fastai.learner import load_learner
        model = load_learner(d / 'export.pkl', cpu=torch.device(device).type == 'cpu').model
    else:
        from .models import create_model
        state = torch.load(d / 'model.pth', weights_only=True, map_location=device)
        key = state['selected'] if weights == 'selected' else weights
        if key not in ('best', 'last'): raise ConfigError(f"weights must be 'selected', 'best' or 'last', not {weights!r}.")
        model = create_model(r.model, **r.model_kwargs)
        model.load_state_dict(state[key])
    return r, model.to(device).eval()


@torch.no_grad()
def predict_loader(model, dl, tta: int = 0):
    "(probabilities, targets, per-image cross-entropy losses) over `dl` in dataset order, computed once."
    from .tta import TTAModel
    net = TTAModel(model, tta).eval() if tta else model.eval()
    dl = dl.new(shuffle=False, drop_last=False)
    logits, targs = [], []
    for x, y in dl:
        logits.append(net(x).float().cpu()); targs.append(y.cpu())
    logits, targs = torch.cat(logits), torch.cat(targs).as_subclass(torch.Tensor)
    return logits.softmax(1), targs, F.cross_entropy(logits, targs, reduction='none')


def eval_dls(r: Recipe, data=None, device='cpu', valid_size=None):
    "The recipe's data (no augmentation needed) for evaluating a run; `data` overrides where the images are."
    import dataclasses

    from .training import build_dls
    d = dataclasses.replace(r.data, source=str(data) if data else r.data.source,
                            **({'valid_size': valid_size} if valid_size else {}))
    return build_dls(dataclasses.replace(r, data=d), device, progress=False)


def evaluate_run(run_dir, tta: int = 0, data=None, trust_pickle: bool = False, weights: str = 'selected',
                 device='cpu') -> dict:
    "Test accuracy of a run's weights (optionally with TTA), recomputed from model.pth and the recipe's data."
    r, model = load_run(run_dir, weights, trust_pickle, device)
    dls = eval_dls(r, data, device)
    probs, targs, losses = predict_loader(model, dls.valid, tta)
    return dict(accuracy=float((probs.argmax(1) == targs).float().mean()), loss=float(losses.mean()),
                n=len(targs), tta=tta, weights=weights, recipe=r.name, model=r.model)


@torch.no_grad()
def predict_images(run_dir, images, trust_pickle: bool = False, device='cpu', top: int = 3) -> list[dict]:
    "For each image file: the predicted class, its probability and the `top` classes."
    from .data import augment as A
    from .data.fast import _to_uint8_chw
    r, model = load_run(run_dir, 'selected', trust_pickle, device)
    classes = read_json(Path(run_dir) / 'env.json').get('classes') or _classes_of(r)
    out = []
    for img in images:
        if not Path(img).is_file(): raise ConfigError(f"image {img} does not exist.")
        x = A.normalize(_to_uint8_chw(Path(img))[None].to(device))
        p = model(x).float().softmax(1)[0].cpu()
        vals, idx = p.topk(min(top, len(p)))
        out.append(dict(image=str(img), label=classes[int(idx[0])], prob=float(vals[0]),
                        top=[(classes[int(i)], float(v)) for v, i in zip(vals, idx)]))
    return out


def _classes_of(r: Recipe):
    from .data import cifar_data
    return cifar_data(r.data.source, progress=False).classes

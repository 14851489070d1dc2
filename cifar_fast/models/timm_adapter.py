"""timm in both directions: any timm architecture as `create_model('timm/<name>')`, and every cifar_fast model
inside timm as `timm.create_model('cifar_<name>')`, from the moment it is registered (see `add_to_timm`).

A timm model's options come from a recipe, and a recipe.json may come with a downloaded run folder: they are data,
never a way to make timm read a file. So `check_timm_kwargs` admits architecture options only (see its rule)."""
from __future__ import annotations

import re
from typing import Any, Callable

import timm
from torch import nn

from ..errors import ConfigError, close_matches
from .registry import create_model

__all__ = ['TIMM_PREFIX', 'create_timm_model', 'add_to_timm', 'check_timm_kwargs']

# Prefix of our names inside timm's registry. No timm 1.0.31 architecture starts with 'cifar' (checked against
# timm.list_models(); tests/test_models.py re-checks it), so 'cifar_resnet18' cannot shadow timm's 'resnet18'.
TIMM_PREFIX = 'cifar_'


# timm.create_model's arguments that load weights or configs from a file, a URL or the Hub (timm 1.0.31
# models/_factory.py create_model, models/_builder.py build_model_with_cfg), and features_only/feature_cfg, which
# replace the classifier with a feature extractor; keys whose names say they hold weights or a location, too.
LOADING_KEYS = ('pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay', 'pretrained_strict', 'checkpoint_path',
                'cache_dir', 'features_only', 'feature_cfg')
_LOADING_NAME = re.compile(r'pretrained|checkpoint|weights|hub|url|(^|_)(path|file|dir)$')
# A value naming a file or URL: a path separator, a scheme, a home folder, or a weights/config file suffix. timm's
# architecture options are numbers, booleans and short names ('relu', 'avg', 'layernorm'): none of these match.
_PATH_LIKE = re.compile(r'[/\\]|://|^~|\.(pth?|bin|safetensors|ckpt|npz|npy|pkl|pickle|h5|onnx|json|ya?ml)$', re.I)


def _path_like(v: Any) -> str | None:
    "The first string in `v` (nested lists, tuples and dict values included) that names a file or URL, else None."
    if isinstance(v, str): return v if _PATH_LIKE.search(v.strip()) else None
    if isinstance(v, dict): v = list(v.keys()) + list(v.values())
    if isinstance(v, (list, tuple)): return next((p for p in map(_path_like, v) if p is not None), None)
    return None


def check_timm_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse any option of timm model `name` that is not an architecture option: the loading arguments
    (LOADING_KEYS), keys named for weights or locations (`*pretrained*`, `*checkpoint*`, `*_path`, `*_dir`, ...), and
    any value that names a file or URL (a '/' or '\\', '://', a leading '~', a .pth/.bin/.json/... suffix)."""
    for k, v in kwargs.items():
        if k in LOADING_KEYS or _LOADING_NAME.search(k):
            raise ConfigError(f"model_kwargs.{k}: 'timm/{name}' takes architecture options only; {k!r} would make "
                              f"timm load weights or configuration from a file or the network, which a recipe.json "
                              f"(perhaps from a downloaded run folder) must never do. Models are built untrained: "
                              f"remove model_kwargs.{k}.")
        if (p := _path_like(v)) is not None:
            raise ConfigError(f"model_kwargs.{k}={v!r}: {p!r} looks like a file path or URL; 'timm/{name}' takes "
                              f"architecture options only (numbers, booleans, names such as 'relu'), never files "
                              f"to read. Remove it or give an architecture value.")


def create_timm_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build timm architecture `name` untrained, with a `num_classes`-way head; extra kwargs go to timm.

    timm's ImageNet architectures are designed for 224-px inputs: their stems downsample 4× at once (resnet18: a
    7×7/2 conv and a 3×3/2 max-pool) and the stages 32× in all, so a 32×32 CIFAR image leaves a 1×1 map at the end
    of resnet18. Expect poor accuracy unless the stem is adapted (a 3×3/1 conv, no max-pool) or the images resized.
    """
    # Every door (train, evaluate, interpret, predict, sweep, validate_model) builds through here: check once, here.
    # cifar_fast builds untrained nets only: pretrained weights mean a download and ImageNet normalisation.
    check_timm_kwargs(name, kwargs)
    if not timm.is_model(name):
        raise ConfigError(f"Unknown timm model {name!r}.{close_matches(name, timm.list_models())} "
                          f"See timm.list_models('*pattern*').")
    try:
        # ImageNet stems shrink 32-px inputs early (see the docstring); that is the caller's trade-off to make.
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except TypeError as e:  # timm forwards unknown kwargs to the model class, which rejects them
        raise ConfigError(f"timm model {name!r} rejected the options {sorted(kwargs)}: {e}") from e


def _timm_entrypoint(name: str, timm_name: str) -> Callable[..., nn.Module]:
    "A timm-style entrypoint `timm_name(pretrained=False, **kwargs)` that builds cifar_fast's `name`."
    def entrypoint(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None,
                   **kwargs) -> nn.Module:
        # timm.create_model always passes the pretrained_* and cache_dir arguments; we have no weights to load.
        if pretrained: raise ConfigError(f"{timm_name!r} has no pretrained weights; use pretrained=False.")
        return create_model(name, **kwargs)
    # timm registers an entrypoint under its __name__ and module; both must be ours and unique.
    entrypoint.__name__ = entrypoint.__qualname__ = timm_name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"cifar_fast's {name!r} (untrained) through timm.create_model."
    return entrypoint


def add_to_timm(name: str) -> str:
    "Register cifar_fast's `name` in timm as `TIMM_PREFIX + name` (a no-op if ours already); return the timm name."
    # models/__init__.py makes this a registry bridge, so register_model calls it for every model, built-in or not.
    timm_name = TIMM_PREFIX + name
    if timm.is_model(timm_name):
        # Ours already: a name removed from our registry (a test's cleanup) and registered again. The entrypoint
        # looks the model up by name when called, so it serves the new registration as it is.
        if timm.models.model_entrypoint(timm_name).__module__ == __name__: return timm_name
        raise ConfigError(f"timm already has a model {timm_name!r}; register cifar_fast's {name!r} under another name.")
    # timm.models.register_model also appends the name to this module's __all__ (its bookkeeping, unused here).
    timm.models.register_model(_timm_entrypoint(name, timm_name))
    return timm_name

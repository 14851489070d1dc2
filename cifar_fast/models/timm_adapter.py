"""timm in both directions: any timm architecture as `create_model('timm/<name>')`, and every cifar_fast model
inside timm as `timm.create_model('cifar_<name>')`, from the moment it is registered (see `add_to_timm`)."""
from __future__ import annotations

from typing import Callable

import timm
from torch import nn

from ..errors import ConfigError, close_matches
from .registry import create_model

__all__ = ['TIMM_PREFIX', 'create_timm_model', 'add_to_timm']

# Prefix of our names inside timm's registry. No timm 1.0.31 architecture starts with 'cifar' (checked against
# timm.list_models(); tests/test_models.py re-checks it), so 'cifar_resnet18' cannot shadow timm's 'resnet18'.
TIMM_PREFIX = 'cifar_'


def create_timm_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build timm architecture `name` untrained, with a `num_classes`-way head; extra kwargs go to timm.

    timm's ImageNet architectures are designed for 224-px inputs: their stems downsample 4× at once (resnet18: a
    7×7/2 conv and a 3×3/2 max-pool) and the stages 32× in all, so a 32×32 CIFAR image leaves a 1×1 map at the end
    of resnet18. Expect poor accuracy unless the stem is adapted (a 3×3/1 conv, no max-pool) or the images resized.
    """
    if kwargs.pop('pretrained', False):
        # cifar_fast builds untrained nets only: pretrained weights mean a download and ImageNet normalisation.
        raise ConfigError(f"'timm/{name}' is always built untrained; drop pretrained=True.")
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

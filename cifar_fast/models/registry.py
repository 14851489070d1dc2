"""The model registry: named entrypoints that declare their parameter count and source, built by `create_model`."""
from __future__ import annotations

import fnmatch
import functools
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError, close_matches

__all__ = ['ModelEntry', 'register_model', 'register_namespace', 'register_bridge', 'create_model', 'validate_model',
           'list_models', 'model_info', 'models_table', 'count_params', 'count_macs']

# Models at or under this many parameters fit the "≤ 5M" budget the CLI table marks.
PARAM_BUDGET = 5_000_000


@dataclass(frozen=True)
class ModelEntry:
    "A registered entrypoint and what it declares about itself."
    name: str
    fn: Callable[..., nn.Module]
    family: str
    params: int
    source: str
    description: str
    options: tuple[str, ...] = ()  # keyword options besides num_classes and seed, in signature order
    builder: Callable[..., nn.Module] | None = None  # what `fn` builds through, shared by a family's depths and widths


_models: dict[str, ModelEntry] = {}
# Filled by adapters (timm_adapter) so that this module imports none of them. _namespaces: 'prefix' ->
# build(name, num_classes, **kwargs), other libraries' models reached as create_model('prefix/name'). _bridges:
# hook(name), called for each of our models so that another library's registry can build it too.
_namespaces: dict[str, Callable[..., nn.Module]] = {}
_bridges: list[Callable[[str], None]] = []


def _defaulted(fn: Callable) -> tuple[list[str], bool]:
    "Parameters of `fn` with a default, bar num_classes (the options a caller may set), and whether it takes **kwargs."
    params = inspect.signature(fn).parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and p.default is not p.empty and p.name != 'num_classes']
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _options(key: str, fn: Callable, builder: Callable | None) -> tuple[str, ...]:
    "The entrypoint's own options, then, where it passes **kwargs on, those of `builder`."
    own, passes_on = _defaulted(fn)
    if not passes_on: return tuple(own)
    # The builder's parameters without a default are the ones each entrypoint fixes (depth, width): not options.
    theirs, unchecked = _defaulted(builder) if builder is not None else ([], True)
    if unchecked:
        what = getattr(builder or fn, '__qualname__', repr(builder or fn))
        raise ConfigError(f"Model {key!r}: {what} takes **kwargs, so its options cannot be checked; pass "
                          f"builder=<the function or class that lists them as parameters with defaults>.")
    return tuple(dict.fromkeys(own + theirs))


def register_model(name: str | None = None, *, family: str, params: int, source: str, description: str = '',
                   builder: Callable[..., nn.Module] | None = None
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering `fn(num_classes=10, ...) -> nn.Module` under `name` (default: the function's name).

    The options create_model accepts are `fn`'s parameters with a default; where `fn` passes `**kwargs` on to
    `builder`, the builder's parameters with a default too. Every bridge (timm) learns the name at once.
    """
    def _register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _models:
            old = _models[key].fn
            raise ConfigError(f"Model {key!r} is already registered by {old.__module__}.{old.__qualname__}; "
                              f"pick another name for {fn.__module__}.{fn.__qualname__}.")
        # Lowercase words only: '/' marks a namespace ('timm/...') and '.' a timm pretrained tag.
        if not re.fullmatch(r'[a-z][a-z0-9_]*', key):
            raise ConfigError(f"Model name {key!r} must be lowercase letters, digits and '_', starting with a letter.")
        doc = description or (fn.__doc__ or '').strip().split('\n')[0]
        entry = ModelEntry(key, fn, family, int(params), source, doc, _options(key, fn, builder), builder)
        # Bridges first: one that refuses the name (timm has it already) leaves the model unregistered everywhere.
        for hook in _bridges: hook(key)
        _models[key] = entry
        return fn
    return _register


def register_namespace(prefix: str, build: Callable[..., nn.Module]) -> None:
    "Route `create_model('<prefix>/<name>', num_classes, **kw)` to `build(name, num_classes, **kw)`."
    _namespaces[prefix] = build


def register_bridge(hook: Callable[[str], None]) -> None:
    "Call `hook(name)` for every model registered so far and, from now on, inside each `register_model`."
    for key in _models: hook(key)
    _bridges.append(hook)


def list_models(pattern: str | None = None) -> list[str]:
    "Sorted names of the registered models, filtered by an fnmatch `pattern` such as 'resnet*'."
    names = sorted(_models)
    return fnmatch.filter(names, pattern) if pattern else names


def _entry(name: str) -> ModelEntry:
    if name in _models: return _models[name]
    raise ConfigError(f"Unknown model {name!r}.{close_matches(name, _models)} "
                      f"See cifar_fast.models.list_models(), or use 'timm/<name>' for a timm architecture.")


def _check_kwargs(entry: ModelEntry, kwargs: dict[str, Any]) -> None:
    for k in kwargs:
        if k not in entry.options:
            raise ConfigError(f"Model {entry.name!r} has no option {k!r}.{close_matches(k, entry.options)} "
                              f"It accepts: num_classes, seed{''.join(', ' + a for a in entry.options)}.")


def create_model(name: str, num_classes: int = 10, seed: int | None = None, **kwargs) -> nn.Module:
    "Build registered model `name` (or 'timm/<arch>') with `num_classes` outputs; `seed` makes the weights repeatable."
    if not isinstance(name, str): raise ConfigError(f"A model name must be a string, got {name!r}.")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}.")
    prefix, sep, rest = name.partition('/')
    if sep:
        if prefix not in _namespaces:
            raise ConfigError(f"Unknown model namespace {prefix!r} in {name!r}.{close_matches(prefix, _namespaces)} "
                              f"Known: {', '.join(sorted(_namespaces)) or 'none'}.")
        build = functools.partial(_namespaces[prefix], rest, num_classes, **kwargs)
    else:
        entry = _entry(name)
        _check_kwargs(entry, kwargs)
        build = functools.partial(entry.fn, num_classes=num_classes, **kwargs)
    if seed is None: return build()
    # Fork the CPU generator so a seeded build neither depends on nor advances the caller's RNG stream. Builders
    # pick no device, so their weights come from the CPU generator alone: seed only that one (torch.manual_seed would
    # also reseed every CUDA generator, outside the fork) and leave CUDA uninitialised.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build()


def validate_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Raise ConfigError for an unknown model (ours or 'timm/<arch>') or an option or value it refuses; no real build.
    Returns the model built on the meta device, for checks of its structure (preflight's whitening stem)."""
    # create_model checks the name and the option names before building. Values (shortcut='C', widths=3) only fail
    # in the builder, so build on the meta device: no memory, no init maths, milliseconds even for wrn28_10.
    try:
        with torch.device('meta'): return create_model(name, **kwargs)
    except ConfigError: raise
    except (TypeError, ValueError) as e:  # a builder's own complaint about a value, e.g. tuple(3) for widths=3
        raise ConfigError(f"Model {name!r} cannot be built with {kwargs}: {e}") from e


def count_params(model: nn.Module) -> int:
    "Number of parameters in `model`, trainable or not (buffers such as BN running stats are not parameters)."
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, size: int = 32, in_chans: int = 3) -> int:
    "Multiply-accumulates of one forward pass on one `in_chans`×`size`×`size` image, counted in Conv2d and Linear."
    # Counted: each Conv2d output element costs (in_channels / groups) × kh × kw MACs and each Linear output
    # element in_features MACs. Not counted: biases, BatchNorm, activations, pooling, residual adds and logit
    # scaling; together they are well under 1% of the conv MACs for every net here.
    total = 0

    def hook(mod: nn.Module, inp, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    p = next(model.parameters())
    was_training = model.training
    try:
        # Eval mode so BatchNorm accepts a batch of one and its running statistics stay untouched.
        model.eval()(torch.zeros(1, in_chans, size, size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in handles: h.remove()
    return total


@functools.lru_cache(maxsize=None)
def _measure(name: str) -> tuple[int, int]:
    "(parameters, MACs) of `name` built at 10 classes; cached because the big nets take a second to build."
    model = create_model(name, num_classes=10, seed=0)
    return count_params(model), count_macs(model)


def model_info(name: str) -> dict[str, Any]:
    "What `name` declares (family, params, source, description) and what it measures (params, MACs at 32×32)."
    if '/' in name:  # another library's model ('timm/resnet18'): measured, nothing declared
        params, macs = _measure(name)
        prefix = name.partition('/')[0]
        return dict(name=name, family=prefix, declared_params=None, params=params, macs=macs, source=prefix,
                    description='')
    entry = _entry(name)
    params, macs = _measure(name)
    return dict(name=name, family=entry.family, declared_params=entry.params, params=params, macs=macs,
                source=entry.source, description=entry.description)


def models_table(pattern: str | None = None) -> list[dict[str, Any]]:
    "One row per registered model (name, family, params, macs, source, fits_5m) for the CLI's table."
    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        rows.append(dict(name=name, family=info['family'], params=info['params'], macs=info['macs'],
                         source=info['source'], fits_5m=info['params'] <= PARAM_BUDGET))
    return rows

"""The Recipe: one reproducible run as a frozen, typed, validated object; loaded from a file, overridden from the CLI,
hashed for the run folder. Unlike nanoGPT's exec'd configs, an unknown or mistyped key fails before any work.

A Recipe is a light value: this module imports neither torch nor timm and builds no model. What only a built model can
tell (an unknown model, an option its builder does not take) is checked when a run starts (`training.check_recipe`).

The hash rule. `recipe_hash` names the results a recipe produces: sha256 of the sorted JSON of every field except the
W&B settings. A change that alters what a shipped recipe computes must change its hash, and one that does not must
not; so the hash may change only when (a) a field of a shipped recipe changes value, (b) a field is added, renamed or
removed, or its default changes (every recipe's hash moves: say so in the commit), or (c) the JSON encoding changes.
tests/test_recipes_golden.py pins each shipped recipe's hash: update its table in the same commit, and say why."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import runpy
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from .data_engines import ENGINES, check_engine_options
from .errors import ConfigError, close_matches

LR_SUGGESTIONS = ('valley', 'slide', 'minimum', 'steep')
# The schedules a `warmup` goes before: one_cycle and triangular rise from lr/div over pct_start by themselves, and
# flat_cos has no warm-up (lr_schedule in callback/schedule.py).
WARMUP_SCHEDULES = ('cosine', 'step', 'linear_decay')
# torch.compile's modes besides its default (compile=True); 'reduce-overhead' replays the launches as CUDA graphs
COMPILE_MODES = ('reduce-overhead', 'max-autotune')


def fld(default, help: str = '', choices=None, lo=None, hi=None, lo_open=False, hi_open=False):
    "A recipe field with its help, allowed values and range, all checked by `validate`."
    kw = dict(default_factory=default) if callable(default) else dict(default=default)
    return field(**kw, metadata=dict(help=help, choices=choices, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open))


@dataclass(frozen=True)
class DataConfig:
    "Where the images come from and how batches are made."
    source: str | None = fld(None, 'folder, archive or torchvision pickles; default $CIFAR_FAST_DATA, then download')
    engine: str = fld('fast', "'fast' (device-resident tensors) or 'datablock' (fastai DataBlock)", ENGINES)
    batch_size: int = fld(512, 'training batch size (the global batch when distributed)', lo=1)
    val_batch_size: int | None = fld(None, 'validation batch size; default 2 × batch_size', lo=1)
    train_size: int | None = fld(None, 'stratified deterministic training subset (images)', lo=1)
    valid_size: int | None = fld(None, 'stratified deterministic test subset (images)', lo=1)
    translate: int = fld(4, 'pad-and-random-crop: max shift in pixels (0 = off)', lo=0, hi=16)
    pad_mode: str = fld('reflect', 'padding for the crop', ('reflect', 'zeros'))
    flip: bool = fld(True, 'random horizontal flip')
    alt_flip: bool = fld(False, "airbench's alternating flip (fast engine)")
    cutout: int = fld(0, 'cutout square side in pixels (0 = off)', lo=0, hi=32)
    policy: str | None = fld(None, "'trivial' (TrivialAugmentWide) or 'auto' (AutoAugment, CIFAR-10 policy), after "
                             "crop and flip: batched on the device (fast engine) or torchvision per PIL image "
                             "(datablock)", ('trivial', 'auto'))
    num_workers: int | None = fld(None, 'decode processes (first decode) and DataBlock workers', lo=0)
    skip_bad: bool = fld(False, 'skip unreadable or non-32×32 files instead of failing')


@dataclass(frozen=True)
class WandbConfig:
    "Weights & Biases logging (see cifar_fast.callback.wandb)."
    enabled: bool = fld(False, 'log this run to W&B')
    project: str = fld('cifar_fast', 'W&B project')
    entity: str | None = fld(None, 'W&B entity (team or user)')
    name: str | None = fld(None, 'run name; default <recipe>-<model>-s<seed>')
    tags: tuple = fld(tuple, 'extra tags (recipe, model and seed are always added)')
    mode: str = fld('auto', "'auto' (online when logged in, else offline), 'online', 'offline' or 'disabled'",
                    ('auto', 'online', 'offline', 'disabled'))
    log_model: bool = fld(True, 'upload best weights and export.pkl as a model artifact')
    n_top_losses: int = fld(16, 'images in the top-losses table', lo=0)


@dataclass(frozen=True)
class SpeedConfig:
    "airbench's training techniques (cifar_fast.callback.speed), each off by default."
    whiten: bool = fld(False, "initialise the model's 2×2 whitening stem from training patches, weights frozen "
                       "(fastnet)")
    whiten_bias_epochs: int = fld(3, 'epochs during which the whitening bias trains', lo=0)
    bias_lr_scale: float = fld(1.0, 'lr multiplier for BatchNorm biases (their weight decay divided by the same)', lo=0,
                               lo_open=True)
    decoupled: bool = fld(False, 'lr and wd in airbench units: per 1024 examples, decoupled from momentum and '
                          'batch size')
    loss_reduction: str = fld('mean', "'mean' or 'sum' over the batch (sum: lr per example)", ('mean', 'sum'))
    lookahead: bool = fld(False, 'lookahead-style weight averaging (airbench)')
    lookahead_start: int = fld(3, 'first epoch of weight averaging', lo=0)
    lookahead_every: int = fld(5, 'steps between averaging updates', lo=1)
    low_res: int = fld(0, 'progressive resizing: the side in pixels of the training images in the first '
                       'low_res_epochs epochs, the rest at full size (cost ∝ pixels); 0 = off', lo=0)
    low_res_epochs: int = fld(0, 'epochs trained at low_res pixels', lo=0)
    ema: float = fld(0.0, "decay of an exponential moving average of the weights (timm's ModelEmaV3), which "
                     "validation, the final evaluation and the export use; 0 = off", lo=0, hi=1, hi_open=True)
    ema_warmup: bool = fld(True, "timm's decay warm-up, min(ema, 1 − (1 + step)^(−2/3)): early on the average "
                           "follows the weights")
    sync_every: int = fld(1, 'read the loss back to the host every N batches (1 = fastai default; >1 for small nets '
                          'on GPU)', lo=1)
    muon: bool = fld(False, 'torch.optim.Muon for the conv filters (4-D weights), Nesterov SGD for the rest '
                     '(airbench94_muon)')
    muon_lr: float = fld(0.24, "peak lr of the filters under Muon, scheduled like `lr`; not converted by `decoupled`: "
                         "Muon's step size does not depend on batch size or loss scale", lo=0, lo_open=True)
    muon_momentum: float = fld(0.6, "Muon's Nesterov momentum (fixed: a one_cycle momentum schedule drives the SGD "
                               "groups only)", lo=0, hi=1, hi_open=True)
    muon_ns_steps: int = fld(3, 'Newton-Schulz iterations that orthogonalise each update (airbench: 3, torch '
                             'default: 5)', lo=1, hi=99)
    muon_normalize: bool = fld(True, 'rescale each filter bank to norm √(out channels) before every step (airbench)')
    muon_wd: float = fld(0.0, "Muon's decoupled weight decay of the filters (w ← w·(1 − lr·wd)); moot when "
                         "normalised", lo=0)


@dataclass(frozen=True)
class Recipe:
    "Everything that defines one training run. Build it in a recipe file; override fields from the command line."
    name: str = fld('recipe', 'recipe name: names the run folder and groups runs')
    model: str = fld('resnet20', "registered model name (see `cifar-fast models`) or 'timm/<name>'")
    model_kwargs: dict = fld(dict, 'keyword arguments for the model builder')
    data: DataConfig = fld(DataConfig, 'data settings')
    epochs: int = fld(10, 'training epochs', lo=1)
    schedule: str = fld('one_cycle', 'learning-rate schedule',
                        ('one_cycle', 'cosine', 'step', 'flat_cos', 'triangular', 'linear_decay'))
    lr: float | str = fld(0.1, f'peak learning rate, or an lr_find suggestion run first: {", ".join(LR_SUGGESTIONS)}',
                          lo=0, lo_open=True)
    div: float = fld(25.0, 'start lr = lr/div (one_cycle, triangular, cosine warm-up)', lo=1)
    final_div: float = fld(1e4, 'final lr = lr/final_div (one_cycle, flat_cos, triangular)', lo=1)
    pct_start: float = fld(0.25, 'fraction of training spent warming up (one_cycle/triangular) or flat (flat_cos)',
                           lo=0, hi=1)
    warmup: float = fld(0.0, 'warm-up before cosine/step/linear_decay, as a fraction of training (or in epochs: '
                        'warmup_epochs); the schedule runs over the rest', lo=0, hi=1, hi_open=True)
    warmup_epochs: float = fld(0.0, 'warm-up before cosine/step/linear_decay, in epochs, instead of warmup; it keeps '
                               'its length when --epochs changes (a run no longer than it is all warm-up)', lo=0)
    warmup_shape: str = fld('linear', "the warm-up's lr: 'linear', lr/div rising to lr (Goyal et al. 2017), or "
                            "'constant', lr/div held (He et al. 2016's ResNet-110: lr/10 for ~400 steps)",
                            ('linear', 'constant'))
    moms: tuple = fld(lambda: (0.95, 0.85, 0.95), 'one_cycle momentum (start, middle, end)')
    milestones: tuple = fld(lambda: (0.5, 0.75), 'step schedule: fractions of training where lr drops')
    gamma: float = fld(0.1, 'step schedule: lr factor at each milestone', lo=0, hi=1, lo_open=True)
    opt: str = fld('sgd', 'optimiser', ('sgd', 'adam', 'adamw'))
    momentum: float = fld(0.9, 'SGD momentum / Adam beta1 when the schedule keeps it constant', lo=0, hi=1,
                          hi_open=True)
    nesterov: bool = fld(True, 'Nesterov momentum (SGD)')
    wd: float = fld(5e-4, 'weight decay (L2 for sgd/adam, decoupled for adamw)', lo=0)
    sam: float = fld(0.0, "sharpness-aware minimisation's radius ρ (SAM, Foret et al. 2021: 0.05 for SGD on "
                     "CIFAR); two forward/backward passes per step; 0 = off", lo=0)
    sam_adaptive: bool = fld(False, 'adaptive SAM (ASAM, Kwon et al. 2021): ρ scaled by each weight (their ρ: 0.5-2)')
    label_smoothing: float = fld(0.0, 'label smoothing of the cross-entropy', lo=0, hi=1, hi_open=True)
    mixup: float = fld(0.0, 'MixUp Beta(α, α); 0 = off', lo=0)
    cutmix: float = fld(0.0, 'CutMix Beta(α, α); 0 = off', lo=0)
    mix_switch: float = fld(0.5, 'with both on: probability a batch uses MixUp rather than CutMix', lo=0, hi=1)
    precision: str = fld('auto', "'auto': bf16 where the device computes it natively, else fp32 (CPU) / fp16 (GPU)",
                         ('auto', 'fp32', 'bf16', 'fp16'))
    channels_last: bool | str = fld('auto', "channels-last memory format; 'auto': on for CPU and CUDA "
                                    "(cifar_fast.machine)", ('auto', True, False))
    sync_bn: bool = fld(False, "SyncBatchNorm across processes when distributed (CUDA only: torch's works on GPU "
                        "modules)")
    compile: bool | str = fld('auto', "torch.compile the model (compile time reported apart); 'auto': off (slower than "
                              "eager on the CPUs measured, not yet measured on a GPU: cifar_fast.machine); "
                              "'reduce-overhead' or 'max-autotune': that torch.compile mode (CUDA graphs on a GPU)",
                              ('auto', True, False) + COMPILE_MODES)
    threads: int = fld(0, "torch threads per process; 0 = auto: torch's setting (OMP_NUM_THREADS), capped at this "
                       "process's share of its CPUs", lo=0)
    tta: int = fld(0, 'test-time augmentation at evaluation: 0 off, 1 flip, 2 flip × ±1-px translate', lo=0, hi=2)
    seed: int = fld(42, 'seed for every RNG: the same recipe and seed give the same run on CPU', lo=0)
    deterministic: bool = fld(False, "cuDNN's deterministic algorithms with its autotuner off: the same run bit for "
                              "bit on one GPU, and slower; off: cuDNN benchmarks and picks the fastest (CPU runs are "
                              "deterministic either way)")
    patience: int | None = fld(None, 'early stopping: epochs without accuracy improvement (None = off)', lo=1)
    checkpoint: str = fld('last', "weights exported and evaluated: 'last' epoch, or the 'best' by test accuracy "
                          "(CIFAR-10 has no separate validation split, so 'best' is optimistic)", ('last', 'best'))
    speed: SpeedConfig = fld(SpeedConfig, 'speed-run techniques (airbench)')
    wandb: WandbConfig = fld(WandbConfig, 'Weights & Biases settings')

    def __post_init__(self): validate(self)

    def replace(self, **changes) -> 'Recipe':
        "A copy with top-level fields changed (validated)."
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict: return to_dict(self)

    @property
    def hash(self) -> str: return recipe_hash(self)


SECTIONS = {'data': DataConfig, 'speed': SpeedConfig, 'wandb': WandbConfig}


# ---- validation -----------------------------------------------------------------------------------------------

@functools.cache
def _hints(cls) -> dict:
    "Field name -> resolved type (annotations are strings under `from __future__ import annotations`)."
    return typing.get_type_hints(cls)


def _type_ok(v, tp) -> bool:
    "Is `v` of annotated type `tp` (str, int, float, bool, X | None, float | str, dict, tuple)?"
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return any(_type_ok(v, a) for a in typing.get_args(tp))
    if tp is type(None): return v is None
    if tp is bool: return isinstance(v, bool)
    if tp is int: return isinstance(v, int) and not isinstance(v, bool)
    if tp is float: return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, tp)


def _type_name(tp) -> str:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return ' | '.join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, '__name__', str(tp))


def validate(obj, prefix: str = ''):
    "Raise `ConfigError` naming the field, the bad value and what is allowed."
    hints = _hints(type(obj))
    for f in fields(obj):
        v, m, key = getattr(obj, f.name), f.metadata, prefix + f.name
        if not _type_ok(v, hints[f.name]):
            raise ConfigError(f"recipe field {key}={v!r}: expected {_type_name(hints[f.name])}, "
                              f"got {type(v).__name__}.")
        if m.get('choices') and v is not None and v not in m['choices']:
            raise ConfigError(f"recipe field {key}={v!r}: allowed values are {', '.join(map(repr, m['choices']))}.")
        if isinstance(v, float) and not math.isfinite(v):  # nan passes every range check below: refuse it here
            raise ConfigError(f"recipe field {key}={v!r}: must be a finite number.")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi = m.get('lo'), m.get('hi')
            if (lo is not None and (v < lo or (m['lo_open'] and v == lo))) or \
               (hi is not None and (v > hi or (m['hi_open'] and v == hi))):
                rng = (f"{'(' if m['lo_open'] else '['}{'-∞' if lo is None else lo}, "
                       f"{'∞' if hi is None else hi}{')' if m['hi_open'] else ']'}")
                raise ConfigError(f"recipe field {key}={v!r} is out of range: allowed {rng}.")
    if isinstance(obj, Recipe): _validate_recipe(obj)


def _validate_recipe(r: Recipe):
    "Each section's fields alone first, then what only a combination of fields can get wrong."
    validate(r.data, 'data.'); validate(r.speed, 'speed.'); validate(r.wandb, 'wandb.')
    if isinstance(r.lr, str) and r.lr not in LR_SUGGESTIONS:
        raise ConfigError(f"recipe field lr={r.lr!r}: a number > 0, or one of {', '.join(LR_SUGGESTIONS)} "
                          f"(run lr_find first and use that suggestion).")
    if len(r.moms) != 3 or not all(_type_ok(m, float) and 0 <= m < 1 for m in r.moms):
        raise ConfigError(f"recipe field moms={r.moms!r}: three momentums in [0, 1), e.g. (0.95, 0.85, 0.95).")
    if not all(_type_ok(m, float) and 0 < m < 1 for m in r.milestones) or list(r.milestones) != sorted(r.milestones):
        raise ConfigError(f"recipe field milestones={r.milestones!r}: increasing fractions in (0, 1), "
                          f"e.g. (0.5, 0.75).")
    if r.warmup and r.warmup_epochs:
        raise ConfigError(f"recipe fields warmup={r.warmup!r} and warmup_epochs={r.warmup_epochs!r}: give the "
                          f"warm-up's length once, as a fraction of training (warmup) or in epochs (warmup_epochs).")
    for key in ('warmup', 'warmup_epochs'):
        if getattr(r, key) and r.schedule not in WARMUP_SCHEDULES:
            own = ('it rises from lr/div over pct_start by itself' if r.schedule in ('one_cycle', 'triangular')
                   else 'it has no warm-up')
            raise ConfigError(f"recipe field {key}={getattr(r, key)!r} applies to schedule "
                              f"{', '.join(WARMUP_SCHEDULES)}, not schedule={r.schedule!r} ({own}): set {key}=0 or "
                              f"choose one of those.")
    if bool(r.speed.low_res) != bool(r.speed.low_res_epochs):
        raise ConfigError(f"recipe fields speed.low_res={r.speed.low_res!r} and speed.low_res_epochs="
                          f"{r.speed.low_res_epochs!r}: progressive resizing needs both (e.g. low_res=24, "
                          f"low_res_epochs=2), or both 0 for off.")
    if r.speed.low_res and not 8 <= r.speed.low_res < 32:
        raise ConfigError(f"recipe field speed.low_res={r.speed.low_res!r}: a side in pixels from 8 to 31 (CIFAR "
                          f"images are 32), or 0 for off.")
    if r.warmup_shape != 'linear' and not (r.warmup or r.warmup_epochs):
        raise ConfigError(f"recipe field warmup_shape={r.warmup_shape!r} needs a warm-up: set warmup_epochs (e.g. 1) "
                          f"or warmup (a fraction of training), or warmup_shape='linear' (the default) for none.")
    if not r.name or any(c in r.name for c in '/\\ '):
        raise ConfigError(f"recipe field name={r.name!r}: a non-empty name without spaces or slashes "
                          f"(it names the run folder).")
    check_engine_options(r.data.engine, r.data.alt_flip, field='data.')
    if not all(isinstance(t, str) for t in r.wandb.tags):
        raise ConfigError(f"recipe field wandb.tags={r.wandb.tags!r}: a tuple of strings.")
    if r.speed.decoupled and (r.opt != 'sgd' or isinstance(r.lr, str)):
        raise ConfigError("recipe field speed.decoupled=True needs opt='sgd' and a numeric lr (airbench's units).")
    if r.sam and r.speed.muon:
        raise ConfigError(f"recipe field sam={r.sam!r} with speed.muon=True: SAM wraps one torch optimiser and "
                          f"Muon's split is two; turn one of them off.")
    if r.sam_adaptive and not r.sam:
        raise ConfigError("recipe field sam_adaptive=True needs a radius: set sam (e.g. --sam 1.0 for ASAM).")
    if r.speed.muon and r.opt != 'sgd':
        raise ConfigError(f"recipe field speed.muon=True trains the filters with Muon and the rest with SGD: "
                          f"set opt='sgd' (got opt={r.opt!r}).")


# ---- serialisation and hashing --------------------------------------------------------------------------------

def to_dict(obj) -> dict:
    "Plain, JSON-ready dict (tuples as lists, sections nested)."
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def from_dict(d: dict, cls=Recipe, prefix: str = ''):
    "Rebuild a (validated) Recipe from `to_dict` output, e.g. a run folder's recipe.json."
    d = dict(d)
    names = {f.name: f for f in fields(cls)}
    unknown = [k for k in d if k not in names]
    if unknown: raise ConfigError(f"unknown recipe field {prefix}{unknown[0]}.{close_matches(unknown[0], names)}")
    for k, v in list(d.items()):
        if k in SECTIONS and cls is Recipe: d[k] = from_dict(v, SECTIONS[k], f'{k}.')
        elif isinstance(v, list): d[k] = tuple(v)
    if cls is not Recipe: obj = cls(**d); validate(obj, prefix); return obj
    return cls(**d)


def recipe_hash(r: Recipe) -> str:
    "sha256 of the sorted JSON of every field that can change results (W&B settings excluded), shortened."
    return dict_hash(to_dict(r))


def dict_hash(d: dict) -> str:
    "`recipe_hash` of a recipe as a dict (a run's recipe.json), as written: fields added since are not filled in."
    d = {k: v for k, v in d.items() if k != 'wandb'}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def flat_fields(d: dict, prefix: str = '') -> dict:
    "{'data': {'batch_size': 32}} -> {'data.batch_size': 32}: the dotted names the command line uses."
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in SECTIONS: out.update(flat_fields(v, f'{k}.'))
        else: out[prefix + k] = v
    return out


def recipe_changes(before: dict, after: dict) -> list[str]:
    "'field: old -> new' for each result-changing field (W&B settings aside) whose value differs between two dicts."
    a, b = ({k: v for k, v in flat_fields(d).items() if not k.startswith('wandb.')} for d in (before, after))
    missing = object()
    return [f'{k}: {a.get(k, "(absent)")!r} -> {b.get(k, "(absent)")!r}' for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]


# ---- overrides from the command line --------------------------------------------------------------------------

def field_paths(cls=Recipe, prefix: str = '') -> dict:
    "Every overridable dotted name -> (dataclass field, resolved type)."
    out = {}
    for f in fields(cls):
        if f.name in SECTIONS and cls is Recipe: out.update(field_paths(SECTIONS[f.name], f'{f.name}.'))
        else: out[prefix + f.name] = (f, _hints(cls)[f.name])
    return out


def parse_value(key: str, text: str, tp):
    "Parse `text` for a field of type `tp`; 'none'/'null' is None, booleans accept true/false/1/0/yes/no."
    args = typing.get_args(tp) if (isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union) else (tp,)
    low = text.strip().lower()
    if type(None) in args and low in ('none', 'null'): return None
    for a in args:
        if a is bool and low in ('true', 'false', '1', '0', 'yes', 'no'): return low in ('true', '1', 'yes')
        if a is int:
            try: return int(text)
            except ValueError: pass
        if a is float:
            try: return float(text)
            except ValueError: pass
        if a is dict:
            try: return json.loads(text)
            except json.JSONDecodeError: continue
        if a is tuple:  # '0.9,0.8,0.9' or 'a,b': each element a JSON literal or else a string
            inner = text.strip().strip('()[]')
            return tuple(_literal(t.strip()) for t in inner.split(',') if t.strip())
    if str in args: return text
    raise ConfigError(f"--{key} {text!r}: expected {' or '.join(_type_name(a) for a in args)}.")


def parse_overrides(tokens: list[str]) -> dict:
    """`--key value`, `--key=value` (W&B agents pass this form) and bare boolean `--key`, with dotted nested keys
    (`--data.batch_size 256`) and model kwargs (`--model_kwargs.dropout 0.3`), to {dotted key: parsed value}."""
    paths, out, i = field_paths(), {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith('--'):
            raise ConfigError(f"unexpected argument {tok!r}: overrides look like --field value.")
        key, eq, val = tok[2:].partition('=')
        key = key.replace('-', '_')
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith('--'): val, i = tokens[i + 1], i + 1
            else: val = 'true'
        i += 1
        if key.startswith('model_kwargs.'):
            out[key] = _literal(val); continue
        if key not in paths:
            raise ConfigError(f"unknown recipe field --{key}.{close_matches(key, list(paths))} "
                              f"See `cifar-fast train --help-fields`.")
        out[key] = parse_value(key, val, paths[key][1])
    return out


def _literal(text: str):
    "A model keyword's value: JSON (numbers, booleans, lists, null) or else the string itself."
    low = text.lower()
    if low in ('true', 'false'): return low == 'true'
    if low in ('none', 'null'): return None
    try: return json.loads(text)
    except json.JSONDecodeError: return text


def apply_overrides(r: Recipe, overrides: dict) -> Recipe:
    "A new validated Recipe with dotted overrides applied."
    top, sec, mkw = {}, {}, dict(r.model_kwargs)
    for key, v in overrides.items():
        head, _, rest = key.partition('.')
        if head == 'model_kwargs': mkw[rest] = v
        elif rest: sec.setdefault(head, {})[rest] = v
        else: top[key] = v
    for head, changes in sec.items(): top[head] = dataclasses.replace(getattr(r, head), **changes)
    if mkw != r.model_kwargs: top['model_kwargs'] = mkw
    return dataclasses.replace(r, **top)


# ---- recipe files ---------------------------------------------------------------------------------------------

def load_recipe(path: str | Path) -> Recipe:
    "The `recipe` defined by a recipe file, or a `ConfigError` naming the file and what is wrong."
    p = Path(path)
    try: is_file = p.is_file()
    except OSError as e:  # a folder on the way that this user may not enter: not a file to write, one to read
        raise ConfigError(f"recipe file {p} cannot be read ({e.strerror}): check the permissions of the file and of "
                          f"the folders above it, or copy the recipe somewhere you can read.") from None
    if not is_file:
        hint = ''
        cands = sorted(Path('recipes').glob('*.py')) if Path('recipes').is_dir() else []
        if cands: hint = (close_matches(p.stem, [c.stem for c in cands])
                          or f" Shipped recipes: {', '.join(c.stem for c in cands)}.")
        raise ConfigError(f"recipe file {p} does not exist.{hint}")
    if p.suffix != '.py': raise ConfigError(f"recipe file {p} is not a Python file (.py).")
    try: ns = runpy.run_path(str(p), run_name='__cifar_fast_recipe__')
    except SyntaxError as e:
        raise ConfigError(f"recipe file {p} has a syntax error at line {e.lineno}: {e.msg}.") from None
    except ConfigError as e:
        raise ConfigError(f"recipe file {p}: {e}") from None
    except Exception as e:
        raise ConfigError(f"recipe file {p} failed to run ({type(e).__name__}: {e}).") from e
    r = ns.get('recipe')
    if not isinstance(r, Recipe):
        raise ConfigError(f"recipe file {p} defines no `recipe = Recipe(...)` "
                          f"({'found ' + type(r).__name__ if r is not None else 'no `recipe` variable'}).")
    return r


def describe_fields() -> list[tuple[str, str, str, str]]:
    "(dotted name, type, default, help) for every overridable field, for `--help-fields`."
    rows = []
    for key, (f, tp) in field_paths().items():
        d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((key, _type_name(tp).replace('NoneType', 'None'), repr(d), f.metadata.get('help', '')))
    return rows

"""What each data engine accepts: the one home of these rules, applied by both the Recipe's validation (before any
work) and `data.cifar_dls` (for callers without a Recipe). A module of its own, outside data/, because importing
anything in data/ imports torch and fastai (its __init__), and building a Recipe must not."""
from __future__ import annotations

from .errors import ConfigError

ENGINES = ('fast', 'datablock')  # device-resident tensors (data/fast.py); fastai's DataBlock of files (datablock.py)


def check_engine_options(engine: str, policy: str | None = None, alt_flip: bool = False, field: str = '') -> None:
    """Refuse an unknown engine, a per-image policy off the DataBlock engine, and airbench's alternating flip off the
    fast engine. `field`: 'data.' when the values are a recipe's (messages then name `recipe field data.policy`), ''
    for `cifar_dls`'s arguments."""
    say = f'recipe field {field}' if field else ''
    if engine not in ENGINES: raise ConfigError(f"{say}engine must be one of {ENGINES}, got {engine!r}.")
    if policy is not None and engine != 'datablock':
        raise ConfigError(f"{say}policy={policy!r} needs {field}engine='datablock' (TrivialAugment/AutoAugment work "
                          f"per PIL image); drop the policy to use the fast engine.")
    if alt_flip and engine != 'fast':
        raise ConfigError(f"{say}alt_flip=True needs {field}engine='fast' (airbench's alternating flip exists in the "
                          f"fast engine only).")

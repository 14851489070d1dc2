"""What each data engine accepts: the one home of these rules, applied by both the Recipe's validation (before any
work) and `data.cifar_dls` (for callers without a Recipe). A module of its own, outside data/, because importing
anything in data/ imports torch and fastai (its __init__), and building a Recipe must not."""
from __future__ import annotations

from .errors import ConfigError

ENGINES = ('fast', 'datablock')  # device-resident tensors (data/fast.py); fastai's DataBlock of files (datablock.py)


def check_engine_options(engine: str, alt_flip: bool = False, field: str = '') -> None:
    """Refuse an unknown engine and airbench's alternating flip off the fast engine (a per-image policy, `policy`, runs
    on both). `field`: 'data.' when the values are a recipe's (messages then name `recipe field data.alt_flip`), ''
    for `cifar_dls`'s arguments."""
    say = f'recipe field {field}' if field else ''
    if engine not in ENGINES: raise ConfigError(f"{say}engine must be one of {ENGINES}, got {engine!r}.")
    if alt_flip and engine != 'fast':
        raise ConfigError(f"{say}alt_flip=True needs {field}engine='fast' (airbench's alternating flip exists in the "
                          f"fast engine only).")

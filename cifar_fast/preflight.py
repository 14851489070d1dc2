"""What a Recipe cannot check on its own, since it builds nothing: the model and its options, the launch (one
process or several), the device. Checked before a run folder exists, so a refusal writes nothing."""
from __future__ import annotations

from .callback.sam import check_sam_precision
from .callback.speed import check_whitening_stem
from .distributed import DistInfo
from .errors import ConfigError
from .machine import resolve_precision
from .models import validate_model
from .recipe import Recipe


def check_launch(r: Recipe, info: DistInfo, device) -> None:
    "What a Recipe cannot check on its own, since it builds nothing: the model and its options; the launch; the device."
    model = validate_model(r.model, r.model_kwargs)  # built on the meta device: its structure, no weights
    if r.sam:
        check_sam_precision(resolve_precision(r.precision, device) == 'fp16',
                            f' (sam={r.sam}, precision={r.precision!r} on {device})')
    if r.speed.whiten: check_whitening_stem(model, r.model)
    if r.data.train_size is not None and r.data.train_size < r.data.batch_size:
        raise ConfigError(f"data.train_size={r.data.train_size} is smaller than one batch (data.batch_size="
                          f"{r.data.batch_size}): the last partial batch is dropped, so nothing would train. Use "
                          f"--data.batch_size {r.data.train_size} or less, or more training images.")
    if info.distributed and isinstance(r.lr, str):
        raise ConfigError(f"lr={r.lr!r} runs lr_find, which runs in one process: run `cifar-fast lr-find RECIPE` "
                          f"first, then train with --lr <number>.")
    if info.distributed and r.data.batch_size % info.world_size:
        raise ConfigError(f"data.batch_size={r.data.batch_size} is the global batch: it must divide evenly over the "
                          f"{info.world_size} processes.")

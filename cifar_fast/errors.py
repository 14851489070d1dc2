"""Errors cifar_fast raises on bad input: each message names the culprit and how to fix it."""
from __future__ import annotations

import difflib


class CifarFastError(Exception):
    "Base of every error caused by user input; the CLI prints these without a traceback."


class DataError(CifarFastError, ValueError):
    "A data source is missing, unreadable or not CIFAR-shaped."


class ConfigError(CifarFastError, ValueError):
    "A recipe, model name, option or command-line value is not valid."


class TrainingDiverged(CifarFastError):
    "The training or validation loss became NaN or infinite."


class DistributedJobFailed(CifarFastError):
    "A peer process of a distributed job died or stopped answering."


def close_matches(name: str, choices, n: int = 5) -> str:
    "A ' Did you mean: a, b?' suffix listing the closest of `choices` to `name`, or ''."
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ''

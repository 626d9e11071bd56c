"""Range checks of settings, each raising :class:`~constrained_vae.errors.ConfigError` with one line
that names the flag (``epsilon`` → ``--epsilon``).

A number becomes a float32 tensor (a budget, a rate, a multiplier) or an int64 one (a step count, a
seed), so no setting may lie beyond those types' ranges: :data:`FLOAT32_MAX`, :data:`INT64_MAX`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from constrained_vae.errors import ConfigError

FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # about 3.4e38
INT64_MAX = 2**63 - 1


def flag(name: str) -> str:
    """The command-line flag of a setting: ``dual_lr`` → ``--dual-lr``."""
    return "--" + name.replace("_", "-")


def check_finite(
    name: str, value: Any, *, minimum: float = 0.0, strict: bool = False, maximum: float = FLOAT32_MAX
) -> None:
    """A finite number ≥ ``minimum`` (> with ``strict``) and ≤ ``maximum`` (by default float32's largest)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise ConfigError(f"{flag(name)} must be a finite number, got {value}")
    if value < minimum or (strict and value == minimum):
        relation = "positive" if strict else "non-negative"
        raise ConfigError(f"{flag(name)} must be {relation}, got {value}")
    if value > maximum:
        why = " (the largest float32, the type of the tensors it becomes)" if maximum == FLOAT32_MAX else ""
        raise ConfigError(f"{flag(name)} must be at most {maximum:.4g}{why}, got {value:g}")


def check_positive(name: str, value: Any) -> None:
    """A finite number > 0, within float32."""
    check_finite(name, value, strict=True)


def check_non_negative(name: str, value: Any) -> None:
    """A finite number ≥ 0, within float32."""
    check_finite(name, value)


def check_positive_int(name: str, value: Any, *, maximum: int = INT64_MAX, reason: str = "the largest int64") -> None:
    """An integer from 1 to ``maximum`` (by default int64's largest, as torch stores step counts); ``reason``
    says why the maximum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{flag(name)} must be a positive integer, got {value}")
    if value > maximum:
        raise ConfigError(f"{flag(name)} must be at most {maximum} ({reason}), got {value}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """One of ``choices``."""
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")

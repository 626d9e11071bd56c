"""Range checks of settings, each raising :class:`~constrained_vae.errors.ConfigError` with one line
that names the flag (``epsilon`` → ``--epsilon``)."""

from __future__ import annotations

import math
from typing import Any

from constrained_vae.errors import ConfigError


def flag(name: str) -> str:
    """The command-line flag of a setting: ``dual_lr`` → ``--dual-lr``."""
    return "--" + name.replace("_", "-")


def check_finite(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False) -> None:
    """A finite number ≥ ``minimum`` (> with ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise ConfigError(f"{flag(name)} must be a finite number, got {value}")
    if value < minimum or (strict and value == minimum):
        relation = "positive" if strict else "non-negative"
        raise ConfigError(f"{flag(name)} must be {relation}, got {value}")


def check_positive(name: str, value: Any) -> None:
    """A finite number > 0."""
    check_finite(name, value, strict=True)


def check_non_negative(name: str, value: Any) -> None:
    """A finite number ≥ 0."""
    check_finite(name, value)


def check_positive_int(name: str, value: Any) -> None:
    """An integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """One of ``choices``."""
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")

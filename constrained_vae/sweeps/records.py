"""The JSON records of a sweep and a study, read with one clear error when they are not what they claim."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from constrained_vae.errors import SweepError


def read_json_record(path: Path, what: str, fault: Callable[[Any], str]) -> dict[str, Any] | None:
    """The record in the JSON file ``path``, or None when there is none.

    ``fault(record)`` says what is wrong with it ("" when nothing is; it may raise KeyError or TypeError
    for a missing or mistyped part); a bad record raises :class:`SweepError` ``PATH is not a WHAT (…)``.
    """
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        problem = fault(record)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise SweepError(f"{path} is not a {what} ({type(error).__name__}: {error})") from None
    if problem:
        raise SweepError(f"{path} is not a {what} ({problem})")
    return record

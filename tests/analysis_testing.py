"""Helpers for the tests of the analysis scripts."""

from __future__ import annotations

import runpy
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def script(capsys, name: str, *args) -> subprocess.CompletedProcess:
    """Run ``analysis/name``'s ``main`` in this process (no interpreter start-up to wait for)."""
    capsys.readouterr()
    argv = list(map(str, args))
    status = runpy.run_path(str(ROOT / "analysis" / name))["main"](argv)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([name, *argv], status, out, err)

"""The run folder: the one place that reads and writes it.

    RUN/config.json    every setting, including seed and versions
    RUN/metrics.csv    one row per logged step (see METRICS_COLUMNS)
    RUN/summary.json   final and tail-averaged figures
    RUN/checkpoint.pt  model, optimizers, multiplier, RNG states, step

Files are written atomically (a temporary file, then ``os.replace``), so an
interrupted write never leaves a half-written checkpoint or summary.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
import platform
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from constrained_vae.config import RunConfig
from constrained_vae.errors import CheckpointError, RunFolderError
from constrained_vae.files import atomic_write_bytes, atomic_write_json

CONFIG = "config.json"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
SCORES = "metrics.json"  # disentanglement scores, written by constrained_vae.evaluation
METRICS_COLUMNS = ("step", "nll", "kl", "loss", "multiplier", "epsilon", "seconds")
TAIL_FRACTION = 0.1  # summary figures average the last 10% of steps
CONSTRAINT_TOLERANCE = 0.05  # constraint met when tail KL ≤ ε·(1 + 5%)


def versions() -> dict[str, str]:
    """Versions of what determines a run's numbers."""
    import cooper

    from constrained_vae import __version__

    return {
        "constrained_vae": __version__,
        "torch": torch.__version__,
        "cooper": getattr(cooper, "__version__", "unknown"),
        "python": platform.python_version(),
    }


def holds_run(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in (CONFIG, CHECKPOINT, METRICS))


def create(run_dir: str | Path, config: RunConfig) -> Path:
    """Make a new run folder holding ``config.json``; refuse one that already holds a run."""
    run_dir = Path(run_dir)
    if holds_run(run_dir):
        raise RunFolderError(f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, or another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} exists and is not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG, config.to_dict() | {"versions": versions()})
    with open(run_dir / METRICS, "w", newline="") as handle:
        csv.writer(handle).writerow(METRICS_COLUMNS)
    return run_dir


def read_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise RunFolderError(f"{run_dir} is not a run folder: it has no {CONFIG}")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is not valid JSON: {error}") from None
    return RunConfig.from_dict(values)


def update_config(run_dir: Path, config: RunConfig) -> None:
    """Rewrite ``config.json`` (a resumed run may change its steps or device)."""
    atomic_write_json(Path(run_dir) / CONFIG, config.to_dict() | {"versions": versions()})


def append_metrics(run_dir: Path, rows: Iterable[dict[str, float]]) -> None:
    with open(Path(run_dir) / METRICS, "a", newline="") as handle:
        writer = csv.DictWriter(handle, METRICS_COLUMNS)
        for row in rows:
            writer.writerow(row)
        handle.flush()


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``metrics.csv`` as dicts of floats (``epsilon`` is NaN in fixed mode)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        raise RunFolderError(f"{run_dir} has no {METRICS}")
    with open(path, newline="") as handle:
        return [{k: (float(v) if v != "" else math.nan) for k, v in row.items()} for row in csv.DictReader(handle)]


def truncate_metrics(run_dir: Path, last_step: int, log_every: int, final_step: int) -> None:
    """Prepare ``metrics.csv`` for resuming from the checkpoint at ``last_step`` to ``final_step``.

    Drops rows logged after the checkpoint, and an end-of-run row at ``last_step``
    that is off the ``log_every`` grid when the run goes on past it (its window
    continues in the resumed run), so that the resumed run writes the rows an
    uninterrupted one would have. A run already at ``final_step`` keeps its end row.
    """
    rows = [row for row in read_metrics(run_dir) if row["step"] <= last_step]
    if rows and rows[-1]["step"] == last_step and last_step % log_every != 0 and last_step < final_step:
        rows.pop()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(METRICS_COLUMNS)
    for row in rows:
        writer.writerow([_format(row[c]) for c in METRICS_COLUMNS])
    atomic_write_bytes(Path(run_dir) / METRICS, buffer.getvalue().encode())


def _format(value: float) -> str:
    if math.isnan(value):
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, buffer.getvalue())


def load_checkpoint(run_dir: str | Path, config: RunConfig) -> dict[str, Any]:
    """Read ``checkpoint.pt``; it must be readable and belong to ``config``."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"{run_dir} has no {CHECKPOINT} to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt or not a checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or "numerics" not in state or "step" not in state:
        raise CheckpointError(f"{path} is not a constrained-vae checkpoint")
    expected = config.numerics()
    if state["numerics"] != expected:
        keys = set(expected) | set(state["numerics"])
        differing = sorted(k for k in keys if state["numerics"].get(k) != expected.get(k))
        raise CheckpointError(f"{path} belongs to another config (differs in: {', '.join(differing)})")
    return state


def summarise(config: RunConfig, rows: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """Final and tail-averaged figures; the tail is the rows of the last 10% of steps."""
    if not rows:
        raise RunFolderError("no metrics were logged; cannot summarise the run")
    steps = int(rows[-1]["step"])
    tail_start = steps - max(1, math.ceil(TAIL_FRACTION * steps))
    tail = [row for row in rows if row["step"] > tail_start] or rows[-1:]

    def mean(key: str) -> float:
        return sum(row[key] for row in tail) / len(tail)

    kl, nll, multiplier = mean("kl"), mean("nll"), mean("multiplier")
    multiplier_std = math.sqrt(sum((row["multiplier"] - multiplier) ** 2 for row in tail) / len(tail))
    satisfied = None
    if config.epsilon is not None:
        satisfied = bool(kl <= config.epsilon * (1 + CONSTRAINT_TOLERANCE))
    return {
        "mode": config.mode,
        "epsilon": config.epsilon,
        "beta": config.beta,
        "dataset": config.dataset,
        "seed": config.seed,
        "steps": steps,
        "seconds": seconds,
        "tail_steps": steps - tail_start,
        "kl": kl,
        "nll": nll,
        "elbo": -(nll + kl),
        "multiplier": multiplier,
        "multiplier_std": multiplier_std,
        "constraint_satisfied": satisfied,
        "constraint_tolerance": CONSTRAINT_TOLERANCE if config.epsilon is not None else None,
        "final": {key: rows[-1][key] for key in ("nll", "kl", "loss", "multiplier")},
        "units": "nats per sample",
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / SUMMARY, summary)


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        raise RunFolderError(f"{run_dir} has no {SUMMARY}: the run has not finished")
    return json.loads(path.read_text())


def write_scores(run_dir: str | Path, scores: dict[str, Any]) -> Path:
    """Write ``RUN/metrics.json`` (the disentanglement scores of :mod:`constrained_vae.evaluation`)."""
    path = Path(run_dir) / SCORES
    atomic_write_json(path, scores)
    return path


def read_scores(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN/metrics.json``, or None when the run has not been evaluated (or the file is unreadable)."""
    try:
        values = json.loads((Path(run_dir) / SCORES).read_text())
    except (OSError, ValueError):
        return None
    return values if isinstance(values, dict) else None

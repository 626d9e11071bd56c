"""The run folder: the one place that reads and writes it.

    RUN/config.json    every setting, including seed, and provenance (CONFIG_FILE): ``versions`` (the
                       package's, torch's, cooper's, Python's, and the git commit it ran from, with
                       ``git_dirty``; both null outside a checkout) as created, and ``resumes``: one
                       entry per resume, the step it resumed from and the versions it resumed with
    RUN/metrics.csv    the training log: one row per logged step (TRAINING_LOG, TRAINING_LOG_COLUMNS)
    RUN/summary.json   final and tail-averaged figures (SUMMARY_FILE, :mod:`constrained_vae.run.summary`)
    RUN/checkpoint.pt  model, optimizers, multiplier, RNG states, step (CHECKPOINT_FILE)
    RUN/metrics.json   disentanglement scores, once evaluated (SCORES_FILE, :mod:`constrained_vae.evaluation`)
    RUN/tensorboard/   TensorBoard event files, for runs with ``tensorboard`` on (TENSORBOARD_DIR,
                       written by :mod:`constrained_vae.run.tensorboard`)
    RUN/dci_sample.npz the codes DCI scores, where they were drawn on another machine (DCI_SAMPLE_FILE)

    RUN/.lock          held by the process writing the folder (see :mod:`constrained_vae.run.locks`)

The training log's ``epsilon`` column is the KL budget in force at that row: ε, or the annealed
objectives' C(t) (capacity) and set point (controlvae); empty without one (fixed β, GECO).

Files are written atomically (a temporary file, then ``os.replace``), so an
interrupted write never leaves a half-written checkpoint or summary. ``metrics.csv``
is append-only: a kill or a full disk can leave a torn last row, which readers drop.
Checkpoints are data, not code: they are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import platform
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from constrained_vae.errors import CheckpointError, RunFolderError, UserInputError
from constrained_vae.files import atomic_write_bytes, atomic_write_json
from constrained_vae.run.migrations import upgrade_checkpoint, upgrade_settings
from constrained_vae.run.settings import RunConfig

CONFIG_FILE = "config.json"
TRAINING_LOG = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
SCORES_FILE = "metrics.json"
TENSORBOARD_DIR = "tensorboard"
TRAINING_LOG_COLUMNS = ("step", "nll", "kl", "loss", "multiplier", "epsilon", "seconds")
# What torch's weights-only unpickler says when a checkpoint refers to code (a class or a function):
# "Unsupported global: GLOBAL mod.Name …" or "Trying to load unsupported GLOBAL mod.name …".
UNSAFE_GLOBAL = re.compile(r"unsupported global:? (?:GLOBAL )?(\S+)", re.I)


def versions() -> dict[str, Any]:
    """Versions of what determines a run's numbers; ``git_commit`` and ``git_dirty`` are None
    outside a git checkout (:func:`~constrained_vae.version.git_revision`)."""
    import cooper

    from constrained_vae.version import __version__, this_revision

    commit, dirty = this_revision()
    return {
        "constrained_vae": __version__,
        "torch": torch.__version__,
        "cooper": getattr(cooper, "__version__", "unknown"),
        "python": platform.python_version(),
        "git_commit": commit,
        "git_dirty": dirty,
    }


RUN_FILES = (CONFIG_FILE, TRAINING_LOG, SUMMARY_FILE, CHECKPOINT_FILE)
RUN_FILE_NAME_MAX = 64  # the longest name written inside a run or sweep folder (a point's folder, a temp file)


def holds_run(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in (CONFIG_FILE, CHECKPOINT_FILE, TRAINING_LOG))


def is_started(run_dir: Path) -> bool:
    """Whether the run has a checkpoint to resume from (it is written at step 0)."""
    return (Path(run_dir) / CHECKPOINT_FILE).exists()


def is_unstarted(run_dir: Path) -> bool:
    """A folder whose run was stopped before its first checkpoint: it holds run files but cannot resume."""
    return holds_run(run_dir) and not is_started(run_dir)


def _name_limits(path: Path) -> tuple[int, int]:
    """The longest file name and path (bytes) of the file system that ``path`` is, or would be, on."""
    existing = next((p for p in path.parents if os.path.isdir(p)), Path("."))  # isdir: False for a name too long
    try:
        return os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 255, 4096


def check_name(path: str | Path, flag: str) -> None:
    """RunFolderError naming ``flag`` when ``path`` has a name longer than its file system takes (checked
    before anything is written, so that a run does not fail at its first file)."""
    path = Path(path)
    name_max, path_max = _name_limits(path.absolute())
    for part in path.parts:
        if len(os.fsencode(part)) > name_max:
            raise RunFolderError(
                f"{flag}: the name {part[:20]}… is {len(os.fsencode(part))} bytes long, more than the {name_max} "
                "a file name may have here"
            )
    if len(os.fsencode(str(path.absolute()))) + RUN_FILE_NAME_MAX > path_max:
        raise RunFolderError(f"{flag}: the path is longer than the {path_max} bytes a path may have here")


def check_writable(run_dir: str | Path) -> None:
    """RunFolderError unless files can be created in ``run_dir`` (a probe file, removed at once): an
    existing run that cannot be written (read-only, immutable) is refused before it is trained."""
    try:
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".write-check.", suffix=".tmp")
    except OSError as error:
        raise RunFolderError(f"cannot write in {run_dir}: {error.strerror or error}") from None
    os.close(fd)
    os.unlink(probe)


def check_new(run_dir: str | Path) -> None:
    """Refuse a folder for a new run when it holds a started run, or is not a folder."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} exists and is not a folder")
    if is_started(run_dir):
        raise RunFolderError(f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, or another --out")


def clear_unstarted(run_dir: Path) -> None:
    """Remove the run files of a run stopped before its first checkpoint (nothing there can be resumed)."""
    if is_started(run_dir):
        raise RunFolderError(f"{run_dir} holds a started run; refusing to clear it")
    discard(run_dir)


def discard(run_dir: Path) -> None:
    """Remove every run file and the TensorBoard log (a new run that could not take its first step leaves
    nothing behind)."""
    for name in RUN_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)
    shutil.rmtree(Path(run_dir) / TENSORBOARD_DIR, ignore_errors=True)


def create(run_dir: str | Path, config: RunConfig) -> Path:
    """Write ``config.json`` and the header of ``metrics.csv`` into a folder that holds no run."""
    run_dir = Path(run_dir)
    if holds_run(run_dir):
        raise RunFolderError(f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, or another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} exists and is not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG_FILE, config.to_dict() | {"versions": versions()})
    atomic_write_bytes(run_dir / TRAINING_LOG, _csv_text([TRAINING_LOG_COLUMNS]).encode())
    return run_dir


def read_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise RunFolderError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        held = json.dumps(values)
        held = held if len(held) <= 40 else held[:39] + "…"
        raise RunFolderError(f"{path} is not a run config: it should hold a JSON object of settings, not {held}")
    try:
        config = RunConfig.from_dict(values)
        config.validate()
    except (UserInputError, TypeError) as error:
        raise RunFolderError(f"{path} is not a valid run config: {error}") from None
    return config


def update_config(run_dir: Path, config: RunConfig, resumed_from: int) -> None:
    """Rewrite ``config.json`` for a run resumed from its checkpoint at step ``resumed_from`` (it may change
    its steps or device): the versions it was created with stay, and this resume's are appended to ``resumes``.
    """
    path = Path(run_dir) / CONFIG_FILE
    recorded = json.loads(path.read_text())  # read_config has read it already
    resumes = recorded.get("resumes") if isinstance(recorded.get("resumes"), list) else []
    resume = {"step": resumed_from, **versions()}
    atomic_write_json(path, config.to_dict() | {"versions": recorded.get("versions"), "resumes": [*resumes, resume]})


def append_metrics(run_dir: Path, rows: Iterable[dict[str, float]]) -> None:
    with open(Path(run_dir) / TRAINING_LOG, "a", newline="") as handle:
        writer = csv.DictWriter(handle, TRAINING_LOG_COLUMNS)
        for row in rows:
            writer.writerow(row)
        handle.flush()


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``metrics.csv`` as dicts of floats (``epsilon`` is NaN in fixed mode).

    A torn last row (no line end, missing fields or a half-written number: what a
    kill or a full disk mid-append leaves) is dropped; a bad row anywhere else is
    corruption and raises :class:`RunFolderError`.
    """
    path = Path(run_dir) / TRAINING_LOG
    if not path.exists():
        raise RunFolderError(f"{run_dir} has no {TRAINING_LOG}")
    text = path.read_bytes().decode(errors="replace")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines.pop()  # torn: the writer never finished the line
    records = list(csv.reader(lines))
    if not records or tuple(records[0]) != TRAINING_LOG_COLUMNS:
        raise RunFolderError(f"{path} is not a metrics log (its header is not {','.join(TRAINING_LOG_COLUMNS)})")
    rows = []
    for number, record in enumerate(records[1:], start=2):
        row = _parse_row(record)
        if row is None:
            if number == len(records):
                break  # a torn last row
            raise RunFolderError(f"{path} is corrupt at line {number}: {','.join(record)!r}")
        rows.append(row)
    return rows


def _parse_row(record: list[str]) -> dict[str, float] | None:
    if len(record) != len(TRAINING_LOG_COLUMNS):
        return None
    try:
        return {k: (float(v) if v != "" else math.nan) for k, v in zip(TRAINING_LOG_COLUMNS, record, strict=True)}
    except ValueError:
        return None


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
    records = [[_format(column, row[column]) for column in TRAINING_LOG_COLUMNS] for row in rows]
    atomic_write_bytes(Path(run_dir) / TRAINING_LOG, _csv_text([TRAINING_LOG_COLUMNS, *records]).encode())


def _csv_text(records: Iterable[Iterable[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(records)
    return buffer.getvalue()


def _format(column: str, value: float) -> str:
    """A value of ``column`` as :func:`append_metrics` wrote it: the step an integer, every other column a
    float as ``str`` writes it (``1.0``, not ``1``), an empty field for NaN; so a resumed run's rows read
    back and rewritten are the bytes an uninterrupted run wrote."""
    if math.isnan(value):
        return ""
    return str(int(value)) if column == "step" else repr(float(value))


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT_FILE, buffer.getvalue())


def load_checkpoint(run_dir: str | Path, config: RunConfig) -> dict[str, Any]:
    """Read ``checkpoint.pt``; it must be readable and belong to ``config``."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        raise CheckpointError(f"{run_dir} has no {CHECKPOINT_FILE} to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = UNSAFE_GLOBAL.search(str(error))
        if found:
            raise CheckpointError(
                f"{path} was refused: it refers to code ({found.group(1)}), not only tensors and plain data, "
                "and loading it could run that code; nothing in it was executed"
            ) from None
        raise CheckpointError(f"{path} is corrupt or not a checkpoint (UnpicklingError)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt or not a checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or "numerics" not in state or "step" not in state:
        raise CheckpointError(f"{path} is not a constrained-vae checkpoint")
    expected, saved = config.numerics(), upgrade_settings(state["numerics"])
    if saved != expected:
        keys = set(expected) | set(saved)
        differing = sorted(k for k in keys if saved.get(k) != expected.get(k))
        raise CheckpointError(f"{path} belongs to another config (differs in: {', '.join(differing)})")
    try:
        return upgrade_checkpoint(state)
    except (KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path} is not a constrained-vae checkpoint (lacks {error})") from None


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / SUMMARY_FILE, summary)


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        raise RunFolderError(f"{run_dir} has no {SUMMARY_FILE}: the run has not finished")
    return json.loads(path.read_text())


def write_scores(run_dir: str | Path, scores: dict[str, Any]) -> Path:
    """Write ``RUN/metrics.json`` (the disentanglement scores of :mod:`constrained_vae.evaluation`)."""
    path = Path(run_dir) / SCORES_FILE
    atomic_write_json(path, scores)
    return path


def read_scores(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN/metrics.json``, or None when the run has not been evaluated (or the file is unreadable)."""
    try:
        values = json.loads((Path(run_dir) / SCORES_FILE).read_text())
    except (OSError, ValueError):
        return None
    return values if isinstance(values, dict) else None


DCI_SAMPLE_FILE = "dci_sample.npz"  # the labelled codes DCI scores, where they were drawn apart from the scoring


def final_weights(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's state without the primal optimizer's per-parameter state (Adam's two moments: twice
    the weights' bytes). It loads for evaluation and figures; a run resumed from it starts those moments
    afresh, so it continues, but not bit for bit."""
    objective = dict(state["objective"])
    optimizer = dict(objective["optimizer"])
    optimizer["primal_optimizer_states"] = [
        {**saved, "state": {}} for saved in optimizer.get("primal_optimizer_states", [])
    ]
    return {**state, "objective": {**objective, "optimizer": optimizer}}


def copy_final_weights(run_dir: str | Path, destination: str | Path) -> None:
    """Write the run's checkpoint as :func:`final_weights` to ``destination`` (a file path)."""
    config = read_config(run_dir)
    buffer = io.BytesIO()
    torch.save(final_weights(load_checkpoint(run_dir, config)), buffer)
    atomic_write_bytes(destination, buffer.getvalue())


def write_dci_sample(run_dir: str | Path, arrays: dict[str, Any]) -> Path:
    """Write ``RUN/dci_sample.npz`` (compressed numpy arrays, no pickles)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = Path(run_dir) / DCI_SAMPLE_FILE
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_dci_sample(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/dci_sample.npz`` as a dict of arrays; RunFolderError when missing or unreadable."""
    path = Path(run_dir) / DCI_SAMPLE_FILE
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise RunFolderError(f"{run_dir} has no {DCI_SAMPLE_FILE}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise RunFolderError(f"{path} is not a readable numpy archive ({type(error).__name__})") from None

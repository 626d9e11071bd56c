"""One point of a sweep: what a worker needs to train it, how points are grouped into banks, how each ended.

A worker trains a *unit*: the tasks of one bank (:mod:`constrained_vae.run.bank`), points that share
every run setting but the objective and the seed, at most ``--bank-size`` of them, trained side by
side in one process. A unit of one is a point trained as ``run.py`` trains it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from constrained_vae.errors import TrainingDiverged
from constrained_vae.run import folder
from constrained_vae.run.bank import Strategy, bank_key
from constrained_vae.run.loop import train_bank
from constrained_vae.run.settings import RunConfig

REASON_MAX_CHARS = 300

Action = Literal["new", "resume", "restart"]
Status = Literal["done", "resumed", "skipped", "failed"]


@dataclass(frozen=True)
class Task:
    """What a worker needs to train one point."""

    name: str
    run_dir: Path
    config: RunConfig
    action: Action


@dataclass(frozen=True)
class Outcome:
    """How a point ended in this run of the sweep."""

    name: str
    status: Status
    reason: str = ""  # one line, for failed points
    node: str = ""  # the Ray node it trained on (the start of its id), for points trained in this run
    gpus: str = ""  # the ids of the GPUs Ray gave it on that node ("0", "0,1"), for points given a share of one


def group_banks(tasks: Sequence[Task], bank_size: int) -> list[list[Task]]:
    """The tasks as units of at most ``bank_size`` points of one bank shape, in the order of their first task."""
    shapes: dict[tuple, list[list[Task]]] = {}
    for task in tasks:
        units = shapes.setdefault(bank_key(task.config.resolved()), [[]])
        if len(units[-1]) == bank_size:
            units.append([])
        units[-1].append(task)
    return [unit for units in shapes.values() for unit in units]


def run_unit(unit: Sequence[Task], strategy: Strategy | None = None) -> list[Outcome]:
    """Train one unit's points as one bank (fresh, restarted or resumed); an outcome for each, in order.

    A point with a checkpoint resumes from it, whatever the plan said: a point retried after its
    worker died goes on from where it was. A restarted point (stopped before its first checkpoint) is
    cleared by ``train_bank`` itself, under its lock. A point that diverges fails alone; an exception
    that stops the bank (a folder in use, memory) fails every point of it, each with the reason.
    ``strategy`` is how the bank steps its members (None: its device's default).
    """
    try:
        ended = train_bank(
            [task.config for task in unit],
            [task.run_dir for task in unit],
            resume=[folder.is_started(task.run_dir) for task in unit],
            progress=False,
            strategy=strategy,
        )
    except Exception as error:
        return [Outcome(task.name, "failed", one_line(error)) for task in unit]
    return [
        Outcome(task.name, "failed", one_line(end))
        if isinstance(end, TrainingDiverged)
        else Outcome(task.name, "resumed" if task.action == "resume" else "done")
        for task, end in zip(unit, ended, strict=True)
    ]


def one_line(error: BaseException) -> str:
    """``TypeName: first line of the message``, at most :data:`REASON_MAX_CHARS` characters."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 1] + "…"


def progress_counts(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Points trained (fresh or resumed), failed, skipped."""
    statuses = [outcome.status for outcome in outcomes]
    done = statuses.count("done") + statuses.count("resumed")
    return {"done": done, "failed": statuses.count("failed"), "skipped": statuses.count("skipped")}

"""One point of a sweep: what a worker needs to train it, and how it ended."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from constrained_vae.run import folder
from constrained_vae.run.loop import train
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


def run_point(task: Task) -> Outcome:
    """Train one point (fresh, restarted or resumed); any exception becomes a failed outcome.

    A point with a checkpoint resumes from it, whatever the plan said: a point retried
    after its worker died goes on from where it was. A restarted point (stopped before
    its first checkpoint) is cleared by ``train`` itself, under its lock.
    """
    try:
        train(task.config, task.run_dir, resume=folder.is_started(task.run_dir), progress=False)
    except Exception as error:
        return Outcome(task.name, "failed", one_line(error))
    return Outcome(task.name, "resumed" if task.action == "resume" else "done")


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

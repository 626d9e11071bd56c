"""The sweep's one progress bar: points done / running / failed / skipped and the aggregate steps per second."""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path

from tqdm.auto import tqdm

from constrained_vae.run import folder
from constrained_vae.sweeps.tasks import Outcome, Task, progress_counts

PROGRESS_INTERVAL_S = 1.0  # how often the progress bar reads the running points' steps
RATE_WINDOW_S = 10.0  # the progress bar's steps per second are over this many seconds
TRAINING_LOG_TAIL_BYTES = 1024  # read from the end of metrics.csv for its last row (rows are < 200 bytes)


class Progress:
    """The bar. The steps are those the points have logged in ``metrics.csv`` in this run of
    the sweep (so they move in steps of ``--log-every``); the rate is over the last
    :data:`RATE_WINDOW_S` seconds."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.bar = tqdm(total=total, desc="sweep", unit="point", disable=not enabled, dynamic_ncols=True)
        self.outcomes: list[Outcome] = []
        self.running: dict[str, Path] = {}
        self.steps: dict[str, tuple[int, int]] = {}  # point: (last logged step when handed out, last logged step now)
        self.history: deque[tuple[float, int]] = deque()  # (time, steps trained), the last RATE_WINDOW_S seconds

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def started(self, task: Task) -> None:
        self.running[task.name] = task.run_dir
        step = last_logged_step(task.run_dir)
        self.steps[task.name] = (step, step)

    def ended(self, outcome: Outcome) -> None:
        run_dir = self.running.pop(outcome.name, None)
        if run_dir is not None:
            self.steps[outcome.name] = (self.steps[outcome.name][0], last_logged_step(run_dir))
        self.outcomes.append(outcome)
        self.refresh(advance=1)

    def refresh(self, advance: int = 0) -> None:
        """Read the running points' steps and redraw (``advance``: points just ended)."""
        for name, run_dir in self.running.items():
            self.steps[name] = (self.steps[name][0], last_logged_step(run_dir))
        now = time.monotonic()
        self.history.append((now, sum(last - first for first, last in self.steps.values())))
        while now - self.history[0][0] > RATE_WINDOW_S:
            self.history.popleft()
        (then, before), (_, trained) = self.history[0], self.history[-1]
        rate = f"{(trained - before) / (now - then):.3g}" if now > then else "—"
        counts = progress_counts(self.outcomes)
        postfix = {"done": counts["done"], "running": len(self.running), "failed": counts["failed"]}
        self.bar.set_postfix(postfix | {"skipped": counts["skipped"], "steps/s": rate}, refresh=not advance)
        if advance:
            self.bar.update(advance)


def last_logged_step(run_dir: Path) -> int:
    """The step of the last whole row of ``RUN/metrics.csv``, read from the file's end (0 when there is none)."""
    try:
        with open(run_dir / folder.TRAINING_LOG, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - TRAINING_LOG_TAIL_BYTES))
            rows = handle.read().split(b"\n")[:-1]  # what follows the last line end is a torn row, or nothing
    except OSError:
        return 0
    for row in reversed(rows):
        try:
            return int(float(row.split(b",", 1)[0]))
        except ValueError:  # the header
            continue
    return 0

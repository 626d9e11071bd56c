"""Where a sweep's points train without Ray: in the sweep's own process, one unit (bank) after another.

For one machine where Ray is not installed (``--executor auto``) or not wanted (``--executor local``):
each unit is trained by :func:`~constrained_vae.sweeps.tasks.run_unit`, as a Ray worker would, with
``--cpus-per-run`` torch threads (default: every core). Ctrl-C or SIGTERM stops the unit at a step
boundary, each of its points writing a checkpoint there, and the next run resumes them. The
progress bar is redrawn from a thread while a unit trains.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from constrained_vae.run.bank import Strategy
from constrained_vae.sweeps.progress import PROGRESS_INTERVAL_S, Progress
from constrained_vae.sweeps.tasks import Outcome, Task, run_unit


def run_in_process(
    units: Sequence[Sequence[Task]],
    threads: int,
    finish: Callable[[Outcome], None],
    bar: Progress,
    strategy: Strategy | None = None,
) -> None:
    """Train the units here, one after another, with ``threads`` torch threads (banks stepping their members
    by ``strategy``, None: the device's default); ``finish`` gets each outcome."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    lock = threading.Lock()
    try:
        with redrawn(bar, lock):
            for unit in units:
                with lock:
                    for task in unit:
                        bar.started(task)
                outcomes = run_unit(unit, strategy)
                with lock:
                    for outcome in outcomes:
                        finish(outcome)
    finally:
        torch.set_num_threads(previous)


@contextmanager
def redrawn(bar: Progress, lock: threading.Lock) -> Iterator[None]:
    """Redraw ``bar`` every :data:`PROGRESS_INTERVAL_S` seconds from a thread, under ``lock``, until the block ends."""
    stopped = threading.Event()

    def redraw() -> None:
        while not stopped.wait(PROGRESS_INTERVAL_S):
            with lock:
                bar.refresh()

    thread = threading.Thread(target=redraw, name="sweep-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()

"""A planned sweep run: one writer, its records, its points in banks on Ray or in this process.

**One writer.** The sweep holds ``SWEEP/.lock`` from planning to the report (the caller takes
it: :func:`constrained_vae.run.locks.hold`), and each point's training holds its run folder's:
a second sweep into the same folder, or ``run.py --resume`` on a running point, is refused with
``error: … is in use by process N`` and touches nothing. The command is checked before the lock
is taken (bad input writes nothing) and planned again under it (another sweep may have moved on
in between).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import nullcontext
from pathlib import Path

from constrained_vae.errors import SweepError, UnrecordedSweep
from constrained_vae.files import TEMPORARY_SUFFIX, atomic_write_json, is_disk_full
from constrained_vae.sweeps.local_executor import run_in_process
from constrained_vae.sweeps.plan import SWEEP_FILE, SweepPlan
from constrained_vae.sweeps.progress import Progress
from constrained_vae.sweeps.ray_executor import Resources, check_capacity, ray_for, run_on_ray
from constrained_vae.sweeps.report import FAILURES_FILE, note_failure, read_failures, write_failures
from constrained_vae.sweeps.tasks import Outcome, group_banks


def check_writable(sweep_dir: Path) -> None:
    """SweepError unless files can be created in ``sweep_dir`` (a probe file, removed at once)."""
    try:
        fd, probe = tempfile.mkstemp(dir=sweep_dir, prefix=".write-check.", suffix=TEMPORARY_SUFFIX)
    except OSError as error:
        raise SweepError(f"cannot write in {sweep_dir}: {error.strerror or error}") from None
    os.close(fd)
    os.unlink(probe)


def run_sweep(plan: SweepPlan, resources: Resources, *, progress: bool = True) -> list[Outcome]:
    """Write ``sweep.json``, then train the plan's points, in banks of at most ``resources.bank_size``,
    on Ray or in this process (``resources.executor``); the outcomes in point order.

    Failures are recorded in ``SWEEP/failures.json`` as they happen and cleared for
    points that finish. KeyboardInterrupt stops the running points and is re-raised.
    """
    sweep_dir = plan.sweep_dir
    on_ray = resources.executor == "ray" and bool(plan.tasks)
    with ray_for(resources) if on_ray else nullcontext():
        if on_ray:
            check_capacity(resources)  # before anything is written
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if plan.write_record:
            atomic_write_json(sweep_dir / SWEEP_FILE, plan.record)
        failures = read_failures(sweep_dir)
        outcomes: dict[str, Outcome] = {}
        unwritten: list[OSError] = []  # failures.json writes that found no space
        with Progress(len(plan.names), enabled=progress) as bar:

            def finish(outcome: Outcome) -> None:
                outcomes[outcome.name] = outcome
                if note_failure(failures, outcome):
                    try:
                        write_failures(sweep_dir, failures)
                    except OSError as error:
                        if not is_disk_full(error):
                            raise
                        unwritten.append(error)
                bar.ended(outcome)

            for name in plan.skipped:
                finish(Outcome(name, "skipped"))
            units = group_banks(plan.tasks, resources.bank_size)
            if on_ray:
                run_on_ray(units, resources, finish, bar)
            elif units:
                run_in_process(units, resources.threads, finish, bar, resources.bank_strategy)
    ended = [outcomes[name] for name in plan.names]
    if unwritten:
        error = unwritten[-1]
        raise UnrecordedSweep(
            f"no space left on the device of {sweep_dir} ({error.strerror}): {FAILURES_FILE} is not up to date; "
            "free space and re-run the command (finished points are kept)",
            ended,
        )
    return ended

"""A planned sweep run: one writer, its records, its points on Ray.

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

from constrained_vae.errors import SweepError
from constrained_vae.files import TEMPORARY_SUFFIX, atomic_write_json
from constrained_vae.sweeps.plan import SWEEP_FILE, SweepPlan
from constrained_vae.sweeps.progress import Progress
from constrained_vae.sweeps.ray_executor import Resources, check_capacity, ray_for, run_on_ray
from constrained_vae.sweeps.report import note_failure, read_failures, write_failures
from constrained_vae.sweeps.tasks import Outcome


def check_writable(sweep_dir: Path) -> None:
    """SweepError unless files can be created in ``sweep_dir`` (a probe file, removed at once)."""
    try:
        fd, probe = tempfile.mkstemp(dir=sweep_dir, prefix=".write-check.", suffix=TEMPORARY_SUFFIX)
    except OSError as error:
        raise SweepError(f"cannot write in {sweep_dir}: {error.strerror or error}") from None
    os.close(fd)
    os.unlink(probe)


def run_sweep(plan: SweepPlan, resources: Resources, *, progress: bool = True) -> list[Outcome]:
    """Write ``sweep.json``, then train the plan's points on Ray; the outcomes in point order.

    Failures are recorded in ``SWEEP/failures.json`` as they happen and cleared for
    points that finish. KeyboardInterrupt stops the running points and is re-raised.
    """
    sweep_dir = plan.sweep_dir
    with ray_for(resources) if plan.tasks else nullcontext():
        if plan.tasks:
            check_capacity(resources)  # before anything is written
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if plan.write_record:
            atomic_write_json(sweep_dir / SWEEP_FILE, plan.record)
        failures = read_failures(sweep_dir)
        outcomes: dict[str, Outcome] = {}
        with Progress(len(plan.names), enabled=progress) as bar:

            def finish(outcome: Outcome) -> None:
                outcomes[outcome.name] = outcome
                if note_failure(failures, outcome):
                    write_failures(sweep_dir, failures)
                bar.ended(outcome)

            for name in plan.skipped:
                finish(Outcome(name, "skipped"))
            if plan.tasks:
                run_on_ray(plan.tasks, resources, finish, bar)
    return [outcomes[name] for name in plan.names]

"""Sweeps: a grid of ε and/or β values × seeds, one ordinary run folder per point.

    SWEEP/sweep.json        the command, the grid, the run settings given, the points
    SWEEP/eps{E:g}-seed{S}  a constrained run folder (see :mod:`constrained_vae.runs`)
    SWEEP/beta{B:g}-seed{S} a fixed-β run folder
    SWEEP/failures.json     {point name: one-line reason} for the points that failed and
                            have not succeeded since (absent when there are none)

Every point's config is validated before anything is written. Re-running the same
command finishes a sweep: a point whose ``summary.json`` has the sweep's number of
steps is skipped, one with a checkpoint is resumed from it (bit for bit, as
``run.py --resume`` does), and a folder with a config but no checkpoint (stopped
before its first checkpoint) is cleared and started afresh.

**One writer.** The sweep holds ``SWEEP/.lock`` from planning to the report, and
each point's training holds its run folder's (:mod:`constrained_vae.locks`): a
second sweep into the same folder, or ``run.py --resume`` on a running point, is
refused with ``error: … is in use by process N`` and touches nothing. The command
is checked before the lock is taken (bad input writes nothing) and planned again
under it (another sweep may have moved on in between).

**Re-running with another grid.** A sweep folder holds one set of run settings.
A command with the same run settings (compared once dataset defaults are filled in,
so ``--steps 4000`` equals the linear-gaussian default) whose ``--epsilon``,
``--beta`` and ``--seeds`` each include every recorded value extends the sweep:
``sweep.json`` is rewritten with the new command and grid, and only the new points
train. Anything else (other settings, or a recorded value left out) is refused, so
the command in ``sweep.json`` always reproduces every point in the folder.

**Workers.** With ``workers == 1`` the points train one after another in this
process. Otherwise each point trains in a process of its own (forked from a
forkserver that has imported torch once; spawned where there is no forkserver), at
most ``workers`` at once, each with ``cores // workers`` torch threads; a point
whose process raises or dies (a crash, a kill) fails alone and the others go on.
On Ctrl-C the running points are stopped (checkpoints and summaries are written
atomically, so the last checkpoint is whole) and the next run resumes them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from constrained_vae import locks, runs
from constrained_vae.cli import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    ArgumentParser,
    add_run_arguments,
    dataset_default,
    settings_from_args,
)
from constrained_vae.config import Mode, RunConfig
from constrained_vae.errors import ConfigError, DataError, SweepError, UserInputError
from constrained_vae.files import atomic_write_json
from constrained_vae.training import resolve_device, resume_config, train

PROG = "experiments/sweep.py"
SWEEP_FILE = "sweep.json"
FAILURES_FILE = "failures.json"
GRID_FIELDS = ("epsilon", "beta", "seed")  # the RunConfig fields a point sets; the others are run settings
EXIT_FAILED = 1
STOP_TIMEOUT_S = 60.0  # how long a stopped point may take to leave its step before it is killed
REASON_MAX_CHARS = 300
# Imported once in the forkserver rather than in every point: torch's optimizers import torch._dynamo on
# their first step (~1.4 s of CPU). A module that is not there is skipped by the forkserver.
FORKSERVER_PRELOAD = ("torch._dynamo",)

Action = Literal["new", "resume", "restart"]
Status = Literal["done", "resumed", "skipped", "failed"]


@dataclass(frozen=True)
class Point:
    """One run of a sweep: an ε (constrained) or a β (fixed-β), and a seed."""

    epsilon: float | None
    beta: float | None
    seed: int

    @property
    def mode(self) -> Mode:
        return "constrained" if self.epsilon is not None else "fixed-beta"

    @property
    def name(self) -> str:
        """The run folder's name: ``eps20-seed0``, ``beta0.5-seed2``."""
        tag = f"eps{self.epsilon:g}" if self.epsilon is not None else f"beta{self.beta:g}"
        return f"{tag}-seed{self.seed}"

    def config(self, settings: dict[str, Any]) -> RunConfig:
        """The sweep's run settings with this point's ε or β and seed (defaults not yet filled in)."""
        return RunConfig.from_dict({**settings, "epsilon": self.epsilon, "beta": self.beta, "seed": self.seed})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "epsilon": self.epsilon, "beta": self.beta, "seed": self.seed}


@dataclass(frozen=True)
class Grid:
    """ε values × seeds (constrained points) and β values × seeds (fixed-β points)."""

    epsilon: tuple[float, ...] = ()
    beta: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def of(cls, epsilon: Iterable[float], beta: Iterable[float], seeds: Iterable[int]) -> Grid:
        """A grid with repeated values dropped (first occurrence kept) and −0 read as 0."""
        return cls(_unique(v + 0.0 for v in epsilon), _unique(v + 0.0 for v in beta), _unique(seeds))

    @classmethod
    def from_dict(cls, values: dict[str, list]) -> Grid:
        return cls.of(values["epsilon"], values["beta"], values["seeds"])

    def to_dict(self) -> dict[str, list]:
        return {"epsilon": list(self.epsilon), "beta": list(self.beta), "seeds": list(self.seeds)}

    def points(self) -> list[Point]:
        """Constrained points (each ε over the seeds), then fixed-β points."""
        constrained = [Point(eps, None, seed) for eps in self.epsilon for seed in self.seeds]
        return constrained + [Point(None, beta, seed) for beta in self.beta for seed in self.seeds]

    def values_missing_from(self, other: Grid) -> dict[str, list]:
        """This grid's values that ``other`` lacks, by flag name (empty when ``other`` includes them all)."""
        missing = {
            "--epsilon": [v for v in self.epsilon if v not in other.epsilon],
            "--beta": [v for v in self.beta if v not in other.beta],
            "--seeds": [v for v in self.seeds if v not in other.seeds],
        }
        return {flag: values for flag, values in missing.items() if values}


def _unique(values: Iterable) -> tuple:
    return tuple(dict.fromkeys(values))


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


@dataclass
class SweepPlan:
    """A validated sweep: what ``sweep.json`` should hold and which points to train."""

    sweep_dir: Path
    record: dict[str, Any]
    write_record: bool  # False when sweep.json already records this grid
    added_points: int  # points new to an existing sweep (0 for a new one)
    names: list[str]
    tasks: list[Task] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# --- planning: everything is checked before anything is written -------------------------------


def plan_sweep(sweep_dir: str | Path, grid: Grid, settings: dict[str, Any], command: Sequence[str]) -> SweepPlan:
    """Validate the grid, every point's config and the sweep folder; decide what each point needs.

    Raises :class:`UserInputError` (a :class:`ConfigError`, :class:`DataError` or
    :class:`SweepError`) for any bad input; writes nothing.
    """
    sweep_dir = Path(sweep_dir)
    configs = point_configs(grid, settings)
    check_resources(next(iter(configs.values())))
    record = sweep_record(command, grid, settings)
    recorded = read_record(sweep_dir)
    if recorded is None:
        check_new_sweep_folder(sweep_dir)
        added = 0
    else:
        check_extends(sweep_dir, recorded, grid, settings)
        added = len(grid.points()) - len(recorded["points"])
    plan = SweepPlan(sweep_dir, record, recorded is None or added > 0, added, [p.name for p in configs])
    for point, config in configs.items():
        task = task_for(sweep_dir / point.name, config)
        if task is None:
            plan.skipped.append(point.name)
        else:
            plan.tasks.append(task)
    return plan


def point_configs(grid: Grid, settings: dict[str, Any]) -> dict[Point, RunConfig]:
    """Every point's resolved config; :class:`ConfigError` for the first bad one."""
    if not grid.epsilon and not grid.beta:
        raise ConfigError("give --epsilon and/or --beta values to sweep over")
    configs = {point: point.config(settings).resolved() for point in grid.points()}
    names = [point.name for point in configs]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ConfigError(f"values too close to tell apart in folder names ({', '.join(clashes)}); space them out")
    return configs


def check_resources(config: RunConfig) -> None:
    """What every point needs that a config cannot check by itself: the device and the data file."""
    resolve_device(config.device)
    if config.data_path is not None and not Path(config.data_path).is_file():
        raise DataError(f"--data-path {config.data_path} is not a file")


def sweep_record(command: Sequence[str], grid: Grid, settings: dict[str, Any]) -> dict[str, Any]:
    """The contents of ``sweep.json``."""
    return {
        "command": list(command),
        "grid": grid.to_dict(),
        "run_settings": dict(settings),
        "points": [point.to_dict() for point in grid.points()],
    }


def read_record(sweep_dir: Path) -> dict[str, Any] | None:
    """``sweep.json`` of ``sweep_dir``, or None when there is none."""
    path = sweep_dir / SWEEP_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        Grid.from_dict(record["grid"])
        missing = {"command", "run_settings", "points"} - set(record)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise SweepError(f"{path} is not a sweep record ({type(error).__name__}: {error})") from None
    if missing:
        raise SweepError(f"{path} is not a sweep record (it lacks {', '.join(sorted(missing))})")
    return record


def check_new_sweep_folder(sweep_dir: Path) -> None:
    """A new sweep goes into a missing or empty folder, never among other files.

    Empty means: nothing but a lock file and temporary files a killed sweep left (it never wrote its record).
    """
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise SweepError(f"--out {sweep_dir} exists and is not a folder")
    if sweep_dir.is_dir() and any(not locks.is_bookkeeping(path) for path in sweep_dir.iterdir()):
        raise SweepError(f"--out {sweep_dir} is not empty and holds no {SWEEP_FILE}; choose a new folder")


def check_extends(sweep_dir: Path, recorded: dict[str, Any], grid: Grid, settings: dict[str, Any]) -> None:
    """Refuse a command that is not the recorded sweep or an extension of it (see the module docstring)."""
    old, new = resolved_settings(recorded["run_settings"]), resolved_settings(settings)
    differing = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    if differing:
        flags = ", ".join("--" + key.replace("_", "-") for key in differing)
        raise SweepError(
            f"{sweep_dir} holds a sweep with other run settings (differs in {flags}); "
            f"its command is in {sweep_dir / SWEEP_FILE}: re-run that, or choose another --out"
        )
    missing = Grid.from_dict(recorded["grid"]).values_missing_from(grid)
    if missing:
        left_out = "; ".join(f"{flag} {' '.join(f'{v:g}' for v in values)}" for flag, values in missing.items())
        raise SweepError(
            f"{sweep_dir} holds a sweep with values this command leaves out ({left_out}); "
            "a re-run must give every recorded value (it may add more)"
        )


def resolved_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The run settings with dataset defaults filled in (the grid's fields left out)."""
    config = RunConfig.from_dict({**settings, "epsilon": 0.0, "beta": None}).resolved()
    return {key: value for key, value in config.to_dict().items() if key not in (*GRID_FIELDS, "mode")}


def task_for(run_dir: Path, config: RunConfig) -> Task | None:
    """What the point in ``run_dir`` needs: None (finished), a fresh run, a restart or a resume."""
    if (run_dir / runs.CHECKPOINT).exists():
        saved = saved_config(run_dir, config)
        return None if is_finished(run_dir, config.steps) else Task(run_dir.name, run_dir, saved, "resume")
    if runs.holds_run(run_dir):
        return Task(run_dir.name, run_dir, config, "restart")
    return Task(run_dir.name, run_dir, config, "new")


def saved_config(run_dir: Path, config: RunConfig) -> RunConfig:
    """The config of the run in ``run_dir``, extended to ``config``'s steps; SweepError if it is another run."""
    overrides = {key: value for key, value in config.to_dict().items() if key != "mode"}
    try:
        return resume_config(run_dir, overrides)
    except UserInputError as error:
        raise SweepError(f"{run_dir} holds a run that is not this sweep's point: {error}") from None


def is_finished(run_dir: Path, steps: int) -> bool:
    try:
        return runs.read_summary(run_dir).get("steps") == steps
    except (ValueError, AttributeError):  # no summary yet (RunFolderError), or not readable JSON
        return False


# --- running ---------------------------------------------------------------------------------


def run_sweep(plan: SweepPlan, workers: int, *, progress: bool = True) -> list[Outcome]:
    """Write ``sweep.json``, then train the plan's points; the outcomes in point order.

    Failures are recorded in ``SWEEP/failures.json`` as they happen and cleared for
    points that finish. KeyboardInterrupt stops the running points and is re-raised.
    """
    sweep_dir = plan.sweep_dir
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if plan.write_record:
        atomic_write_json(sweep_dir / SWEEP_FILE, plan.record)
    failures = read_failures(sweep_dir)
    outcomes: dict[str, Outcome] = {}
    with tqdm(total=len(plan.names), desc="sweep", unit="point", disable=not progress, dynamic_ncols=True) as bar:

        def finish(outcome: Outcome) -> None:
            outcomes[outcome.name] = outcome
            if note_failure(failures, outcome):
                write_failures(sweep_dir, failures)
            bar.update(1)
            bar.set_postfix(progress_counts(outcomes.values()))

        for name in plan.skipped:
            finish(Outcome(name, "skipped"))
        if workers == 1:
            for task in plan.tasks:
                finish(run_point(task))
        else:
            run_in_processes(plan.tasks, workers, finish)
    return [outcomes[name] for name in plan.names]


def run_point(task: Task) -> Outcome:
    """Train one point (fresh, restarted or resumed); any exception becomes a failed outcome.

    A restarted point (stopped before its first checkpoint) is cleared by ``train`` itself, under its lock.
    """
    try:
        train(task.config, task.run_dir, resume=task.action == "resume", progress=False)
    except Exception as error:
        return Outcome(task.name, "failed", one_line(error))
    return Outcome(task.name, "resumed" if task.action == "resume" else "done")


def one_line(error: BaseException) -> str:
    """``TypeName: first line of the message``, at most REASON_MAX_CHARS characters."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 1] + "…"


def progress_counts(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """The progress bar's postfix: points trained (fresh or resumed), failed, skipped."""
    statuses = [outcome.status for outcome in outcomes]
    done = statuses.count("done") + statuses.count("resumed")
    return {"done": done, "failed": statuses.count("failed"), "skipped": statuses.count("skipped")}


def run_in_processes(
    tasks: Sequence[Task],
    workers: int,
    finish: Callable[[Outcome], None],
    target: Callable[[Task], Outcome] = run_point,
) -> None:
    """Run ``target(task)`` for each task in a process of its own, at most ``workers`` at once.

    ``finish`` gets each outcome as its process ends. A process that ends without
    an outcome (a crash, a kill) fails that task alone. On any exception here
    (KeyboardInterrupt included) the running processes are stopped, then it is re-raised.
    """
    context = process_context()
    workers = max(1, min(workers, len(tasks)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    pending = list(tasks)
    running: dict[int, tuple[BaseProcess, Connection, Task]] = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                task = pending.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(
                    target=worker_main, args=(target, task, threads, sender), name=f"sweep {task.name}"
                )
                process.start()
                sender.close()
                running[process.sentinel] = (process, receiver, task)
            for sentinel in wait(list(running)):
                process, receiver, task = running.pop(sentinel)
                finish(collect(process, receiver, task))
    except BaseException:
        stop_processes([process for process, _, _ in running.values()])
        raise


def process_context() -> BaseContext:
    """forkserver where there is one (this module and torch imported once, in a clean process that never
    ran torch, and each point forked from it), else spawn (each point imports them again)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, *FORKSERVER_PRELOAD])
    return context


def worker_main(target: Callable[[Task], Outcome], task: Task, threads: int, sender: Connection) -> None:
    """A point's process: ``threads`` torch threads; SIGTERM stops it like Ctrl-C (which is the parent's to handle)."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    _stop_when_parent_dies()
    torch.set_num_threads(threads)
    try:
        outcome = target(task)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    sender.send(outcome)
    sender.close()


def _stop_when_parent_dies() -> None:
    """SIGTERM this process when the sweep's process dies (a kill): no orphan goes on writing its run folder."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_terminate_after, args=(parent,), name="parent watch", daemon=True).start()


def _terminate_after(parent: BaseProcess) -> None:
    parent.join()
    os.kill(os.getpid(), signal.SIGTERM)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def collect(process: BaseProcess, receiver: Connection, task: Task) -> Outcome:
    """The outcome a finished process sent, or a failure saying how it died."""
    process.join()
    try:
        outcome = receiver.recv() if receiver.poll() else None
    except EOFError:
        outcome = None
    finally:
        receiver.close()
    if outcome is not None:
        return outcome
    code = process.exitcode
    how = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
    return Outcome(task.name, "failed", f"worker process died ({how})")


def stop_processes(processes: Sequence[BaseProcess]) -> None:
    """SIGTERM (the point stops as on Ctrl-C, closing its files), then SIGKILL whatever is still there."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()


# --- failures.json ---------------------------------------------------------------------------


def read_failures(sweep_dir: Path) -> dict[str, str]:
    """{point name: one-line reason} from ``failures.json`` (empty when there is none or it is unreadable)."""
    try:
        failures = json.loads((sweep_dir / FAILURES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return failures if isinstance(failures, dict) else {}


def note_failure(failures: dict[str, str], outcome: Outcome) -> bool:
    """Add a failed point's reason, or clear a finished point's; whether ``failures`` changed."""
    if outcome.status == "failed":
        changed = failures.get(outcome.name) != outcome.reason
        failures[outcome.name] = outcome.reason
        return changed
    return failures.pop(outcome.name, None) is not None


def write_failures(sweep_dir: Path, failures: dict[str, str]) -> None:
    """Write ``failures.json``, or remove it when nothing has failed."""
    path = sweep_dir / FAILURES_FILE
    if failures:
        atomic_write_json(path, failures)
    else:
        path.unlink(missing_ok=True)


# --- the report ------------------------------------------------------------------------------


def format_report(sweep_dir: Path, outcomes: Sequence[Outcome]) -> str:
    """A table of the points (status, tail KL, NLL, λ or β), then the failures and their reasons."""
    header = ("point", "status", "KL", "NLL", "λ / β")
    rows = [header, *(_table_row(sweep_dir, outcome) for outcome in outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    lines += [f"failed: {outcome.name}: {outcome.reason}" for outcome in failed]
    counts = ", ".join(f"{n} {name}" for name, n in progress_counts(outcomes).items())
    lines.append(f"sweep folder: {sweep_dir} ({len(outcomes)} points: {counts}; KL, NLL in nats per sample)")
    if failed:
        lines.append(f"failures recorded in {sweep_dir / FAILURES_FILE}; re-run the same command to retry them")
    return "\n".join(lines)


def _table_row(sweep_dir: Path, outcome: Outcome) -> tuple[str, ...]:
    figures = ("—", "—", "—")
    if outcome.status != "failed":
        try:
            summary = runs.read_summary(sweep_dir / outcome.name)
            figures = (f"{summary['kl']:.3f}", f"{summary['nll']:.3f}", f"{summary['multiplier']:.4g}")
        except (ValueError, KeyError, TypeError):
            pass
    return (outcome.name, outcome.status, *figures)


# --- the command line ------------------------------------------------------------------------


def sweep_parser() -> argparse.ArgumentParser:
    """``run.py``'s flags, with several values for ``--epsilon``/``--beta`` and ``--seeds`` for ``--seed``."""
    parser = ArgumentParser(
        prog=PROG,
        description="Train a grid of β-VAEs (ε values and/or β values × seeds), one run folder per point, "
        "in parallel. Re-running the same command finishes an interrupted sweep.",
        conflict_handler="resolve",  # the grid flags below replace run.py's --epsilon, --beta and --seed
    )
    add_run_arguments(parser)
    grid = parser.add_argument_group("grid (at least one of --epsilon, --beta)")
    grid.add_argument("--epsilon", type=float, nargs="+", metavar="E", help="KL budgets ε (nats per sample)")
    grid.add_argument("--beta", type=float, nargs="+", metavar="B", help="fixed β values")
    grid.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0], metavar="S", help="seeds (default: 0)")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--out", required=True, metavar="SWEEP", help="the sweep folder (new, or one to finish)")
    sweep.add_argument("--steps", type=int, help=f"optimisation steps of every point; {dataset_default('steps')}")
    sweep.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="points trained at once (default: CPU cores)"
    )
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def grid_from_args(args: argparse.Namespace) -> Grid:
    return Grid.of(args.epsilon or [], args.beta or [], args.seeds)


def run_settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields given on the command line, the grid's left out."""
    return {key: value for key, value in settings_from_args(args).items() if key not in GRID_FIELDS}


def check_workers(workers: int) -> int:
    if workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers}")
    return workers


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, check everything, train the grid, print the table.

    Exit status: 0 when every point finished, 1 when any failed, 2 for bad input
    (nothing written), 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = sweep_parser().parse_args(argv)
    grid, settings, command = grid_from_args(args), run_settings_from_args(args), [PROG, *argv]
    try:
        workers = check_workers(args.workers)
        plan_sweep(args.out, grid, settings, command)  # bad input is refused before the folder is touched
        with locks.hold(args.out):
            plan = plan_sweep(args.out, grid, settings, command)
            if plan.added_points:
                print(f"extending the sweep in {plan.sweep_dir} by {plan.added_points} points (same run settings)")
            outcomes = run_sweep(plan, workers, progress=not args.no_progress)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"\ninterrupted: re-run the same command to finish the sweep in {args.out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_report(plan.sweep_dir, outcomes))
    return EXIT_FAILED if any(outcome.status == "failed" for outcome in outcomes) else 0


__all__ = [
    "Grid",
    "Outcome",
    "Point",
    "SweepPlan",
    "Task",
    "plan_sweep",
    "run_in_processes",
    "run_point",
    "run_sweep",
    "sweep_main",
    "sweep_parser",
]

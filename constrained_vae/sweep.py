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
train. The settings a resumed run may change but its step count (``--device``,
``--threads``, ``--compile``, ``--log-every``, ``--checkpoint-every``) may change too, as
with ``run.py --resume``: the points still to train take the new values, and
``sweep.json`` records the new command. Anything else (other settings, or a recorded
value left out) is refused, so the command in ``sweep.json`` reproduces every point in
the folder (up to rounding where those settings changed).

**Where points train: Ray.** Each point is a Ray task that calls the same
:func:`~constrained_vae.training.train` as ``run.py``. Without an address the sweep
starts Ray in its own process on this machine (and shuts it down at the end); with
``--address`` (or ``RAY_ADDRESS``) it joins a running cluster (and leaves it running),
whose nodes must all see the sweep folder (a shared file system). A point asks Ray
for ``--cpus-per-run`` CPUs (its torch threads) and ``--gpus-per-run`` GPUs (a
fraction lets several points share one); ``--workers N`` is the shorthand for N
points at once on this machine. The sweep hands Ray no more points than the cluster
can train at once, so a point handed out is a point running. A point whose exception
ends it fails alone; one whose worker process (or node) dies is retried by Ray, at
most ``--max-retries`` times, and resumes from its last checkpoint, bit for bit. On
Ctrl-C the running points are cancelled (Ray raises KeyboardInterrupt in each: it
writes a checkpoint at its current step and stops) and the next run resumes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import ray
import torch
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
from constrained_vae.config import RESUMABLE_OVERRIDES, Mode, RunConfig, point_settings
from constrained_vae.errors import ConfigError, DataError, SweepError, UserInputError
from constrained_vae.files import TEMPORARY_SUFFIX, atomic_write_json
from constrained_vae.training import resume_config, train

PROG = "experiments/sweep.py"
SWEEP_FILE = "sweep.json"
# Run settings a re-run of the sweep may change: those of a resumed run but its steps (they define the points).
RESUMABLE_SWEEP_SETTINGS = tuple(key for key in RESUMABLE_OVERRIDES if key != "steps")
FAILURES_FILE = "failures.json"
GRID_FIELDS = ("epsilon", "beta", "seed")  # the RunConfig fields a point sets; the others are run settings
EXIT_FAILED = 1
STOP_TIMEOUT_S = 60.0  # how long a stopped point may take to leave its step before it is killed
REASON_MAX_CHARS = 300
DEFAULT_MAX_RETRIES = 3  # Ray's default for tasks
PROGRESS_INTERVAL_S = 1.0  # how often the progress bar reads the running points' steps
RATE_WINDOW_S = 10.0  # the progress bar's steps per second are over this many seconds
METRICS_TAIL_BYTES = 1024  # read from the end of metrics.csv for its last row (rows are < 200 bytes)
NODE_ID_CHARS = 8  # a Ray node as the report names it: the start of its id
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20  # points hand Ray only small configs and outcomes
CONNECT_TIMEOUT_S = 10.0  # for a cluster's head to answer --address

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
        values = point_settings(settings, epsilon=self.epsilon, beta=self.beta)
        return RunConfig.from_dict({**values, "seed": self.seed})

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
    node: str = ""  # the Ray node it trained on (the start of its id), for points trained in this run
    gpus: str = ""  # the ids of the GPUs Ray gave it on that node ("0", "0,1"), for points given a share of one


@dataclass
class SweepPlan:
    """A validated sweep: what ``sweep.json`` should hold and which points to train."""

    sweep_dir: Path
    record: dict[str, Any]
    write_record: bool  # False when sweep.json already records this command (its grid and run settings)
    added_points: int  # points new to an existing sweep (0 for a new one)
    names: list[str]
    changed_settings: list[str] = field(default_factory=list)  # resumable settings this command changes
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
        added, changed = 0, []
    else:
        changed = check_extends(sweep_dir, recorded, grid, settings)
        added = len(grid.points()) - len(recorded["points"])
    names = [p.name for p in configs]
    plan = SweepPlan(sweep_dir, record, recorded is None or added > 0 or bool(changed), added, names, changed)
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
    """What every point needs that a config cannot check by itself: the data file.

    (The device is Ray's to provide: ``--device cuda`` needs ``--gpus-per-run``, see :func:`resources_from_args`.)
    """
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


def read_json_record(path: Path, what: str, fault: Callable[[Any], str]) -> dict[str, Any] | None:
    """The record in the JSON file ``path``, or None when there is none.

    ``fault(record)`` says what is wrong with it ("" when nothing is; it may raise KeyError or TypeError
    for a missing or mistyped part); a bad record raises :class:`SweepError` ``PATH is not a WHAT (…)``.
    """
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        problem = fault(record)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise SweepError(f"{path} is not a {what} ({type(error).__name__}: {error})") from None
    if problem:
        raise SweepError(f"{path} is not a {what} ({problem})")
    return record


def read_record(sweep_dir: Path) -> dict[str, Any] | None:
    """``sweep.json`` of ``sweep_dir``, or None when there is none."""

    def fault(record: Any) -> str:
        Grid.from_dict(record["grid"])
        missing = {"command", "run_settings", "points"} - set(record)
        return f"it lacks {', '.join(sorted(missing))}" if missing else ""

    return read_json_record(sweep_dir / SWEEP_FILE, "sweep record", fault)


def check_new_sweep_folder(sweep_dir: Path) -> None:
    """A new sweep goes into a missing or empty folder, never among other files.

    Empty means: nothing but a lock file and temporary files a killed sweep left (it never wrote its record).
    """
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise SweepError(f"--out {sweep_dir} exists and is not a folder")
    if sweep_dir.is_dir() and any(not locks.is_bookkeeping(path) for path in sweep_dir.iterdir()):
        raise SweepError(f"--out {sweep_dir} is not empty and holds no {SWEEP_FILE}; choose a new folder")


def check_extends(sweep_dir: Path, recorded: dict[str, Any], grid: Grid, settings: dict[str, Any]) -> list[str]:
    """Refuse a command that is not the recorded sweep or an extension of it (see the module docstring).

    The settings it changes that a re-run may change (:data:`RESUMABLE_SWEEP_SETTINGS`), as flags.
    """
    old, new = resolved_settings(recorded["run_settings"]), resolved_settings(settings)
    differing = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    refused = [key for key in differing if key not in RESUMABLE_SWEEP_SETTINGS]
    if refused:
        flags = ", ".join("--" + key.replace("_", "-") for key in refused)
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
    return ["--" + key.replace("_", "-") for key in differing]


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


# --- running: the points as Ray tasks --------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """Where the points train and what each one asks of Ray.

    ``address`` is a Ray cluster to join (None: the Ray this process already runs, or
    one started here for the sweep). Every point asks for ``cpus`` CPUs (its torch
    threads are their whole number, at least 1) and ``gpus`` GPUs; ``workers`` caps
    the points trained at once; a point whose worker dies is retried ``max_retries`` times.
    """

    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    workers: int | None = None
    max_retries: int = DEFAULT_MAX_RETRIES

    @property
    def threads(self) -> int:
        return max(1, math.floor(self.cpus))

    def local_cpus(self) -> int:
        """The CPUs of a Ray started here: this machine's cores, or as many as ``workers`` points ask for."""
        cores = os.cpu_count() or 1
        return max(cores, math.ceil(self.cpus * self.workers)) if self.workers else cores

    def task_options(self) -> dict[str, Any]:
        """``ray.remote`` options of a point. A worker that had a GPU is not reused (Ray's rule for GPU tasks):
        a process keeps the CUDA device it first saw."""
        options = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries, retry_exceptions=False)
        return options | ({"max_calls": 1} if self.gpus else {})

    def points_on(self, node: dict[str, float]) -> int:
        """How many points fit on a node with these total resources."""
        asked = [("CPU", self.cpus)] + ([("GPU", self.gpus)] if self.gpus else [])
        return min(math.floor(node.get(name, 0.0) / amount + 1e-9) for name, amount in asked)


def resources_from_args(args: argparse.Namespace, settings: dict[str, Any]) -> Resources:
    """The resource flags, checked; :class:`ConfigError` for a bad one."""
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    address = None if address == "local" else address
    if args.workers is not None:
        if args.workers < 1:
            raise ConfigError(f"--workers must be a positive integer, got {args.workers}")
        if address is not None:
            raise ConfigError(
                f"--workers counts points on this machine, but the sweep joins the Ray cluster at {address} "
                "(--address or RAY_ADDRESS): give --cpus-per-run and --gpus-per-run instead"
            )
    cores = os.cpu_count() or 1
    cpus = args.cpus_per_run
    if cpus is None:
        cpus = max(1, cores // args.workers) if args.workers else 1
    for flag, value in (("--cpus-per-run", cpus), ("--gpus-per-run", args.gpus_per_run)):
        if not math.isfinite(value) or value < 0 or (value == 0 and flag == "--cpus-per-run"):
            kind = "positive" if flag == "--cpus-per-run" else "non-negative"
            raise ConfigError(f"{flag} must be a {kind} number, got {value:g}")
    if args.max_retries < 0:
        raise ConfigError(f"--max-retries must be a non-negative integer, got {args.max_retries}")
    if settings.get("device") == "cuda" and not args.gpus_per_run:
        raise ConfigError("--device cuda needs --gpus-per-run (each point's share of a GPU, e.g. 0.25)")
    resources = Resources(address, float(cpus), float(args.gpus_per_run), args.workers, args.max_retries)
    try:
        ray.remote(**resources.task_options())(train_point)
    except ValueError as error:  # what Ray refuses (a fraction finer than it counts)
        raise ConfigError(f"--cpus-per-run {cpus:g} / --gpus-per-run {args.gpus_per_run:g}: {error}") from None
    return resources


@contextmanager
def ray_for(resources: Resources) -> Iterator[None]:
    """Ray for the sweep: this process's running Ray as it is, else the cluster at ``resources.address``
    (disconnected from at the end, left running), else one started here (shut down at the end)."""
    if resources.address is not None:
        check_reachable(resources.address)
    if ray.is_initialized():
        yield
        return
    try:
        if resources.address is None:
            ray.init(
                address="local", num_cpus=resources.local_cpus(), include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=True, logging_level=logging.WARNING,
            )  # fmt: skip
        else:
            ray.init(address=resources.address, log_to_driver=True, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"join the Ray cluster at {resources.address}" if resources.address else "start Ray on this machine"
        raise SweepError(f"cannot {where}: {one_line(error)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def check_reachable(address: str) -> None:
    """SweepError at once when nothing answers at ``host:port`` (Ray would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray's to resolve
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise SweepError(f"cannot join the Ray cluster at {address}: {error.strerror or error}") from None


def capacity(resources: Resources) -> int:
    """How many points the cluster's live nodes can train at once."""
    return sum(resources.points_on(node["Resources"]) for node in ray.nodes() if node["Alive"])


def check_capacity(resources: Resources) -> None:
    """SweepError when no node of the cluster can take one point."""
    if capacity(resources) > 0:
        return
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    cpus, gpus = (max((node.get(name, 0.0) for node in nodes), default=0.0) for name in ("CPU", "GPU"))
    raise SweepError(
        f"no Ray node can take a point of --cpus-per-run {resources.cpus:g} --gpus-per-run {resources.gpus:g}: "
        f"the largest has {cpus:g} CPUs and {gpus:g} GPUs"
    )


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


def run_on_ray(tasks: Sequence[Task], resources: Resources, finish: Callable[[Outcome], None], bar: Progress) -> None:
    """Hand the tasks to Ray, no more at once than the cluster can train (and ``resources.workers``).

    ``finish`` gets each outcome as its point ends. On any exception here
    (KeyboardInterrupt included) the points handed out are stopped, then it is re-raised.
    """
    point = ray.remote(**resources.task_options())(train_point)
    cwd = os.getcwd()
    pending = list(tasks)
    running: dict[ray.ObjectRef, Task] = {}
    try:
        while pending or running:
            limit = max(1, min(capacity(resources), resources.workers or len(tasks))) if pending else 0
            while pending and len(running) < limit:
                task = pending.pop(0)
                running[point.remote(task, resources.threads, cwd)] = task
                bar.started(task)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_INTERVAL_S)
            for ref in ready:
                finish(outcome_of(ref, running.pop(ref), resources))
            bar.refresh()
    except BaseException:
        stop(list(running))
        raise


def train_point(task: Task, threads: int, cwd: str) -> Outcome:
    """A Ray task: train one point on the node Ray chose, with ``threads`` torch threads.

    Relative paths mean what they meant to the sweep: the worker moves to the sweep's
    working folder ``cwd`` where the node has it. A node that does not see the sweep
    folder fails the point rather than write a run folder of its own.
    """
    gpus = ",".join(str(gpu) for gpu in ray.get_gpu_ids())
    if not gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a point given no GPU trains on the CPU (with --device auto)
    torch.set_num_threads(threads)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    node = ray.get_runtime_context().get_node_id()[:NODE_ID_CHARS]
    record = task.run_dir.parent / SWEEP_FILE
    if not record.is_file():
        reason = f"SweepError: node {node} does not see {record}; --out must be on a file system every node shares"
        return Outcome(task.name, "failed", reason, node, gpus)
    return dataclasses.replace(run_point(task), node=node, gpus=gpus)


def run_point(task: Task) -> Outcome:
    """Train one point (fresh, restarted or resumed); any exception becomes a failed outcome.

    A point with a checkpoint resumes from it, whatever the plan said: a point retried
    after its worker died goes on from where it was. A restarted point (stopped before
    its first checkpoint) is cleared by ``train`` itself, under its lock.
    """
    try:
        train(task.config, task.run_dir, resume=runs.is_started(task.run_dir), progress=False)
    except Exception as error:
        return Outcome(task.name, "failed", one_line(error))
    return Outcome(task.name, "resumed" if task.action == "resume" else "done")


def outcome_of(ref: ray.ObjectRef, task: Task, resources: Resources) -> Outcome:
    """The outcome of a finished Ray task, or a failure saying why it has none."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:  # something train_point does not catch escaped it
        return Outcome(task.name, "failed", one_line(error.cause or error))
    except ray.exceptions.RayError as error:  # its worker (or node) died, more often than it may be retried
        retries = f"{resources.max_retries} retries spent" if resources.max_retries else "no retries allowed"
        return Outcome(task.name, "failed", f"worker process died ({retries}): {one_line(error)}")


def stop(refs: list[ray.ObjectRef]) -> None:
    """Stop the points handed to Ray as Ctrl-C stops ``run.py``: each writes a checkpoint at its step and ends.

    ``ray.cancel`` raises KeyboardInterrupt in each point; one still running after
    STOP_TIMEOUT_S is killed (its last checkpoint is then the scheduled one before).
    """
    if not refs:
        return
    for ref in refs:
        ray.cancel(ref)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=STOP_TIMEOUT_S)
    for ref in left:
        ray.cancel(ref, force=True)


def one_line(error: BaseException) -> str:
    """``TypeName: first line of the message``, at most REASON_MAX_CHARS characters."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 1] + "…"


def progress_counts(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Points trained (fresh or resumed), failed, skipped."""
    statuses = [outcome.status for outcome in outcomes]
    done = statuses.count("done") + statuses.count("resumed")
    return {"done": done, "failed": statuses.count("failed"), "skipped": statuses.count("skipped")}


class Progress:
    """The sweep's one progress bar: points done / running / failed / skipped and the aggregate steps per second.

    The steps are those the points have logged in ``metrics.csv`` in this run of the
    sweep (so they move in steps of ``--log-every``); the rate is over the last
    RATE_WINDOW_S seconds.
    """

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
        with open(run_dir / runs.METRICS, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - METRICS_TAIL_BYTES))
            rows = handle.read().split(b"\n")[:-1]  # what follows the last line end is a torn row, or nothing
    except OSError:
        return 0
    for row in reversed(rows):
        try:
            return int(float(row.split(b",", 1)[0]))
        except ValueError:  # the header
            continue
    return 0


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
    """A table of the points (status, tail KL, NLL, λ or β), then the failures and their reasons.

    When this run's points trained on more than one Ray node, a column names each one's node; when
    they were given GPUs, a last column names the GPUs each one had on its node.
    """
    by_node = len({outcome.node for outcome in outcomes if outcome.node}) > 1
    by_gpu = any(outcome.gpus for outcome in outcomes)
    header = ("point", "status", "KL", "NLL", "λ / β", *(("node",) if by_node else ()), *(("gpu",) if by_gpu else ()))
    rows = [header, *(_table_row(sweep_dir, outcome, by_node, by_gpu) for outcome in outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    lines += [f"failed: {outcome.name}: {outcome.reason}" for outcome in failed]
    counts = ", ".join(f"{n} {name}" for name, n in progress_counts(outcomes).items())
    lines.append(f"sweep folder: {sweep_dir} ({len(outcomes)} points: {counts}; KL, NLL in nats per sample)")
    if failed:
        lines.append(f"failures recorded in {sweep_dir / FAILURES_FILE}; re-run the same command to retry them")
    return "\n".join(lines)


def _table_row(sweep_dir: Path, outcome: Outcome, by_node: bool, by_gpu: bool) -> tuple[str, ...]:
    figures = ("—", "—", "—")
    if outcome.status != "failed":
        try:
            summary = runs.read_summary(sweep_dir / outcome.name)
            figures = (f"{summary['kl']:.3f}", f"{summary['nll']:.3f}", f"{summary['multiplier']:.4g}")
        except (ValueError, KeyError, TypeError):
            pass
    place = ((outcome.node or "—",) if by_node else ()) + ((outcome.gpus or "—",) if by_gpu else ())
    return (outcome.name, outcome.status, *figures, *place)


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
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray_group = parser.add_argument_group("where the points train (Ray)")
    ray_group.add_argument(
        "--address", metavar="ADDR", help="join the Ray cluster whose head is at ADDR (host:port); every node must "
        "see --out (a shared file system); default: $RAY_ADDRESS, else a Ray started in this process"
    )  # fmt: skip
    ray_group.add_argument(
        "--cpus-per-run", type=float, metavar="C", help="CPUs of each point, its torch threads "
        "(default: 1, or cores/N with --workers N)"
    )  # fmt: skip
    ray_group.add_argument(
        "--gpus-per-run", type=float, default=0.0, metavar="G", help="GPUs of each point; a fraction shares one "
        "(0.125: 8 points per GPU); default: 0 (the points train on CPUs)"
    )  # fmt: skip
    ray_group.add_argument(
        "--workers", type=int, metavar="N", help="shorthand for this machine: N points at once, each with cores/N "
        "CPUs (default: as many points as there are cores, 1 CPU each)"
    )  # fmt: skip
    ray_group.add_argument(
        "--max-retries", type=int, default=DEFAULT_MAX_RETRIES, metavar="R", help="times a point whose worker "
        f"process dies is retried, from its last checkpoint (default: {DEFAULT_MAX_RETRIES})"
    )  # fmt: skip
    return parser


def grid_from_args(args: argparse.Namespace) -> Grid:
    return Grid.of(args.epsilon or [], args.beta or [], args.seeds)


def run_settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields given on the command line, the grid's left out."""
    return {key: value for key, value in settings_from_args(args).items() if key not in GRID_FIELDS}


def check_sweep_arguments(argv: Sequence[str]) -> None:
    """What :func:`sweep_main` refuses before touching any folder, checked without running it: the flags,
    every point's settings and the resources. For a caller that runs the sweep later (``experiments/study.py``);
    raises :class:`UserInputError` for bad input."""
    parser = sweep_parser()
    parser.raise_errors = True
    args = parser.parse_args(argv)
    settings = run_settings_from_args(args)
    resources_from_args(args, settings)
    check_resources(next(iter(point_configs(grid_from_args(args), settings).values())))


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, check everything, train the grid, print the table.

    Exit status: 0 when every point finished, 1 when any failed, 2 for bad input
    (nothing written), 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = sweep_parser().parse_args(argv)
    grid, settings, command = grid_from_args(args), run_settings_from_args(args), [PROG, *argv]
    try:
        resources = resources_from_args(args, settings)
        plan_sweep(args.out, grid, settings, command)  # bad input is refused before the folder is touched
        with locks.hold(args.out):
            check_writable(Path(args.out))
            plan = plan_sweep(args.out, grid, settings, command)
            if plan.added_points:
                print(f"extending the sweep in {plan.sweep_dir} by {plan.added_points} points (same run settings)")
            if plan.changed_settings:
                print(f"the points of {plan.sweep_dir} still to train take the new {', '.join(plan.changed_settings)}")
            outcomes = run_sweep(plan, resources, progress=not args.no_progress)
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
    "Resources",
    "SweepPlan",
    "Task",
    "check_sweep_arguments",
    "plan_sweep",
    "run_point",
    "run_sweep",
    "sweep_main",
    "sweep_parser",
]

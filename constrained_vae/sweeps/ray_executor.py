"""Where a sweep's points train: on Ray (this module), or in the sweep's own process
(:mod:`~constrained_vae.sweeps.local_executor`), as units of one bank each
(:func:`~constrained_vae.sweeps.tasks.group_banks`) trained by the same ``train_bank`` as ``run.py``'s.

On Ray each unit is one task.

Without an address the sweep starts Ray in its own process on this machine (and shuts it down
at the end); with ``--address`` (or ``RAY_ADDRESS``) it joins a running cluster (and leaves it
running), whose nodes must all see the sweep folder (a shared file system). A unit asks Ray for
``--cpus-per-run`` CPUs (its torch threads) and ``--gpus-per-run`` GPUs (a fraction lets several
units share one); ``--workers N`` is the shorthand for N units at once on this machine. The
sweep hands Ray no more units than the cluster can train at once, so a unit handed out is a
unit running. A point whose exception ends it fails alone; a unit whose worker process (or node)
dies is retried by Ray, at most ``--max-retries`` times, and resumes from its last checkpoints,
bit for bit. On Ctrl-C the running units are cancelled (Ray raises KeyboardInterrupt in each:
it writes a checkpoint at its current step and stops) and the next run resumes them.

``--executor auto`` (the default) trains on Ray where Ray is installed and in the sweep's process
where it is not; ``ray`` and ``local`` choose.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

try:
    import ray
except ImportError:  # a sweep on one machine trains in its own process (--executor local)
    ray = None

from constrained_vae.core.checks import check_positive_int
from constrained_vae.errors import ConfigError, SweepError
from constrained_vae.run.bank import Strategy
from constrained_vae.run.settings import MAX_THREADS
from constrained_vae.sweeps import ray_watchdog
from constrained_vae.sweeps.plan import SWEEP_FILE
from constrained_vae.sweeps.progress import PROGRESS_INTERVAL_S, Progress
from constrained_vae.sweeps.tasks import Outcome, Task, one_line, run_unit

DEFAULT_MAX_RETRIES = 3  # Ray's default for tasks
STOP_TIMEOUT_S = 60.0  # how long a stopped point may take to leave its step before it is killed
NODE_ID_CHARS = 8  # a Ray node as the report names it: the start of its id
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20  # points hand Ray only small configs and outcomes
CONNECT_TIMEOUT_S = 10.0  # for a cluster's head to answer --address
EXECUTORS = ("auto", "ray", "local")
RAY_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"
MAX_CPUS_PER_CORE = 2**20  # --cpus-per-run beyond this many times this machine's cores is a typo, not a cluster
MAX_GPUS_PER_RUN = 1024  # a point runs on one machine, and none has more GPUs
MAX_RETRIES = 2**31 - 1  # Ray's max_retries is a 32-bit integer
MORE_THAN_ANY_MACHINE = "more points at once than any machine has cores for"
# Default points per bank on each device kind (docs/sweeps.md, "Run banks"): on CPUs a bank is no faster per core than
# one point per process; on CUDA the study's 42 runs as one bank (provisional until measured on a GPU).
BANK_SIZES = {"cpu": 1, "cuda": 42}
DEFAULT_BANK_SIZE = BANK_SIZES["cpu"]


@dataclass(frozen=True)
class Resources:
    """Where the points train, in banks of how many, and what each unit asks of Ray.

    ``executor`` is ``ray`` or ``local`` (the sweep's own process, one unit after another).
    ``address`` is a Ray cluster to join (None: the Ray this process already runs, or
    one started here for the sweep). Every unit of at most ``bank_size`` points asks for ``cpus``
    CPUs (its torch threads are their whole number, at least 1) and ``gpus`` GPUs; ``workers`` caps
    the units trained at once; a unit whose worker dies is retried ``max_retries`` times.
    """

    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    workers: int | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    bank_size: int = DEFAULT_BANK_SIZE
    executor: str = "ray"
    bank_strategy: Strategy | None = None  # how a bank steps its members; None: its device's default

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


def default_bank_size(device: str | None) -> int:
    """The bank size a sweep on ``device`` (``--device``; None or ``auto``: CUDA when this machine has it) takes."""
    kind = (
        device if device in BANK_SIZES else "cuda" if device in (None, "auto") and torch.cuda.is_available() else "cpu"
    )
    return BANK_SIZES[kind]


def checked_resources(
    *,
    address: str | None,
    cpus_per_run: float | None,
    gpus_per_run: float,
    workers: int | None,
    max_retries: int,
    device: str | None,
    bank_size: int = DEFAULT_BANK_SIZE,
    executor: str = "auto",
    bank_strategy: Strategy | None = None,
) -> Resources:
    """The sweep's resources from its flags' values (None: not given), checked; :class:`ConfigError` for a bad one.

    ``address`` None falls back to ``$RAY_ADDRESS`` ("local" meaning none); ``device`` is the points' ``--device``;
    ``executor`` ``auto`` is ``ray`` where Ray is installed, else ``local``.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    address = None if address == "local" else address
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "auto":
        executor = "ray" if ray is not None else "local"
    if executor == "ray" and ray is None:
        raise ConfigError("--executor ray needs Ray, which is not installed here (pip install 'ray[default]')")
    cores = os.cpu_count() or 1
    check_positive_int("bank_size", bank_size)
    if workers is not None:
        check_positive_int("workers", workers, maximum=cores * MAX_CPUS_PER_CORE, reason=MORE_THAN_ANY_MACHINE)
    if executor == "local":
        if address is not None:
            raise ConfigError(
                f"the sweep trains in its own process (--executor local, or no Ray here), not on {address}"
            )
        if workers not in (None, 1):
            raise ConfigError(
                f"--workers {workers}: the sweep trains one bank at a time in its own process (--executor local, "
                "or no Ray here); put the points side by side with --bank-size instead"
            )
    elif workers is not None and address is not None:
        raise ConfigError(
            f"--workers counts points on this machine, but the sweep joins the Ray cluster at {address} "
            "(--address or RAY_ADDRESS): give --cpus-per-run and --gpus-per-run instead"
        )
    cpus = cpus_per_run
    if cpus is None:
        cpus = cores if executor == "local" else max(1, cores // workers) if workers else 1
    for flag, value in (("--cpus-per-run", cpus), ("--gpus-per-run", gpus_per_run)):
        if not math.isfinite(value) or value < 0 or (value == 0 and flag == "--cpus-per-run"):
            kind = "positive" if flag == "--cpus-per-run" else "non-negative"
            raise ConfigError(f"{flag} must be a {kind} number, got {value:g}")
    if cpus > cores * MAX_CPUS_PER_CORE:
        raise ConfigError(f"--cpus-per-run {cpus:g} is more than any machine has (this one has {cores} cores)")
    if cpus > MAX_THREADS:  # a point's CPUs are its torch threads
        raise ConfigError(f"--cpus-per-run {cpus:g}: a point's CPUs are its torch threads, at most {MAX_THREADS}")
    if gpus_per_run > MAX_GPUS_PER_RUN:
        raise ConfigError(f"--gpus-per-run {gpus_per_run:g} is more than any machine has (at most {MAX_GPUS_PER_RUN})")
    if max_retries < 0:
        raise ConfigError(f"--max-retries must be a non-negative integer, got {max_retries}")
    if max_retries > MAX_RETRIES:
        raise ConfigError(f"--max-retries must be at most {MAX_RETRIES} (Ray counts retries in a 32-bit integer)")
    if device == "cuda" and not gpus_per_run and executor == "ray":
        raise ConfigError("--device cuda needs --gpus-per-run (each unit's share of a GPU, e.g. 0.25)")
    resources = Resources(
        address, float(cpus), float(gpus_per_run), workers, max_retries, bank_size, executor, bank_strategy
    )
    if executor == "ray":
        try:
            ray.remote(**resources.task_options())(train_unit)
        except ValueError as error:  # what Ray refuses (a fraction finer than it counts)
            raise ConfigError(f"--cpus-per-run {cpus:g} / --gpus-per-run {gpus_per_run:g}: {error}") from None
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
    watchdog = None
    try:
        if resources.address is None:
            # Ray's note that it turned token authentication on (it stays on) would precede every sweep's output
            logging.getLogger(RAY_TOKEN_LOGGER).setLevel(logging.ERROR)
            ray.init(
                address="local",
                num_cpus=resources.local_cpus(),
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                log_to_driver=True,
                logging_level=logging.WARNING,
            )
            watchdog = ray_watchdog.start()  # a kill -9 of this process takes its Ray with it
        else:
            ray.init(address=resources.address, log_to_driver=True, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"join the Ray cluster at {resources.address}" if resources.address else "start Ray on this machine"
        raise SweepError(f"cannot {where}: {one_line(error)}") from None
    try:
        yield
    finally:
        ray.shutdown()
        ray_watchdog.stop(watchdog)


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


def run_on_ray(
    units: Sequence[Sequence[Task]], resources: Resources, finish: Callable[[Outcome], None], bar: Progress
) -> None:
    """Hand the units to Ray, no more at once than the cluster can train (and ``resources.workers``).

    ``finish`` gets each point's outcome as its unit ends. On any exception here
    (KeyboardInterrupt included) the units handed out are stopped, then it is re-raised.
    """
    remote_unit = ray.remote(**resources.task_options())(train_unit)
    cwd = os.getcwd()
    pending = [list(unit) for unit in units]
    running: dict[ray.ObjectRef, list[Task]] = {}
    try:
        while pending or running:
            limit = max(1, min(capacity(resources), resources.workers or len(units))) if pending else 0
            while pending and len(running) < limit:
                unit = pending.pop(0)
                running[remote_unit.remote(unit, resources.threads, cwd, resources.bank_strategy)] = unit
                for task in unit:
                    bar.started(task)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_INTERVAL_S)
            for ref in ready:
                for outcome in outcomes_of(ref, running.pop(ref), resources):
                    finish(outcome)
            bar.refresh()
    except BaseException:
        stop(list(running))
        raise


def train_unit(unit: Sequence[Task], threads: int, cwd: str, strategy: Strategy | None = None) -> list[Outcome]:
    """A Ray task: train one unit (a bank) on the node Ray chose, with ``threads`` torch threads.

    Relative paths mean what they meant to the sweep: the worker moves to the sweep's
    working folder ``cwd`` where the node has it. A node that does not see the sweep
    folder fails the unit's points rather than write run folders of its own.
    """
    gpus = ",".join(str(gpu) for gpu in ray.get_gpu_ids())
    if not gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a unit given no GPU trains on the CPU (with --device auto)
    torch.set_num_threads(threads)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    node = ray.get_runtime_context().get_node_id()[:NODE_ID_CHARS]
    record = unit[0].run_dir.parent / SWEEP_FILE
    if not record.is_file():
        reason = f"SweepError: node {node} does not see {record}; --out must be on a file system every node shares"
        return [Outcome(task.name, "failed", reason, node, gpus) for task in unit]
    return [dataclasses.replace(outcome, node=node, gpus=gpus) for outcome in run_unit(unit, strategy)]


def outcomes_of(ref: ray.ObjectRef, unit: Sequence[Task], resources: Resources) -> list[Outcome]:
    """The outcomes of a finished Ray task, or a failure for each point saying why it has none."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:  # something train_unit does not catch escaped it
        reason = one_line(error.cause or error)
    except ray.exceptions.RayError as error:  # its worker (or node) died, more often than it may be retried
        retries = f"{resources.max_retries} retries spent" if resources.max_retries else "no retries allowed"
        reason = f"worker process died ({retries}): {one_line(error)}"
    return [Outcome(task.name, "failed", reason) for task in unit]


def stop(refs: list[ray.ObjectRef]) -> None:
    """Stop the points handed to Ray as Ctrl-C stops ``run.py``: each writes a checkpoint at its step and ends.

    ``ray.cancel`` raises KeyboardInterrupt in each point; one still running after
    :data:`STOP_TIMEOUT_S` is killed (its last checkpoint is then the scheduled one before).
    """
    if not refs:
        return
    for ref in refs:
        ray.cancel(ref)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=STOP_TIMEOUT_S)
    for ref in left:
        ray.cancel(ref, force=True)

"""Where a sweep's points train: each one a Ray task calling the same ``train`` as ``run.py``.

Without an address the sweep starts Ray in its own process on this machine (and shuts it down
at the end); with ``--address`` (or ``RAY_ADDRESS``) it joins a running cluster (and leaves it
running), whose nodes must all see the sweep folder (a shared file system). A point asks Ray for
``--cpus-per-run`` CPUs (its torch threads) and ``--gpus-per-run`` GPUs (a fraction lets several
points share one); ``--workers N`` is the shorthand for N points at once on this machine. The
sweep hands Ray no more points than the cluster can train at once, so a point handed out is a
point running. A point whose exception ends it fails alone; one whose worker process (or node)
dies is retried by Ray, at most ``--max-retries`` times, and resumes from its last checkpoint,
bit for bit. On Ctrl-C the running points are cancelled (Ray raises KeyboardInterrupt in each:
it writes a checkpoint at its current step and stops) and the next run resumes them.
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

import ray
import torch

from constrained_vae.errors import ConfigError, SweepError
from constrained_vae.sweeps.plan import SWEEP_FILE
from constrained_vae.sweeps.progress import PROGRESS_INTERVAL_S, Progress
from constrained_vae.sweeps.tasks import Outcome, Task, one_line, run_point

DEFAULT_MAX_RETRIES = 3  # Ray's default for tasks
STOP_TIMEOUT_S = 60.0  # how long a stopped point may take to leave its step before it is killed
NODE_ID_CHARS = 8  # a Ray node as the report names it: the start of its id
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20  # points hand Ray only small configs and outcomes
CONNECT_TIMEOUT_S = 10.0  # for a cluster's head to answer --address


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


def checked_resources(
    *,
    address: str | None,
    cpus_per_run: float | None,
    gpus_per_run: float,
    workers: int | None,
    max_retries: int,
    device: str | None,
) -> Resources:
    """The sweep's resources from its flags' values (None: not given), checked; :class:`ConfigError` for a bad one.

    ``address`` None falls back to ``$RAY_ADDRESS`` ("local" meaning none); ``device`` is the points' ``--device``.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    address = None if address == "local" else address
    if workers is not None:
        if workers < 1:
            raise ConfigError(f"--workers must be a positive integer, got {workers}")
        if address is not None:
            raise ConfigError(
                f"--workers counts points on this machine, but the sweep joins the Ray cluster at {address} "
                "(--address or RAY_ADDRESS): give --cpus-per-run and --gpus-per-run instead"
            )
    cores = os.cpu_count() or 1
    cpus = cpus_per_run
    if cpus is None:
        cpus = max(1, cores // workers) if workers else 1
    for flag, value in (("--cpus-per-run", cpus), ("--gpus-per-run", gpus_per_run)):
        if not math.isfinite(value) or value < 0 or (value == 0 and flag == "--cpus-per-run"):
            kind = "positive" if flag == "--cpus-per-run" else "non-negative"
            raise ConfigError(f"{flag} must be a {kind} number, got {value:g}")
    if max_retries < 0:
        raise ConfigError(f"--max-retries must be a non-negative integer, got {max_retries}")
    if device == "cuda" and not gpus_per_run:
        raise ConfigError("--device cuda needs --gpus-per-run (each point's share of a GPU, e.g. 0.25)")
    resources = Resources(address, float(cpus), float(gpus_per_run), workers, max_retries)
    try:
        ray.remote(**resources.task_options())(train_point)
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
    try:
        if resources.address is None:
            ray.init(
                address="local",
                num_cpus=resources.local_cpus(),
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                log_to_driver=True,
                logging_level=logging.WARNING,
            )
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
    :data:`STOP_TIMEOUT_S` is killed (its last checkpoint is then the scheduled one before).
    """
    if not refs:
        return
    for ref in refs:
        ray.cancel(ref)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=STOP_TIMEOUT_S)
    for ref in left:
        ray.cancel(ref, force=True)

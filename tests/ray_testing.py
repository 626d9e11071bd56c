"""Helpers for the tests that run sweeps on Ray: short temporary folders, a Ray in the test, killing a whole sweep."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
import torch

from constrained_vae.run import folder, locks

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def ray_temp_dir() -> Iterator[Path]:
    """A short folder under /tmp for Ray's sessions (its socket paths must stay short), removed after."""
    path = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def local_ray(num_cpus: int, num_gpus: int = 0) -> Iterator[str]:
    """Ray in this process with ``num_cpus`` CPUs (sweeps run here use it); yields its address, for scripts to join.

    ``num_gpus`` GPUs are declared to Ray, which does not check them: it hands out their ids and shares, and a point
    given one still trains on the CPU where torch sees no CUDA device.
    """
    with ray_temp_dir() as temp:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            _temp_dir=str(temp),
            logging_level=logging.WARNING,
        )
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


def script(name: str, *args: str, cwd: Path, ray_dir: Path) -> subprocess.Popen:
    """``python experiments/NAME ARGS`` in a session of its own, its Ray (if it starts one) in ``ray_dir``."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "experiments" / name), *args],
        cwd=cwd,
        env=os.environ | {"RAY_TMPDIR": str(ray_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def session_members(session: int) -> list[int]:
    """The processes of a session: a script started by :func:`script`, and every process it started, Ray's workers
    included (Ray puts each in a process group of its own, but they stay in the session)."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            state, _, _, in_session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, IndexError, ValueError):
            continue  # not a process, or one that just ended
        if entry.name.isdigit() and int(in_session) == session and state != "Z":  # a zombie is dead already
            members.append(int(entry.name))
    return members


def kill_9(process: subprocess.Popen) -> tuple[str, str]:
    """kill -9 a script and everything it started (its Ray included), as a crash of the machine would; its output."""
    while members := session_members(process.pid):
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    return process.communicate()


def last_step(run_dir: Path) -> int:
    try:
        rows = folder.read_metrics(run_dir)
    except (OSError, ValueError):
        return 0
    return int(rows[-1]["step"]) if rows else 0


def lock_pid(run_dir: Path) -> int:
    """The process id in ``RUN/.lock``: the process training the run while it trains (the last one after)."""
    return int((run_dir / locks.LOCK_FILE).read_text())


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def numbers(run_dir: Path) -> list[dict[str, float]]:
    """The rows of ``RUN/metrics.csv`` without their wall-clock ``seconds``."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(run_dir)]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """The two runs logged the same numbers and ended at the same step with identical weights and λ."""
    assert numbers(run_dir) == numbers(reference)
    state = torch.load(run_dir / folder.CHECKPOINT_FILE, weights_only=True)
    expected = torch.load(reference / folder.CHECKPOINT_FILE, weights_only=True)
    assert state["step"] == expected["step"]
    for part in ("model", "likelihood"):
        assert all(torch.equal(state[part][k], expected[part][k]) for k in expected[part]), part
    assert state["multiplier"] == expected["multiplier"]

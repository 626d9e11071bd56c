"""Sweeps on Ray as a user meets them: a worker killed mid-run, a cluster of two nodes, the Ray a sweep starts.

Slow (about two minutes on 2 cores): ``python -m pytest -m slow``; CI runs it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ray_testing import assert_same_run, last_step, local_ray, lock_pid, ray_temp_dir, wait_for

from constrained_vae.cli.sweep import sweep_main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUN = (
    "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --batch-size 32 --steps 1500 "
    "--log-every 10 --checkpoint-every 100 --no-progress"
).split()
GRID = "--epsilon 1 2 --beta 1 2 --seeds 0 1".split()
NAMES = [f"{tag}-seed{seed}" for tag in ("eps1", "eps2", "beta1", "beta2") for seed in (0, 1)]
VICTIM = "eps1-seed0"  # the point whose worker is killed


@pytest.fixture(scope="module", autouse=True)
def two_cpus():
    """A local Ray with 2 CPUs, in this process: the sweeps below run on it."""
    with local_ray(num_cpus=2) as address:
        yield address


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The grid run with --workers 1 (one point at a time), nothing killed."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    assert sweep_main(["--out", str(out), *GRID, *RUN, "--workers", "1", "--cpus-per-run", "1"]) == 0
    return out


def statuses(stdout: str) -> dict[str, str]:
    rows = [line.split() for line in stdout.splitlines()]
    return {row[0]: row[1] for row in rows if row and row[0].startswith(("eps", "beta"))}


def sweep_killing_a_worker(out: Path, *args: str) -> tuple[int, int]:
    """Run a sweep here, 2 points at once, and kill -9 the worker process of VICTIM a third of the way through it.

    Its exit status and the killed process's id.
    """
    killed = []

    def kill_the_victims_worker() -> None:
        point = out / VICTIM
        wait_for(lambda: last_step(point) >= 500, 300, f"{VICTIM} to train 500 steps")
        assert last_step(point) < 1500, "the point finished before its worker could be killed"
        pid = lock_pid(point)  # the worker process training it
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_victims_worker)
    killer.start()
    code = sweep_main(["--out", str(out), *args, *RUN, "--cpus-per-run", "1"])
    killer.join()
    assert killed, "no worker was killed"
    return code, killed[0]


def test_a_worker_killed_mid_run_is_retried_from_its_checkpoint_and_the_sweep_ends_as_with_one_worker(
    tmp_path, reference, capsys
):
    code, killed = sweep_killing_a_worker(tmp_path / "sweep", *GRID, "--max-retries", "1")
    assert code == 0
    assert statuses(capsys.readouterr().out) == dict.fromkeys(NAMES, "done")
    assert lock_pid(tmp_path / "sweep" / VICTIM) != killed  # another worker finished it
    for name in NAMES:
        assert_same_run(tmp_path / "sweep" / name, reference / name)
    assert not (tmp_path / "sweep" / "failures.json").exists()


def test_with_no_retries_a_killed_worker_fails_its_point_alone_and_a_rerun_resumes_it(tmp_path, reference, capsys):
    out, grid = tmp_path / "sweep", ["--epsilon", "1", "2", "--seeds", "0"]
    code, _ = sweep_killing_a_worker(out, *grid, "--max-retries", "0")
    stdout = capsys.readouterr().out
    assert code == 1
    assert statuses(stdout) == {VICTIM: "failed", "eps2-seed0": "done"}
    reason = "worker process died (no retries allowed): WorkerCrashedError: The worker died unexpectedly"
    assert f"failed: {VICTIM}: {reason}" in stdout
    assert json.loads((out / "failures.json").read_text())[VICTIM].startswith(reason)
    assert 500 <= last_step(out / VICTIM) < 1500

    assert sweep_main(["--out", str(out), *grid, *RUN, "--cpus-per-run", "1"]) == 0
    assert statuses(capsys.readouterr().out) == {VICTIM: "resumed", "eps2-seed0": "skipped"}
    for name in (VICTIM, "eps2-seed0"):
        assert_same_run(out / name, reference / name)
    assert not (out / "failures.json").exists()


def ray_node(*args: str, temp_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    """``ray start --block`` on 127.0.0.1, one CPU, its own temporary folder; SIGTERM stops it and its processes."""
    temp_dir.mkdir()
    with open(temp_dir / "start.log", "w") as log:
        return subprocess.Popen(
            ["ray", "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={temp_dir}", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def started(node: subprocess.Popen, temp_dir: Path) -> bool:
    assert node.poll() is None, (temp_dir / "start.log").read_text()
    return "Ray runtime started" in (temp_dir / "start.log").read_text()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_sweep_joins_a_two_node_cluster_runs_points_on_both_and_leaves_it_running(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    env = os.environ | {"RAY_AUTH_MODE": "token"}  # the token of a cluster on this machine, for every node and driver
    with ray_temp_dir() as temp:
        nodes = []
        try:
            nodes.append(
                ray_node(
                    "--head",
                    f"--port={address.split(':')[1]}",
                    "--include-dashboard=false",
                    temp_dir=temp / "head",
                    env=env,
                )
            )
            wait_for(lambda: started(nodes[0], temp / "head"), 120, "the head node")
            nodes.append(ray_node(f"--address={address}", temp_dir=temp / "second", env=env))
            wait_for(lambda: started(nodes[1], temp / "second"), 120, "the second node")
            command = ["--out", "sweep", "--epsilon", "1", "2", "--seeds", "0", "1", *RUN, "--steps", "500"]
            command += ["--address", address]
            done = subprocess.run(
                [sys.executable, str(ROOT / "experiments" / "sweep.py"), *command],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr
            assert all(node.poll() is None for node in nodes)  # the sweep left the cluster it joined running
        finally:
            for node in nodes:
                node.send_signal(signal.SIGTERM)
            for node in nodes:
                node.wait(timeout=60)
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["point", "status", "KL", "NLL", "λ", "/", "β", "node"]
    rows = [line.split() for line in lines[1:5]]
    assert [row[1] for row in rows] == ["done"] * 4
    assert len({row[-1] for row in rows}) == 2  # the points ran on both nodes


def test_a_sweep_with_no_ray_to_join_starts_one_in_its_process_and_shuts_it_down(tmp_path):
    code = f"""
import os, ray
from constrained_vae.cli.sweep import sweep_main
assert not ray.is_initialized()
status = sweep_main({["--out", "sweep", "--epsilon", "1", *RUN, "--steps", "20", "--workers", "2"]!r})
children = [p for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{{p}}/stat").read().rsplit(")", 1)[1].split()[1] == str(os.getpid())]
print(status, ray.is_initialized(), len(children))
"""  # noqa: E501
    with ray_temp_dir() as temp:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=os.environ | {"RAY_TMPDIR": str(temp)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 False 0"  # finished; Ray shut down, none of its processes left


def test_a_sweep_that_starts_its_own_ray_prints_no_note_of_its_token(tmp_path):
    """Ray notes on stderr that it turned token authentication on, where ``RAY_AUTH_MODE`` is not set (a bare
    environment: this module's Ray sets it for the scripts that join it)."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path)), "PYTHONPATH": str(ROOT)}
    with ray_temp_dir() as temp:
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "experiments" / "sweep.py"),
                "--out",
                "sweep",
                "--epsilon",
                "1",
                *RUN,
                "--steps",
                "20",
            ],
            cwd=tmp_path,
            env=env | {"RAY_TMPDIR": str(temp)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    assert "Token authentication" not in done.stderr, done.stderr

"""Fault injection: kill -9 at random moments, then resume; two sweeps into one folder at once.

Each ends as the uninterrupted run ends (bit for bit on CPU), with no temporary file
left behind. A kill takes the script and every process it started: a sweep's Ray
(its own processes, and the workers training the points) goes with it, as in a crash
of the machine. Slow (a few minutes on 2 cores): ``python -m pytest -m slow``; CI runs it. The
sweep is killed 6 times there (a Ray start per kill makes each ~10 s); ``python -m pytest -m soak``
kills it 20 times, as the run is (about 4 minutes more).
"""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ray_testing import assert_same_run, kill_9, last_step, ray_temp_dir, script, session_members, wait_for

from constrained_vae.run import folder

KILLS = 20
SWEEP_KILLS = {"slow": 6, "soak": KILLS}  # kills of the sweep under `-m slow` (CI) and `-m soak`
RUN = (
    "--epsilon 1 --dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --batch-size 32 --steps "
    "3000 --log-every 10 --checkpoint-every 50 --no-progress"
).split()
SWEEP = (
    "--epsilon 1 2 --beta 1 --seeds 0 1 --dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 "
    "--batch-size 32 --steps 1500 --log-every 10 --checkpoint-every 50 --workers 2 --no-progress"
).split()
POINTS = [f"{tag}-seed{seed}" for tag in ("eps1", "eps2", "beta1") for seed in (0, 1)]
WORKERS = SWEEP.index("--workers")
BANK_SWEEP = [*SWEEP[:WORKERS], *SWEEP[WORKERS + 2 :], "--bank-size", "6", "--executor", "local"]  # one bank, no Ray
BANK_KILLS = 10


@pytest.fixture
def start(tmp_path):
    """``start(script, *args)``: a script run in ``tmp_path`` in a session of its own, its Ray's files outside it."""
    with ray_temp_dir() as ray_dir:
        yield lambda name, *args: script(name, *args, cwd=tmp_path, ray_dir=ray_dir)


@pytest.fixture(scope="module")
def sweep_reference(tmp_path_factory):
    """The sweep run once, uninterrupted: what every sweep below must end as."""
    folder = tmp_path_factory.mktemp("sweep-reference")
    with ray_temp_dir() as ray_dir:
        reference = script("sweep.py", *SWEEP, "--out", "reference", cwd=folder, ray_dir=ray_dir)
        assert reference.wait() == 0, reference.communicate()
    assert temporaries(folder) == []
    return folder / "reference"


def kill_at_a_random_moment(process: subprocess.Popen, rng: random.Random, progress, steps: int, kills: int) -> None:
    """Kill while starting up (a quarter of the time), or once training is up to 1/``kills`` of ``steps`` further on.

    Advancing by at most ``steps / kills`` per kill spreads the kills over the run instead of finishing it early.
    """
    if rng.random() < 0.25:
        deadline = time.monotonic() + rng.uniform(0.0, 3.0)
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
    else:
        target = min(steps, progress() + rng.randint(1, steps // kills))
        while progress() < target and process.poll() is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
    kill_9(process)


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


@pytest.mark.slow
def test_a_run_killed_20_times_ends_as_the_uninterrupted_run(tmp_path, start):
    reference = start("run.py", *RUN, "--out", "reference")
    assert reference.wait() == 0, reference.communicate()
    rng, run = random.Random(12), tmp_path / "run"
    for _ in range(KILLS):
        args = ["--resume", "run", "--no-progress"] if folder.is_started(run) else [*RUN, "--out", "run"]
        kill_at_a_random_moment(start("run.py", *args), rng, lambda: last_step(run), 3000, KILLS)
    finished = start("run.py", "--resume", "run", "--no-progress")
    _, err = finished.communicate()
    assert finished.returncode == 0, err
    assert_same_run(run, tmp_path / "reference")
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize(
    "kills",
    [pytest.param(count, marks=getattr(pytest.mark, mark), id=f"{count}-kills") for mark, count in SWEEP_KILLS.items()],
)
def test_a_sweep_killed_at_random_moments_ends_as_the_uninterrupted_sweep(tmp_path, start, sweep_reference, kills):
    sweep = killed_and_finished(start, tmp_path, SWEEP, random.Random(7), kills)
    for name in POINTS:
        assert_same_run(sweep / name, sweep_reference / name)
    assert not (sweep / "failures.json").exists()
    assert temporaries(tmp_path) == []


def killed_and_finished(start, tmp_path: Path, args: list[str], rng: random.Random, kills: int) -> Path:
    """``sweep.py ARGS --out sweep`` killed ``kills`` times at random moments, then run to its end; the folder."""
    sweep = tmp_path / "sweep"

    def progress() -> int:
        return sum(last_step(sweep / name) for name in POINTS)

    for _ in range(kills):
        kill_at_a_random_moment(start("sweep.py", *args, "--out", "sweep"), rng, progress, 6 * 1500, kills)
    finished = start("sweep.py", *args, "--out", "sweep")
    out, err = finished.communicate()
    assert finished.returncode == 0, out + err
    return sweep


@pytest.mark.slow
def test_a_bank_killed_at_random_moments_ends_as_the_uninterrupted_solo_points(tmp_path, start, sweep_reference):
    """The six points trained as one bank in the sweep's process, killed 10 times: each ends as its solo point."""
    sweep = killed_and_finished(start, tmp_path, BANK_SWEEP, random.Random(3), BANK_KILLS)
    for name in POINTS:
        assert_same_run(sweep / name, sweep_reference / name)
    assert temporaries(tmp_path) == []


@pytest.mark.slow
def test_a_sweep_whose_driver_alone_is_killed_leaves_none_of_its_ray_running(tmp_path, start):
    """kill -9 of the sweep's own process (not of its session): the Ray it started goes too."""
    sweep = tmp_path / "sweep"
    driver = start("sweep.py", *SWEEP, "--out", "sweep")
    wait_for(lambda: sum(last_step(sweep / name) for name in POINTS) > 0, 120, "a point to train")
    assert len(session_members(driver.pid)) > 3  # the driver, Ray's processes and its workers
    os.kill(driver.pid, signal.SIGKILL)
    driver.communicate()
    wait_for(lambda: not session_members(driver.pid), 30, "Ray's processes to end")


@pytest.mark.slow
def test_two_sweeps_into_one_folder_at_once_one_is_refused_the_other_completes(tmp_path, start, sweep_reference):
    """Kill a sweep part-way, then start the same command twice at once."""
    sweep = tmp_path / "sweep"
    first = start("sweep.py", *SWEEP, "--out", "sweep")
    while sum(last_step(sweep / name) for name in POINTS) < 1500 and first.poll() is None:
        time.sleep(0.01)
    kill_9(first)
    both = [start("sweep.py", *SWEEP, "--out", "sweep") for _ in range(2)]
    results = [(process.communicate(), process.returncode) for process in both]
    codes = sorted(code for _, code in results)
    assert codes == [0, 2], results
    ((_, refused_err), _) = next(result for result in results if result[1] == 2)
    winner = next(process for process, result in zip(both, results, strict=True) if result[1] == 0)
    assert refused_err.strip() == f"error: sweep is in use by process {winner.pid}; wait for it to finish, or stop it"
    for name in POINTS:
        assert_same_run(sweep / name, sweep_reference / name)
        steps = [row["step"] for row in folder.read_metrics(sweep / name)]
        assert steps == sorted(set(steps))  # no duplicated or out-of-order rows
    assert temporaries(tmp_path) == []

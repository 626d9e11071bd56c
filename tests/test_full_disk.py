"""A full disk loses nothing: training, resuming and a sweep on a file system with no space left each end
in one ``error: no space left …`` line with the last good checkpoint kept, and a sweep still prints its report.

The runs write into a small tmpfs mounted for the test (skipped where the test may not mount one); the
sweep's records are refused space by a failing write, as a full disk refuses it."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from constrained_vae.cli.sweep import sweep_main
from constrained_vae.run import folder

ROOT = Path(__file__).resolve().parents[1]
RUN = "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --batch-size 32 --epsilon 1 --no-progress".split()


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs at ``tmp_path / "disk"``, unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip() or 'mount failed'}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def run_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), *args], capture_output=True, text=True)


def fill(disk: Path) -> Path:
    """Take every byte left on ``disk`` (a file of what is left, perhaps empty); the file."""
    filler = disk / "filler"
    try:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    except OSError as error:
        assert error.errno == errno.ENOSPC
        return filler
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_training_into_a_full_disk_stops_with_one_line_and_resumes_once_space_is_freed(small_disk):
    run = small_disk / "run"
    reference = small_disk.parent / "reference"
    # metrics.csv outgrows the disk: ~60 bytes a row, a row a step
    args = [*RUN, "--steps", "6000", "--log-every", "1", "--checkpoint-every", "500"]
    stopped = run_py(*args, "--out", str(run))
    assert stopped.returncode == 2, stopped.stderr
    lines = stopped.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no space left on the device of {run}"), stopped.stderr
    state = torch.load(run / folder.CHECKPOINT_FILE, weights_only=True)
    assert state["step"] > 0 and f"the last checkpoint of {run} is at step {state['step']}" in lines[0]

    filler = fill(small_disk)  # resuming while the disk is still full: refused, nothing lost
    still_full = run_py("--resume", str(run), "--no-progress")
    assert still_full.returncode == 2 and still_full.stderr.startswith("error: no space left"), still_full.stderr
    assert len(still_full.stderr.strip().splitlines()) == 1
    assert torch.load(run / folder.CHECKPOINT_FILE, weights_only=True)["step"] == state["step"]

    filler.unlink(missing_ok=True)
    moved = small_disk.parent / "run"
    shutil.move(str(run), moved)  # room to finish: the run moved off the small disk
    finished = run_py("--resume", str(moved), "--no-progress")
    assert finished.returncode == 0, finished.stderr
    straight = run_py(*args, "--out", str(reference))
    assert straight.returncode == 0, straight.stderr
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(moved)]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(reference)]


def test_a_fresh_run_on_a_full_disk_is_refused_in_one_line(small_disk):
    fill(small_disk)
    refused = run_py(*RUN, "--steps", "20", "--out", str(small_disk / "run"))
    assert refused.returncode == 2 and refused.stderr.startswith("error: no space left"), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_sweep_whose_failures_cannot_be_recorded_still_prints_its_report(tmp_path, monkeypatch, capsys):
    from constrained_vae.sweeps import runner

    def no_space(sweep_dir, failures):
        raise OSError(errno.ENOSPC, "No space left on device", str(sweep_dir / "failures.json"))

    monkeypatch.setattr(runner, "write_failures", no_space)
    args = [*RUN, "--steps", "40", "--lr", "1e30", "--epsilon", "1", "2", "--executor", "local"]
    assert sweep_main([*args, "--out", str(tmp_path / "sweep")]) == 1
    out, err = capsys.readouterr()
    assert "eps1-seed0" in out and "failed" in out and "training diverged" in out  # the report, with its reasons
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"error: no space left on the device of {tmp_path / 'sweep'}"), err

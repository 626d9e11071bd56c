"""experiments/sweep.py: the grid, sweep.json, skip / resume / restart, failures, refusals, Ctrl-C, points on Ray.

The sweeps run in this process use a Ray started here for the module (a sweep uses the
Ray its process already runs, and leaves it running); scripts join it with
``--address``, but for the Ctrl-C test, whose script starts a Ray of its own.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch
from ray_testing import last_step, local_ray, ray_temp_dir, script, wait_for

from constrained_vae.cli.sweep import sweep_main, sweep_parser
from constrained_vae.run import folder, locks
from constrained_vae.sweeps import runner as sweep_module
from constrained_vae.sweeps.grid import Grid, Point
from constrained_vae.sweeps.ray_executor import Resources, train_unit
from constrained_vae.sweeps.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
FAST = "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --steps 20 --batch-size 32 --log-every 5".split()
GRID = "--epsilon 1 2 --beta 1 --seeds 0 1".split()
NAMES = ["eps1-seed0", "eps1-seed1", "eps2-seed0", "eps2-seed1", "beta1-seed0", "beta1-seed1"]
JOIN = ["--cpus-per-run", "1", "--address"]  # and the module Ray's address


def sweep_in_process(out, *args, workers=1):
    return sweep_main(["--out", str(out), *FAST, *args, "--workers", str(workers), "--no-progress"])


def files_of(folder):
    """Every file under ``folder`` but the lock files (they hold the last writer's pid): path → (mtime ns, bytes)."""
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != locks.LOCK_FILE
    }


def numbers(run_dir):
    """metrics.csv without the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(run_dir)]


def statuses(stdout):
    """{point: status} from the table the sweep ends with."""
    rows = [line.split() for line in stdout.splitlines()]
    return {row[0]: row[1] for row in rows if row and (row[0].startswith("eps") or row[0].startswith("beta"))}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """A Ray in this process, one CPU per core and one GPU declared to it (see ``local_ray``); its address."""
    with local_ray(num_cpus=os.cpu_count() or 1, num_gpus=1) as address:
        yield address


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, cluster):
    """The 2 ε × 1 β × 2 seeds grid, through the real script joining the module's Ray, one CPU per point."""
    cwd = tmp_path_factory.mktemp("finished")
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "sweep.py"), "--out", "sweep", *GRID, *FAST, *JOIN, cluster],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    return cwd / "sweep", done


@pytest.fixture
def sweep_copy(finished_sweep, tmp_path):
    """A copy of the finished sweep (file times kept) for a test to change."""
    return Path(shutil.copytree(finished_sweep[0], tmp_path / "sweep"))


def test_a_grid_makes_one_run_folder_per_point_and_a_sweep_record(finished_sweep):
    path, done = finished_sweep
    assert done.returncode == 0, done.stderr
    assert statuses(done.stdout) == dict.fromkeys(NAMES, "done")
    assert "done=6, running=0, failed=0, skipped=0, steps/s=" in done.stderr  # the progress bar's postfix
    assert sorted(p.name for p in path.iterdir()) == sorted([*NAMES, "sweep.json", locks.LOCK_FILE])
    record = json.loads((path / "sweep.json").read_text())
    assert record["command"] == ["experiments/sweep.py", "--out", "sweep", *GRID, *FAST, *JOIN, record["command"][-1]]
    assert record["grid"] == {"epsilon": [1.0, 2.0], "beta": [1.0], "seeds": [0, 1]}
    assert record["run_settings"] == dict(
        dataset="linear-gaussian", spectrum=[4.0, 2.0, 1.0], num_samples=256, steps=20, batch_size=32, log_every=5
    )
    assert [p["name"] for p in record["points"]] == NAMES
    assert record["points"][0] == {"name": "eps1-seed0", "mode": "constrained", "epsilon": 1.0, "beta": None, "seed": 0}
    assert record["points"][5] == {"name": "beta1-seed1", "mode": "fixed-beta", "epsilon": None, "beta": 1.0, "seed": 1}
    for point in record["points"]:
        summary = folder.read_summary(path / point["name"])
        assert summary["steps"] == 20
        assert (summary["mode"], summary["epsilon"], summary["beta"], summary["seed"]) == (
            point["mode"],
            point["epsilon"],
            point["beta"],
            point["seed"],
        )
    from constrained_vae.analysis.sweep_table import load_sweep

    assert len(load_sweep(path).runs) == 6  # what the analysis reads
    assert ray.is_initialized() and len(ray.nodes()) == 1  # the script left the Ray it joined running


def test_rerunning_skips_every_point_and_rewrites_nothing(sweep_copy, monkeypatch, capsys):
    before = files_of(sweep_copy)
    monkeypatch.setattr(sweep_module, "run_on_ray", lambda *a, **k: pytest.fail("a point was handed to Ray"))
    assert sweep_in_process(sweep_copy, *GRID) == 0
    assert statuses(capsys.readouterr().out) == dict.fromkeys(NAMES, "skipped")
    assert files_of(sweep_copy) == before


def test_ctrl_c_stops_every_point_at_its_step_and_the_next_run_resumes_them_exactly(tmp_path, capsys):
    """A real SIGINT to the script's process group (a terminal's Ctrl-C), the script starting its own Ray.

    It comes once both points have trained 50 steps: the later one is then mid-run (the
    earlier one may have finished, on a fast machine).
    """
    grid, names = ["--epsilon", "1", "2", "--steps", "1000", "--checkpoint-every", "400"], ["eps1-seed0", "eps2-seed0"]
    assert sweep_in_process(tmp_path / "straight", *grid, workers=2) == 0
    stopped = tmp_path / "stopped"
    with ray_temp_dir() as ray_dir:
        command = ["--out", "stopped", *FAST, *grid, "--workers", "2", "--no-progress"]
        running = script("sweep.py", *command, cwd=tmp_path, ray_dir=ray_dir)
        wait_for(lambda: min(last_step(stopped / name) for name in names) >= 50, 120, "both points to train")
        os.killpg(running.pid, signal.SIGINT)
        _, err = running.communicate(timeout=120)
    assert running.returncode == 130, err
    assert "interrupted: re-run the same command to finish the sweep in stopped" in err
    finished = {name: (stopped / name / folder.SUMMARY_FILE).exists() for name in names}
    assert not all(finished.values())
    for name in (name for name in names if not finished[name]):
        step = torch.load(stopped / name / folder.CHECKPOINT_FILE, weights_only=True)["step"]
        assert 50 <= step < 1000 and step % 400 != 0  # written at the step it was stopped, not a scheduled one
        assert last_step(stopped / name) <= step
    assert not (stopped / "failures.json").exists()

    capsys.readouterr()
    assert sweep_in_process(stopped, *grid, workers=2) == 0
    assert statuses(capsys.readouterr().out) == {name: "skipped" if finished[name] else "resumed" for name in names}
    for name in names:
        assert numbers(stopped / name) == numbers(tmp_path / "straight" / name)
        resumed, uninterrupted = (
            folder.read_summary(p / name) | {"seconds": None} for p in (stopped, tmp_path / "straight")
        )
        assert resumed == uninterrupted


def test_a_point_stopped_before_its_first_checkpoint_is_started_afresh(sweep_copy, capsys):
    point = sweep_copy / "eps2-seed1"
    (point / folder.CHECKPOINT_FILE).unlink()
    (point / folder.SUMMARY_FILE).unlink()
    assert sweep_in_process(sweep_copy, *GRID) == 0
    assert statuses(capsys.readouterr().out) == dict.fromkeys(NAMES, "skipped") | {"eps2-seed1": "done"}
    assert [row["step"] for row in folder.read_metrics(point)] == [5, 10, 15, 20]
    assert folder.read_summary(point)["steps"] == 20


def test_a_diverging_point_is_reported_and_recorded_and_the_others_finish(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep_in_process(out, "--epsilon", "1", "--beta", "1", "3e38") == 1
    stdout = capsys.readouterr().out
    assert statuses(stdout) == {"eps1-seed0": "done", "beta1-seed0": "done", "beta3e+38-seed0": "failed"}
    assert "failed: beta3e+38-seed0: TrainingDiverged: training diverged at step 1" in stdout
    failures = json.loads((out / "failures.json").read_text())
    assert list(failures) == ["beta3e+38-seed0"] and failures["beta3e+38-seed0"].startswith("TrainingDiverged: ")
    assert folder.read_summary(out / "eps1-seed0")["steps"] == 20
    assert folder.read_summary(out / "beta1-seed0")["steps"] == 20
    assert ray.is_initialized()  # the sweep leaves the Ray of its process running


def test_a_failure_is_cleared_when_the_point_later_succeeds(sweep_copy, capsys):
    (sweep_copy / "eps2-seed0" / folder.SUMMARY_FILE).unlink()  # the point needs resuming
    with locks.hold(sweep_copy / "eps2-seed0"):  # and someone else (a run.py --resume) holds it
        assert sweep_in_process(sweep_copy, *GRID) == 1
    reason = (
        f"FolderInUse: {sweep_copy}/eps2-seed0 is in use by process {os.getpid()}; wait for it to finish, or stop it"
    )
    assert f"failed: eps2-seed0: {reason}\n" in capsys.readouterr().out
    assert json.loads((sweep_copy / "failures.json").read_text()) == {"eps2-seed0": reason}

    assert sweep_in_process(sweep_copy, *GRID) == 0
    assert statuses(capsys.readouterr().out) == dict.fromkeys(NAMES, "skipped") | {"eps2-seed0": "resumed"}
    assert not (sweep_copy / "failures.json").exists()


def test_a_node_that_does_not_see_the_sweep_folder_fails_its_point_and_writes_nothing(tmp_path):
    """What a node without the shared file system meets: the sweep's record is not there."""
    config = Point(1.0, None, 0).config({"dataset": "linear-gaussian", "steps": 20}).resolved()
    task = Task("eps1-seed0", tmp_path / "elsewhere" / "eps1-seed0", config, "new")
    (outcome,) = ray.get(ray.remote(train_unit).remote([task], 1, str(tmp_path)))
    assert outcome.status == "failed" and outcome.node
    assert outcome.reason == (
        f"SweepError: node {outcome.node} does not see {tmp_path}/elsewhere/sweep.json; "
        "--out must be on a file system every node shares"
    )
    assert not (tmp_path / "elsewhere").exists()


def test_points_share_a_gpu_in_the_fractions_asked_and_the_report_names_it(tmp_path, capsys):
    """``--gpus-per-run 0.5``: Ray gives each point half of GPU 0, and the report has a ``gpu`` column.

    The module's Ray has one declared GPU; with no CUDA device torch trains the points on the CPU (``--device auto``).
    """
    assert Resources(cpus=1, gpus=0.125).points_on({"CPU": 16, "GPU": 1}) == 8  # 8 points share one GPU
    assert Resources(cpus=2, gpus=0.125).points_on({"CPU": 8, "GPU": 1}) == 4  # CPUs bind first
    assert Resources(cpus=1, gpus=0.5).points_on({"CPU": 16}) == 0  # a node without GPUs takes none
    args = ["--epsilon", "1", "2", *FAST, "--cpus-per-run", "1", "--gpus-per-run", "0.5", "--no-progress"]
    assert sweep_main(["--out", str(tmp_path / "sweep"), *args]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0][-1] == "gpu"
    expected = {"eps1-seed0": ("done", "0"), "eps2-seed0": ("done", "0")}
    assert {row[0]: (row[1], row[-1]) for row in rows[1:3]} == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cpus-per-run", "512"], "no Ray node can take a point of --cpus-per-run 512 --gpus-per-run 0: the largest"),
        (["--address", "127.0.0.1:1"], "cannot join the Ray cluster at 127.0.0.1:1: Connection refused"),
    ],
)
def test_a_cluster_that_cannot_train_the_points_is_refused_before_anything_is_written(tmp_path, capsys, args, message):
    assert sweep_main(["--out", str(tmp_path / "sweep"), "--epsilon", "1", *FAST, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and "\n" not in err
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilon", "5", "-2"], "--epsilon must be positive"),
        (["--epsilon", "0", "1"], "--epsilon must be positive"),
        (["--beta", "1", "nan"], "--beta must be a finite number"),
        (["--seeds", "0"], "give --epsilon and/or --beta"),
        (["--epsilon", "1", "--steps", "0"], "steps must be a positive integer"),
        (["--epsilon", "1", "--workers", "0"], "--workers must be a positive integer"),
        (["--epsilon", "1", "--workers", "2", "--address", "10.0.0.1:6379"], "give --cpus-per-run and --gpus-per-run"),
        (["--epsilon", "1", "--cpus-per-run", "0"], "--cpus-per-run must be a positive number"),
        (["--epsilon", "1", "--gpus-per-run", "-1"], "--gpus-per-run must be a non-negative number"),
        (["--epsilon", "1", "--gpus-per-run", "0.00001"], "cannot go beyond 0.0001"),
        (["--epsilon", "1", "--max-retries", "-1"], "--max-retries must be a non-negative integer"),
        (["--epsilon", "1", "--device", "cuda"], "--device cuda needs --gpus-per-run"),
        (["--epsilon", "0.1234561", "0.1234562"], "too close to tell apart"),
        (["--epsilon", "1", "--dataset", "dsprites-npz", "--data-path", "missing.npz"], "missing.npz"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert sweep_main(["--out", "sweep", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_with_other_run_settings_is_refused(sweep_copy, capsys):
    before = files_of(sweep_copy)
    assert sweep_in_process(sweep_copy, *GRID, "--lr", "0.001") == 2
    assert "other run settings (differs in --lr)" in capsys.readouterr().err
    assert sweep_in_process(sweep_copy, "--epsilon", "1", "--beta", "1", "--seeds", "0", "1") == 2
    assert "leaves out (--epsilon 2)" in capsys.readouterr().err
    assert files_of(sweep_copy) == before


def test_a_rerun_may_change_the_settings_a_resumed_run_may_change(sweep_copy, capsys):
    """As with ``run.py --resume``: the point still to train takes them, and sweep.json records the new command."""
    (sweep_copy / "eps1-seed0" / folder.SUMMARY_FILE).unlink()  # a point to resume
    assert sweep_in_process(sweep_copy, *GRID, "--checkpoint-every", "10", "--lr", "0.001") == 2
    assert "other run settings (differs in --lr)" in capsys.readouterr().err  # --lr alone is named
    assert sweep_in_process(sweep_copy, *GRID, "--checkpoint-every", "10", "--log-every", "10") == 0
    out = capsys.readouterr().out
    assert f"the points of {sweep_copy} still to train take the new --checkpoint-every, --log-every" in out
    assert statuses(out) == dict.fromkeys(NAMES, "skipped") | {"eps1-seed0": "resumed"}
    record = json.loads((sweep_copy / "sweep.json").read_text())
    assert record["run_settings"]["checkpoint_every"] == 10 and record["run_settings"]["log_every"] == 10
    assert record["command"] == [
        "experiments/sweep.py",
        "--out",
        str(sweep_copy),
        *FAST,
        *GRID,
        "--checkpoint-every",
        "10",
        "--log-every",
        "10",
        "--workers",
        "1",
        "--no-progress",
    ]
    assert json.loads((sweep_copy / "eps1-seed0" / folder.CONFIG_FILE).read_text())["log_every"] == 10


def test_a_grid_that_only_adds_points_extends_the_sweep(sweep_copy, capsys):
    # --lr 0.005 is the linear-gaussian default: the same run settings, spelled out.
    grid = "--epsilon 1 2 --beta 1 --seeds 0 1 2 --lr 0.005".split()
    assert sweep_in_process(sweep_copy, *grid) == 0
    stdout = capsys.readouterr().out
    assert "extending the sweep" in stdout and "by 3 points" in stdout
    new = ["eps1-seed2", "eps2-seed2", "beta1-seed2"]
    assert statuses(stdout) == dict.fromkeys(NAMES, "skipped") | dict.fromkeys(new, "done")
    record = json.loads((sweep_copy / "sweep.json").read_text())
    assert record["grid"]["seeds"] == [0, 1, 2] and len(record["points"]) == 9
    assert record["command"] == [
        "experiments/sweep.py",
        "--out",
        str(sweep_copy),
        *FAST,
        *grid,
        "--workers",
        "1",
        "--no-progress",
    ]


def test_out_must_be_new_empty_or_a_sweep_and_its_points_this_sweeps(sweep_copy, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert sweep_in_process(other, "--epsilon", "1") == 2
    assert "not empty and holds no sweep.json" in capsys.readouterr().err

    config = json.loads((sweep_copy / "eps1-seed0" / "config.json").read_text())
    (sweep_copy / "eps1-seed0" / "config.json").write_text(json.dumps(config | {"lr": 0.1}))
    assert sweep_in_process(sweep_copy, *GRID) == 2
    assert "eps1-seed0 holds a run that is not this sweep's point" in capsys.readouterr().err


def test_points_are_named_by_their_value_and_seed_and_seed_means_seeds():
    assert Point(20.0, None, 0).name == "eps20-seed0"
    assert Point(None, 0.5, 2).name == "beta0.5-seed2"
    args = sweep_parser().parse_args(["--out", "s", "--epsilon", "5", "5", "-0", "--seed", "3", "4"])
    grid = Grid.of(args.epsilon, args.beta or [], args.seeds)
    assert [p.name for p in grid.points()] == ["eps5-seed3", "eps5-seed4", "eps0-seed3", "eps0-seed4"]

"""experiments/sweep.py: the grid, sweep.json, skip / resume / restart, failures, refusals, parallel workers."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from constrained_vae import locks, runs
from constrained_vae import sweep as sweep_module
from constrained_vae.config import RunConfig
from constrained_vae.sweep import Grid, Outcome, Point, Task, run_in_processes, sweep_main, sweep_parser
from constrained_vae.training import train

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "linear-gaussian", "--spectrum", "4,2,1", "--num-samples", "256", "--steps", "20",
        "--batch-size", "32", "--log-every", "5"]  # fmt: skip
GRID = ["--epsilon", "1", "2", "--beta", "1", "--seeds", "0", "1"]
NAMES = ["eps1-seed0", "eps1-seed1", "eps2-seed0", "eps2-seed1", "beta1-seed0", "beta1-seed1"]


def sweep_in_process(out, *args, workers=1):
    return sweep_main(["--out", str(out), *args, *FAST, "--workers", str(workers), "--no-progress"])


def files_of(folder):
    """Every file under ``folder`` but the lock files (they hold the last writer's pid): path → (mtime ns, bytes)."""
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != locks.LOCK_FILE
    }


def numbers(run_dir):
    """metrics.csv without the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in runs.read_metrics(run_dir)]


def statuses(stdout):
    """{point: status} from the table the sweep ends with."""
    rows = [line.split() for line in stdout.splitlines()]
    return {row[0]: row[1] for row in rows if row and (row[0].startswith("eps") or row[0].startswith("beta"))}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """The 2 ε × 1 β × 2 seeds grid, through the real script with two worker processes."""
    cwd = tmp_path_factory.mktemp("finished")
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "sweep.py"), "--out", "sweep", *GRID, *FAST, "--workers", "2"],
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
    assert "done=6, failed=0, skipped=0" in done.stderr  # the progress bar's postfix
    assert sorted(p.name for p in path.iterdir()) == sorted([*NAMES, "sweep.json", locks.LOCK_FILE])
    record = json.loads((path / "sweep.json").read_text())
    assert record["command"] == ["experiments/sweep.py", "--out", "sweep", *GRID, *FAST, "--workers", "2"]
    assert record["grid"] == {"epsilon": [1.0, 2.0], "beta": [1.0], "seeds": [0, 1]}
    assert record["run_settings"] == dict(
        dataset="linear-gaussian", spectrum=[4.0, 2.0, 1.0], num_samples=256, steps=20, batch_size=32, log_every=5
    )
    assert [p["name"] for p in record["points"]] == NAMES
    assert record["points"][0] == {"name": "eps1-seed0", "mode": "constrained", "epsilon": 1.0, "beta": None, "seed": 0}
    assert record["points"][5] == {"name": "beta1-seed1", "mode": "fixed-beta", "epsilon": None, "beta": 1.0, "seed": 1}
    for point in record["points"]:
        summary = runs.read_summary(path / point["name"])
        assert summary["steps"] == 20
        assert (summary["mode"], summary["epsilon"], summary["beta"], summary["seed"]) == (
            point["mode"], point["epsilon"], point["beta"], point["seed"],
        )  # fmt: skip
    from constrained_vae.tradeoff import load_sweep  # here: worker processes import this module, keep it light

    assert len(load_sweep(path).runs) == 6  # what the analysis reads


def test_rerunning_skips_every_point_and_rewrites_nothing(sweep_copy, monkeypatch, capsys):
    before = files_of(sweep_copy)
    monkeypatch.setattr(sweep_module, "train", lambda *a, **k: pytest.fail("a finished point was trained again"))
    assert sweep_in_process(sweep_copy, *GRID) == 0
    assert statuses(capsys.readouterr().out) == dict.fromkeys(NAMES, "skipped")
    assert files_of(sweep_copy) == before


def test_an_interrupted_point_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path, monkeypatch, capsys):
    assert sweep_in_process(tmp_path / "straight", "--epsilon", "1") == 0

    def stopped_at_step_10(config, run_dir, **kwargs):
        train(dataclasses.replace(config, steps=10), run_dir, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "train", stopped_at_step_10)
    assert sweep_in_process(tmp_path / "stopped", "--epsilon", "1") == 130
    assert "re-run the same command" in capsys.readouterr().err
    point = tmp_path / "stopped" / "eps1-seed0"
    assert runs.read_metrics(point)[-1]["step"] == 10
    monkeypatch.undo()

    assert sweep_in_process(tmp_path / "stopped", "--epsilon", "1") == 0
    assert statuses(capsys.readouterr().out) == {"eps1-seed0": "resumed"}
    straight = tmp_path / "straight" / "eps1-seed0"
    assert numbers(point) == numbers(straight)
    resumed, uninterrupted = (runs.read_summary(p) | {"seconds": None} for p in (point, straight))
    assert resumed == uninterrupted


def test_a_point_stopped_before_its_first_checkpoint_is_started_afresh(sweep_copy, capsys):
    point = sweep_copy / "eps2-seed1"
    (point / runs.CHECKPOINT).unlink()
    (point / runs.SUMMARY).unlink()
    assert sweep_in_process(sweep_copy, *GRID) == 0
    assert statuses(capsys.readouterr().out) == dict.fromkeys(NAMES, "skipped") | {"eps2-seed1": "done"}
    assert [row["step"] for row in runs.read_metrics(point)] == [5, 10, 15, 20]
    assert runs.read_summary(point)["steps"] == 20


def test_a_diverging_point_is_reported_and_recorded_and_the_others_finish(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep_in_process(out, "--epsilon", "1", "--beta", "1", "1e39") == 1
    stdout = capsys.readouterr().out
    assert statuses(stdout) == {"eps1-seed0": "done", "beta1-seed0": "done", "beta1e+39-seed0": "failed"}
    assert "failed: beta1e+39-seed0: TrainingDiverged: training diverged at step 1" in stdout
    failures = json.loads((out / "failures.json").read_text())
    assert list(failures) == ["beta1e+39-seed0"] and failures["beta1e+39-seed0"].startswith("TrainingDiverged: ")
    assert runs.read_summary(out / "eps1-seed0")["steps"] == 20
    assert runs.read_summary(out / "beta1-seed0")["steps"] == 20


def test_a_failure_is_cleared_when_the_point_later_succeeds(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"

    def crash_on_eps2(config, run_dir, **kwargs):
        if config.epsilon == 2:
            raise RuntimeError("boom\nsecond line of the message")
        return train(config, run_dir, **kwargs)

    monkeypatch.setattr(sweep_module, "train", crash_on_eps2)
    assert sweep_in_process(out, "--epsilon", "1", "2") == 1
    assert "failed: eps2-seed0: RuntimeError: boom\n" in capsys.readouterr().out
    assert json.loads((out / "failures.json").read_text()) == {"eps2-seed0": "RuntimeError: boom"}
    monkeypatch.undo()

    assert sweep_in_process(out, "--epsilon", "1", "2") == 0
    assert statuses(capsys.readouterr().out) == {"eps1-seed0": "skipped", "eps2-seed0": "done"}
    assert not (out / "failures.json").exists()


def crash_or_finish(task: Task) -> Outcome:
    """A worker target whose process dies on the task called ``crash``."""
    if task.name == "crash":
        os._exit(3)
    return Outcome(task.name, "done")


def test_a_worker_process_that_dies_fails_its_point_alone(tmp_path):
    tasks = [Task(name, tmp_path / name, RunConfig(epsilon=1.0), "new") for name in ("a", "crash", "b")]
    outcomes = []
    run_in_processes(tasks, 2, outcomes.append, target=crash_or_finish)
    assert sorted(outcomes, key=lambda o: o.name) == [
        Outcome("a", "done"),
        Outcome("b", "done"),
        Outcome("crash", "failed", "worker process died (exit code 3)"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilon", "5", "-2"], "--epsilon must be non-negative"),
        (["--beta", "1", "nan"], "--beta must be a finite number"),
        (["--seeds", "0"], "give --epsilon and/or --beta"),
        (["--epsilon", "1", "--steps", "0"], "steps must be a positive integer"),
        (["--epsilon", "1", "--workers", "0"], "--workers must be a positive integer"),
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


def test_a_grid_that_only_adds_points_extends_the_sweep(sweep_copy, capsys):
    # --dual-lr 0.02 is the linear-gaussian default: the same run settings, spelled out.
    grid = ["--epsilon", "1", "2", "--beta", "1", "--seeds", "0", "1", "2", "--dual-lr", "0.02"]
    assert sweep_in_process(sweep_copy, *grid) == 0
    stdout = capsys.readouterr().out
    assert "extending the sweep" in stdout and "by 3 points" in stdout
    new = ["eps1-seed2", "eps2-seed2", "beta1-seed2"]
    assert statuses(stdout) == dict.fromkeys(NAMES, "skipped") | dict.fromkeys(new, "done")
    record = json.loads((sweep_copy / "sweep.json").read_text())
    assert record["grid"]["seeds"] == [0, 1, 2] and len(record["points"]) == 9
    assert record["command"] == [
        "experiments/sweep.py", "--out", str(sweep_copy), *grid, *FAST, "--workers", "1", "--no-progress",
    ]  # fmt: skip


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

"""experiments/run.py as a user meets it: flags, output, exit codes, one-line errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from constrained_vae.cli import run_main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "linear-gaussian", "--spectrum", "4,2,1", "--num-samples", "256", "--steps", "20",
        "--batch-size", "32", "--log-every", "5", "--no-progress"]  # fmt: skip


def run_script(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "run.py"), *args], cwd=cwd, capture_output=True, text=True
    )


def test_a_run_prints_where_it_is_and_its_final_figures(tmp_path):
    done = run_script("--epsilon", "1", *FAST, "--out", "r", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "run folder: r" in done.stdout
    for label in ("KL", "NLL", "λ", "ε = 1"):
        assert label in done.stdout
    assert (tmp_path / "r" / "summary.json").exists()


def test_without_out_the_run_goes_to_a_fresh_folder_under_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(["--beta", "2", *FAST]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("linear-gaussian-beta2-seed0-")
    assert f"run folder: {Path('runs') / run.name}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilon", "-1"], "--epsilon must be non-negative"),
        (["--epsilon", "nan"], "--epsilon must be a finite number"),
        (["--beta", "-0.5"], "--beta must be non-negative"),
        (["--beta", "inf"], "--beta must be a finite number"),
        ([], "exactly one of --epsilon"),
        (["--epsilon", "1", "--beta", "1"], "exactly one of --epsilon"),
        (["--epsilon", "1", "--steps", "0"], "steps must be a positive integer"),
        (["--epsilon", "1", "--dataset", "dsprites-npz"], "needs --data-path"),
        (["--epsilon", "1", "--dataset", "dsprites-npz", "--data-path", "missing.npz"], "missing.npz"),
        (["--epsilon", "1", "--device", "cuda"], None),  # error only where there is no GPU
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    if args[-1:] == ["cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        message = "no CUDA device"
    code = run_main([*args, "--out", "r", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_unknown_dataset_is_refused_by_the_parser(tmp_path):
    done = run_script("--epsilon", "1", "--dataset", "mnist", cwd=tmp_path)
    assert done.returncode == 2 and "invalid choice: 'mnist'" in done.stderr


def write_npz(path, imgs):
    n = imgs.shape[0]
    classes = np.zeros((n, 6), dtype=np.int64)
    classes[:, 5] = np.arange(n)
    np.savez(path, imgs=imgs, latents_values=classes.astype(np.float64), latents_classes=classes)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("not an npz"), "not"),
        (lambda p: np.savez(p, images=np.zeros((2, 64, 64), np.uint8)), "imgs"),
        (lambda p: write_npz(p, np.zeros((4, 32, 32), np.uint8)), "64"),
        (lambda p: write_npz(p, np.full((4, 64, 64), 3, np.uint8)), "must be 0 or 1"),
    ],
    ids=["not-npz", "wrong-keys", "wrong-shape", "outside-0-1"],
)
def test_bad_npz_data_is_refused(tmp_path, monkeypatch, capsys, make, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data.npz"
    make(path)
    code = run_main(["--epsilon", "1", "--dataset", "dsprites-npz", "--data-path", str(path), "--out", "r"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_existing_run_folder_and_corrupt_checkpoint(tmp_path):
    assert run_script("--epsilon", "1", *FAST, "--out", "r", cwd=tmp_path).returncode == 0
    again = run_script("--epsilon", "1", *FAST, "--out", "r", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"\x00garbage")
    resumed = run_script("--resume", "r", "--steps", "40", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 2 and "corrupt" in resumed.stderr
    assert resumed.stderr.strip().count("\n") == 0


def test_resume_extends_a_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(["--epsilon", "1", *FAST, "--out", "r"]) == 0
    assert run_main(["--resume", "r", "--steps", "40", "--no-progress"]) == 0
    assert "of 40 steps" in capsys.readouterr().out
    assert run_main(["--resume", "r", "--epsilon", "3", "--no-progress"]) == 2
    assert "differs from the run's" in capsys.readouterr().err

"""experiments/run.py as a user meets it: flags, output, exit codes, one-line errors."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from constrained_vae.cli.run import run_main
from constrained_vae.run import folder

ROOT = Path(__file__).resolve().parents[1]
FAST = (
    "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --steps 20 --batch-size 32 --log-every "
    "5 --no-progress"
).split()


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
        (["--epsilon", "-1"], "--epsilon must be positive"),
        (["--epsilon", "0"], "--epsilon must be positive"),
        (["--beta", "0"], "--beta must be positive"),
        (["--epsilon", "1", "--seed", "-1"], "--seed must be an integer from 0 to"),
        (["--epsilon", "1", "--seed", "99999999999999999999999"], "--seed must be an integer from 0 to"),
        (["--epsilon", "1", "--dual-update", "log", "--dual-kp", "2"], "--dual-kp does not apply to --dual-update log"),
        (
            ["--epsilon", "1", "--dual-update", "gradient", "--dual-ema", "0.5"],
            "--dual-ema does not apply to --dual-update gradient",
        ),
        (["--epsilon", "nan"], "--epsilon must be a finite number"),
        (["--beta", "-0.5"], "--beta must be positive"),
        (["--beta", "inf"], "--beta must be a finite number"),
        ([], "exactly one of --epsilon"),
        (["--epsilon", "1", "--beta", "1"], "exactly one of --epsilon"),
        (["--epsilon", "1", "--steps", "0"], "steps must be a positive integer"),
        (["--epsilon", "1", "--dataset", "dsprites-npz"], "needs --data-path"),
        (["--epsilon", "1", "--dataset", "dsprites-npz", "--data-path", "missing.npz"], "missing.npz"),
        (["--epsilon", "1", "--model", "dlib-conv", "--dataset", "digits"], "--model dlib-conv is for 64×64 images"),
        (["--epsilon", "1", "--model", "mlp"], "--model mlp is for flat data, which --dataset dsprites does not hold"),
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


@pytest.mark.parametrize("out", ["/proc/x/run", "/sys/x", "afile/sub", "afile"])
def test_an_out_folder_that_cannot_be_made_is_one_line_exit_2(tmp_path, monkeypatch, capsys, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    code = run_main(["--epsilon", "1", *FAST, "--out", out])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and out in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilon", "1", "--spectrum", "a,b"], "--spectrum must be comma-separated numbers"),
        (["--epsilon", "abc"], "argument --epsilon: invalid float value: 'abc'"),
        (["--epsilon", "1", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_flags_argparse_refuses_are_one_line_too(tmp_path, args, message):
    done = run_script(*args, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    err = done.stderr.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err and "usage" not in err


def test_a_batch_larger_than_the_dataset_is_refused_before_anything_is_allocated(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--epsilon", "1", "--dataset", "digits", "--batch-size", "10000000", "--no-progress"]
    code = run_main([*args, "--out", "r"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err == (
        "error: --batch-size 10000000 is larger than the dataset (1797 examples of digits); "
        "batches are drawn from it, so use at most 1797"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "failure",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried ..."),
        MemoryError(),
    ],
    ids=["cuda", "cpu", "python"],
)
def test_running_out_of_memory_is_a_clear_error_and_keeps_what_was_trained(tmp_path, monkeypatch, capsys, failure):
    from constrained_vae.core.objectives import Optimization
    from constrained_vae.run import folder

    monkeypatch.chdir(tmp_path)
    original, calls = Optimization.step, {"n": 0}

    def step(self, x, noise, fail_at):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise failure
        return original(self, x, noise)

    monkeypatch.setattr(Optimization, "step", lambda self, x, noise=None: step(self, x, noise, fail_at=1))
    code = run_main(["--epsilon", "1", *FAST, "--out", "r"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("error: out of memory in step 1 with --batch-size 32") and "nothing was written" in err
    assert not (tmp_path / "r").exists()

    calls["n"] = 0
    monkeypatch.setattr(Optimization, "step", lambda self, x, noise=None: step(self, x, noise, fail_at=13))
    assert run_main(["--epsilon", "1", *FAST, "--checkpoint-every", "10", "--out", "r"]) == 2
    err = capsys.readouterr().err
    assert "out of memory in step 13" in err and "the last checkpoint is in r" in err
    assert torch.load(tmp_path / "r" / folder.CHECKPOINT_FILE, weights_only=True)["step"] == 10


def test_ctrl_c_writes_a_checkpoint_says_how_to_continue_and_exits_130(tmp_path):
    from constrained_vae.run import folder

    args = ["--epsilon", "1", *FAST[:-3], "--steps", "1500", "--checkpoint-every", "1000", "--no-progress"]
    straight = run_script(*args, "--out", "straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    running = subprocess.Popen(
        [sys.executable, str(ROOT / "experiments" / "run.py"), *args, "--out", "r"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (tmp_path / "r" / "metrics.csv").exists() or len(folder.read_metrics(tmp_path / "r")) < 5:
        assert running.poll() is None, running.communicate()
        time.sleep(0.05)
    running.send_signal(signal.SIGINT)
    _, err = running.communicate(timeout=60)
    step = torch.load(tmp_path / "r" / folder.CHECKPOINT_FILE, weights_only=True)["step"]
    assert running.returncode == 130
    assert err.strip() == f"interrupted at step {step}; continue with: python experiments/run.py --resume r"
    assert 100 <= step < 1500 and step % 1000 != 0  # at the step it was stopped, not at a scheduled checkpoint
    resumed = run_script("--resume", "r", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr

    def numbers(run):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(tmp_path / run)]

    assert numbers("r") == numbers("straight")


def test_help_states_every_default():
    from constrained_vae.cli.run import run_parser
    from constrained_vae.cli.sweep import sweep_parser

    text = " ".join(run_parser().format_help().split())
    assert "--batch-size BATCH_SIZE examples per step, drawn with replacement; default: 64 (dsprites" in text
    assert "--seed SEED seeds the model's initialisation, batches and samples (default: 0)" in text
    sweep_help = " ".join(sweep_parser().format_help().split())
    assert "--steps STEPS optimisation steps of every point; default: 3000" in sweep_help
    assert "--resume" not in sweep_help


def test_threads_and_compile_are_recorded_and_may_change_on_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(["--epsilon", "1", *FAST, "--threads", "1", "--no-compile", "--out", "r"]) == 0
    config = folder.read_config(tmp_path / "r")
    assert (config.threads, config.compile) == (1, False)
    assert run_main(["--resume", "r", "--steps", "25", "--threads", "2", "--no-progress"]) == 0
    assert folder.read_config(tmp_path / "r").threads == 2
    assert run_main(["--epsilon", "1", *FAST, "--threads", "0", "--out", "bad"]) == 2
    assert "threads must be a positive integer" in capsys.readouterr().err


def test_a_run_needs_none_of_the_packages_a_gpu_machine_lacks(tmp_path):
    """The GPU machines this project is measured on have torch, numpy, scipy, pandas, scikit-learn, matplotlib,
    tqdm, pytest and hypothesis (cooper travels as a wheel), but not Ray, PyYAML, TensorBoard or h5py."""
    code = (
        "import sys\n"
        "for name in ('ray', 'yaml', 'tensorboard', 'h5py'):\n"
        "    sys.modules[name] = None\n"
        "from constrained_vae.cli.run import run_main\n"
        "sys.exit(run_main(sys.argv[1:]))\n"
    )
    args = ["--epsilon", "2", "--dataset", "linear-gaussian", "--steps", "5", "--no-progress", "--out", "r"]
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r" / folder.SUMMARY_FILE).exists()

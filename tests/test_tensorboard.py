"""RUN/tensorboard/: read back with TensorBoard's own readers (its event accumulator and multiplexer)."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator, event_multiplexer

from constrained_vae.cli.run import run_main
from constrained_vae.cli.sweep import sweep_main
from constrained_vae.run import folder
from constrained_vae.run.loop import resume_config, train, train_bank
from constrained_vae.run.settings import RunConfig
from constrained_vae.run.tensorboard import wait_for_a_later_second

ROOT = Path(__file__).resolve().parents[1]
EVERYTHING = {event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0}


def dsprites(**overrides) -> RunConfig:
    settings = dict(
        dataset="dsprites",
        epsilon=5.0,
        steps=20,
        batch_size=8,
        latent_dim=3,
        log_every=5,
        checkpoint_every=10,
        threads=1,
        tensorboard=True,
    )
    return RunConfig(**(settings | overrides))


def vectors(**overrides) -> RunConfig:
    settings = dict(
        dataset="linear-gaussian",
        epsilon=2.0,
        spectrum=[9.0, 3.0, 1.0],
        num_samples=256,
        steps=20,
        batch_size=32,
        log_every=5,
        checkpoint_every=10,
        tensorboard=True,
    )
    return RunConfig(**(settings | overrides))


def read_log(run_dir: Path) -> event_accumulator.EventAccumulator:
    log = event_accumulator.EventAccumulator(str(run_dir / folder.TENSORBOARD_DIR), size_guidance=EVERYTHING)
    return log.Reload()


def scalar_steps(log, tag: str) -> list[int]:
    return [event.step for event in log.Scalars(tag)]


def image_steps(log, tag: str) -> list[int]:
    return [event.step for event in log.Images(tag)]


def test_a_dsprites_run_logs_every_row_of_metrics_csv_and_images_at_every_checkpoint(tmp_path):
    train(dsprites(), tmp_path / "run", progress=False)
    log = read_log(tmp_path / "run")
    rows = folder.read_metrics(tmp_path / "run")
    assert set(log.Tags()["scalars"]) == {"nll", "kl", "loss", "epsilon", "lambda", "effective_beta"}
    for tag, column in [("nll", "nll"), ("kl", "kl"), ("epsilon", "epsilon"), ("lambda", "multiplier")]:
        assert scalar_steps(log, tag) == [5, 10, 15, 20]
        assert [event.value for event in log.Scalars(tag)] == pytest.approx([row[column] for row in rows], rel=1e-6)
    assert [e.value for e in log.Scalars("effective_beta")] == [e.value for e in log.Scalars("lambda")]
    for tag in ("reconstructions", "latent_traversals"):
        assert image_steps(log, tag) == [0, 10, 20]
    reconstructions = log.Images("reconstructions")[-1]
    assert (reconstructions.width, reconstructions.height) == (8 * 66 - 2, 2 * 66 - 2)  # 8 pairs of 64×64, 2 px gaps
    traversals = log.Images("latent_traversals")[-1]
    assert (traversals.width, traversals.height) == (11 * 66 - 2, 3 * 66 - 2)  # 11 values × 3 latents
    config = json.loads((tmp_path / "run" / folder.CONFIG_FILE).read_text())
    assert config["tensorboard"] is True


def test_logging_to_tensorboard_does_not_change_the_runs_numbers(tmp_path):
    train(dsprites(steps=6, log_every=2, checkpoint_every=3), tmp_path / "logged", progress=False)
    train(dsprites(steps=6, log_every=2, checkpoint_every=3, tensorboard=False), tmp_path / "plain", progress=False)
    assert not (tmp_path / "plain" / folder.TENSORBOARD_DIR).exists()

    def numbers(run_dir):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(run_dir)]

    assert numbers(tmp_path / "logged") == numbers(tmp_path / "plain")
    logged, plain = (torch.load(tmp_path / name / folder.CHECKPOINT_FILE) for name in ("logged", "plain"))
    assert all(torch.equal(logged["model"][key], plain["model"][key]) for key in plain["model"])


def test_a_fixed_beta_run_names_its_multiplier_beta_and_vector_data_has_no_images(tmp_path):
    train(vectors(epsilon=None, beta=3.0), tmp_path / "run", progress=False)
    log = read_log(tmp_path / "run")
    assert set(log.Tags()["scalars"]) == {"nll", "kl", "loss", "beta", "effective_beta"}
    assert [event.value for event in log.Scalars("beta")] == [3.0] * 4
    assert log.Tags()["images"] == []


def test_resume_after_a_crash_between_checkpoints_logs_no_step_twice(tmp_path):
    """A run killed at step 30 whose last checkpoint is step 10: TensorBoard shows each step once, as metrics.csv."""
    config = dsprites(steps=30, log_every=5, checkpoint_every=10)
    train(config, tmp_path / "crashed", progress=False)
    train(dsprites(steps=10, log_every=5, checkpoint_every=10), tmp_path / "at10", progress=False)
    (tmp_path / "crashed" / folder.CHECKPOINT_FILE).write_bytes(
        (tmp_path / "at10" / folder.CHECKPOINT_FILE).read_bytes()
    )
    train(resume_config(tmp_path / "crashed", {}), tmp_path / "crashed", resume=True, progress=False)
    assert len(list((tmp_path / "crashed" / folder.TENSORBOARD_DIR).iterdir())) == 2  # an event file per writer
    log = read_log(tmp_path / "crashed")
    rows = folder.read_metrics(tmp_path / "crashed")
    for tag in ("nll", "kl", "lambda", "epsilon", "effective_beta"):
        assert scalar_steps(log, tag) == [5, 10, 15, 20, 25, 30]
    assert [event.value for event in log.Scalars("nll")] == pytest.approx([row["nll"] for row in rows], rel=1e-6)
    for tag in ("reconstructions", "latent_traversals"):
        assert image_steps(log, tag) == [0, 10, 20, 30]


def test_a_resumed_run_may_turn_tensorboard_on_and_old_configs_without_the_setting_load(tmp_path):
    """A run from before the setting existed: its config.json has no ``tensorboard`` key."""
    run_dir = tmp_path / "run"
    train(vectors(tensorboard=False), run_dir, progress=False)
    path = run_dir / folder.CONFIG_FILE
    values = json.loads(path.read_text())
    del values["tensorboard"]
    path.write_text(json.dumps(values))
    assert folder.read_config(run_dir).tensorboard is False
    train(resume_config(run_dir, {"steps": 30, "tensorboard": True}), run_dir, resume=True, progress=False)
    assert scalar_steps(read_log(run_dir), "lambda") == [20, 25, 30]  # from the checkpoint's row on
    assert json.loads(path.read_text())["tensorboard"] is True
    train(resume_config(run_dir, {"steps": 40, "tensorboard": False}), run_dir, resume=True, progress=False)
    assert scalar_steps(read_log(run_dir), "lambda") == [20, 25, 30]


def test_every_member_of_a_bank_writes_its_own_log(tmp_path):
    configs = [dsprites(steps=4, log_every=2, checkpoint_every=4, seed=seed) for seed in (0, 1)]
    run_dirs = [tmp_path / "a", tmp_path / "b"]
    train_bank(configs, run_dirs, resume=[False, False], progress=False, strategy="threaded")
    logs = [read_log(run_dir) for run_dir in run_dirs]
    for log, run_dir in zip(logs, run_dirs, strict=True):
        assert [event.value for event in log.Scalars("kl")] == pytest.approx(
            [row["kl"] for row in folder.read_metrics(run_dir)], rel=1e-6
        )
        assert image_steps(log, "reconstructions") == [0, 4]
    images = [log.Images("latent_traversals")[-1].encoded_image_string for log in logs]
    assert images[0] != images[1]  # each member's own model


def test_a_sweep_with_tensorboard_shows_each_point_as_a_run_named_by_its_folder(tmp_path):
    fast = "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --steps 10 --batch-size 32 --log-every 5"
    args = ["--out", str(tmp_path / "sweep"), *fast.split(), "--epsilon", "1", "--beta", "1"]
    assert sweep_main([*args, "--tensorboard", "--executor", "local", "--no-progress"]) == 0
    multiplexer = event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "sweep")).Reload()
    assert set(multiplexer.Runs()) == {"eps1-seed0/tensorboard", "beta1-seed0/tensorboard"}
    assert "lambda" in multiplexer.Runs()["eps1-seed0/tensorboard"]["scalars"]
    assert "beta" in multiplexer.Runs()["beta1-seed0/tensorboard"]["scalars"]
    assert [event.step for event in multiplexer.Scalars("eps1-seed0/tensorboard", "kl")] == [5, 10]


def test_a_sweep_re_run_may_turn_tensorboard_on_for_the_points_still_to_train(tmp_path, capsys):
    fast = "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --batch-size 32 --log-every 5".split()
    args = ["--out", str(tmp_path / "sweep"), *fast, "--steps", "10", "--executor", "local", "--no-progress"]
    assert sweep_main([*args, "--epsilon", "1"]) == 0
    assert sweep_main([*args, "--epsilon", "1", "2", "--tensorboard"]) == 0
    assert "take the new --tensorboard" in capsys.readouterr().out
    assert not (tmp_path / "sweep" / "eps1-seed0" / folder.TENSORBOARD_DIR).exists()  # finished before: skipped
    assert scalar_steps(read_log(tmp_path / "sweep" / "eps2-seed0"), "kl") == [5, 10]
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["run_settings"]["tensorboard"] is True


@pytest.fixture
def without_tensorboard(monkeypatch):
    """As if the tensorboard package were not installed."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )


def test_tensorboard_without_its_package_is_one_error_line_saying_how_to_install_it(
    tmp_path, capsys, without_tensorboard
):
    fast = "--dataset linear-gaussian --num-samples 256 --steps 10 --tensorboard --no-progress".split()
    assert run_main(["--epsilon", "1", *fast, "--out", str(tmp_path / "run")]) == 2
    assert sweep_main(["--epsilon", "1", *fast, "--out", str(tmp_path / "sweep"), "--executor", "local"]) == 2
    for line in capsys.readouterr().err.strip().splitlines():
        assert (
            line.startswith("error: --tensorboard needs the tensorboard package") and "pip install tensorboard" in line
        )
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_a_run_without_tensorboard_does_not_import_it(tmp_path):
    code = (
        "import sys; from constrained_vae.run.loop import train; from constrained_vae.run.settings import RunConfig; "
        "train(RunConfig(epsilon=1.0, dataset='linear-gaussian', num_samples=64, steps=2, batch_size=8), "
        f"{str(tmp_path / 'run')!r}, progress=False); "
        "print(sorted(m for m in sys.modules if m == 'tensorboard' or m.startswith('torch.utils.tensorboard')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_a_writer_opened_in_the_second_of_the_newest_event_file_waits_for_the_next_second(tmp_path):
    """Readers take a folder's event files in name order, and a name begins with the second it was opened in."""
    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now:010d}.host.99999.9").touch()
    wait_for_a_later_second(tmp_path)
    assert int(time.time()) > now

"""The trainer and the run folder: reproducibility, exact resume, divergence, contract."""

import json
import math

import pytest
import torch

from constrained_vae.core.objectives import Optimization
from constrained_vae.errors import CheckpointError, ConfigError, RunFolderError, TrainingDiverged
from constrained_vae.run import folder
from constrained_vae.run.loop import resume_config, train
from constrained_vae.run.settings import RunConfig


def tiny(**overrides) -> RunConfig:
    settings = dict(
        epsilon=2.0,
        dataset="linear-gaussian",
        spectrum=[9.0, 3.0, 1.0],
        num_samples=512,
        steps=40,
        batch_size=32,
        log_every=5,
        checkpoint_every=10,
    )
    return RunConfig(**(settings | overrides))


def numbers(rows):
    """metrics.csv without the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def log_text(run_dir):
    """metrics.csv as written, byte for byte, without the wall-clock column (the last)."""
    lines = (run_dir / folder.TRAINING_LOG).read_bytes().splitlines(keepends=True)
    return [line.rsplit(b",", 1)[0] for line in lines]


def model_state(run_dir):
    return torch.load(run_dir / folder.CHECKPOINT_FILE, weights_only=False)["model"]


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_run_folder_has_the_contract_files_and_summary_fields(tmp_path):
    summary = train(tiny(), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.csv", "summary.json", "checkpoint.pt"}
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 0 and config["mode"] == "constrained" and config["epsilon"] == 2.0
    assert {"torch", "cooper", "python", "constrained_vae"} <= set(config["versions"])
    rows = folder.read_metrics(run)
    assert list(rows[0]) == list(folder.TRAINING_LOG_COLUMNS)
    assert [r["step"] for r in rows] == list(range(5, 41, 5))
    assert all(r["epsilon"] == 2.0 for r in rows)
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == summary
    for key in ("mode", "epsilon", "beta", "steps", "seconds", "kl", "nll", "multiplier", "multiplier_std"):
        assert key in summary
    # The tail is the last 10% (4 steps): the row at step 40, which averages steps 36–40, so 5 steps.
    assert summary["beta"] is None and summary["steps"] == 40 and summary["tail_steps"] == 5
    tail = [r for r in rows if r["step"] > 36]
    assert summary["kl"] == pytest.approx(sum(r["kl"] for r in tail) / len(tail))
    assert isinstance(summary["constraint_satisfied"], bool)


def test_fixed_beta_logs_beta_as_the_multiplier(tmp_path):
    summary = train(tiny(epsilon=None, beta=3.0), tmp_path / "run", progress=False)
    rows = folder.read_metrics(tmp_path / "run")
    assert all(r["multiplier"] == 3.0 for r in rows)
    assert all(math.isnan(r["epsilon"]) for r in rows)
    assert summary["epsilon"] is None and summary["beta"] == 3.0 and summary["constraint_satisfied"] is None
    assert summary["multiplier"] == 3.0 and summary["multiplier_std"] == 0.0


def test_same_seed_and_config_give_the_same_numbers(tmp_path):
    train(tiny(), tmp_path / "a", progress=False)
    train(tiny(), tmp_path / "b", progress=False)
    train(tiny(seed=1), tmp_path / "c", progress=False)
    assert numbers(folder.read_metrics(tmp_path / "a")) == numbers(folder.read_metrics(tmp_path / "b"))
    assert numbers(folder.read_metrics(tmp_path / "a")) != numbers(folder.read_metrics(tmp_path / "c"))


@pytest.mark.parametrize(
    "config",
    [
        tiny(),
        tiny(epsilon=None, beta=2.0),
        RunConfig(
            dataset="digits",
            epsilon=5.0,
            steps=20,
            batch_size=16,
            log_every=4,
            checkpoint_every=7,
        ),
        RunConfig(
            dataset="dsprites",
            epsilon=5.0,
            steps=6,
            batch_size=4,
            log_every=2,
            checkpoint_every=3,
            latent_dim=4,
        ),
    ],
    ids=["constrained-linear", "fixed-beta", "digits-off-grid-checkpoints", "dsprites-conv"],
)
def test_resume_continues_bit_for_bit(tmp_path, config):
    n = config.steps
    train(config, tmp_path / "straight", progress=False)
    half = RunConfig(**(vars(config) | {"steps": n // 2}))
    train(half, tmp_path / "split", progress=False)
    train(resume_config(tmp_path / "split", {"steps": n}), tmp_path / "split", resume=True, progress=False)
    assert numbers(folder.read_metrics(tmp_path / "split")) == numbers(folder.read_metrics(tmp_path / "straight"))
    assert log_text(tmp_path / "split") == log_text(tmp_path / "straight")  # ε = 2.0 stays "2.0", not "2"
    assert_same_state(model_state(tmp_path / "split"), model_state(tmp_path / "straight"))
    straight = torch.load(tmp_path / "straight" / folder.CHECKPOINT_FILE, weights_only=False)
    split = torch.load(tmp_path / "split" / folder.CHECKPOINT_FILE, weights_only=False)
    assert split["multiplier"] == straight["multiplier"] and split["step"] == n
    assert json.loads((tmp_path / "split" / "config.json").read_text())["steps"] == n


def test_resume_after_a_crash_between_checkpoints_drops_the_unsaved_rows(tmp_path):
    """Rows logged after the last checkpoint are rewritten by the resumed run, not duplicated."""
    config = tiny(steps=40, log_every=5, checkpoint_every=20)
    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "crashed", progress=False)
    # Simulate a crash at step 33: the checkpoint is the one from step 20, rows go to 30.
    checkpoint = torch.load(tmp_path / "crashed" / folder.CHECKPOINT_FILE, weights_only=False)
    train(RunConfig(**(vars(config) | {"steps": 20})), tmp_path / "at20", progress=False)
    (tmp_path / "crashed" / folder.CHECKPOINT_FILE).write_bytes(
        (tmp_path / "at20" / folder.CHECKPOINT_FILE).read_bytes()
    )
    assert checkpoint["step"] == 40
    rows = folder.read_metrics(tmp_path / "crashed")
    assert rows[-1]["step"] == 40
    train(resume_config(tmp_path / "crashed", {}), tmp_path / "crashed", resume=True, progress=False)
    assert numbers(folder.read_metrics(tmp_path / "crashed")) == numbers(folder.read_metrics(tmp_path / "straight"))
    assert log_text(tmp_path / "crashed") == log_text(tmp_path / "straight")


def test_resuming_a_finished_run_off_the_log_grid_keeps_its_last_row_and_summary(tmp_path):
    """A run that ended off the log grid (steps % log_every != 0) and lost summary.json."""
    config = tiny(steps=37, log_every=5, checkpoint_every=10)
    summary = train(config, tmp_path / "run", progress=False)
    rows = folder.read_metrics(tmp_path / "run")
    assert rows[-1]["step"] == 37
    (tmp_path / "run" / "summary.json").unlink()
    again = train(resume_config(tmp_path / "run", {}), tmp_path / "run", resume=True, progress=False)
    assert numbers(folder.read_metrics(tmp_path / "run")) == numbers(rows)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in summary.items() if k != "seconds"}


def test_an_existing_run_folder_is_refused_and_left_untouched(tmp_path):
    train(tiny(), tmp_path / "run", progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(tiny(seed=3), tmp_path / "run", progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_a_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    train(tiny(), tmp_path / "run", progress=False)
    path = tmp_path / "run" / folder.CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        train(resume_config(tmp_path / "run", {"steps": 80}), tmp_path / "run", resume=True, progress=False)
    path.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(resume_config(tmp_path / "run", {"steps": 80}), tmp_path / "run", resume=True, progress=False)


def test_a_checkpoint_from_another_config_is_refused(tmp_path):
    train(tiny(), tmp_path / "a", progress=False)
    train(tiny(epsilon=3.0), tmp_path / "b", progress=False)
    (tmp_path / "a" / folder.CHECKPOINT_FILE).write_bytes((tmp_path / "b" / folder.CHECKPOINT_FILE).read_bytes())
    with pytest.raises(CheckpointError, match=r"another config.*epsilon"):
        train(resume_config(tmp_path / "a", {"steps": 80}), tmp_path / "a", resume=True, progress=False)


def test_resume_refuses_to_change_the_numerics(tmp_path):
    train(tiny(), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="--lr"):
        resume_config(tmp_path / "run", {"lr": 0.5})
    with pytest.raises(ConfigError, match="fewer than"):
        train(resume_config(tmp_path / "run", {"steps": 10}), tmp_path / "run", resume=True, progress=False)


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny(steps=40, checkpoint_every=10)
    original = Optimization.step
    calls = {"n": 0}

    def step_that_blows_up_at_23(self, x, noise=None):
        calls["n"] += 1
        if calls["n"] == 23:
            with torch.no_grad():
                for p in self.problem.model.parameters():
                    p.fill_(float("nan"))
        return original(self, x, noise)

    monkeypatch.setattr(Optimization, "step", step_that_blows_up_at_23)
    with pytest.raises(TrainingDiverged, match=r"step 23.*step 20"):
        train(config, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / folder.CHECKPOINT_FILE, weights_only=False)
    assert state["step"] == 20
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    monkeypatch.setattr(Optimization, "step", original)
    summary = train(resume_config(tmp_path / "run", {}), tmp_path / "run", resume=True, progress=False)
    assert summary["steps"] == 40


def test_divergence_before_the_first_checkpoint_still_leaves_one(tmp_path):
    with pytest.raises(TrainingDiverged, match="step"):
        train(tiny(lr=1e30, steps=50, checkpoint_every=50), tmp_path / "run", progress=False)
    assert torch.load(tmp_path / "run" / folder.CHECKPOINT_FILE, weights_only=False)["step"] == 0


def test_bad_settings_write_nothing(tmp_path):
    for config in (tiny(epsilon=-1.0), tiny(epsilon=float("nan")), tiny(epsilon=None), tiny(beta=2.0)):
        with pytest.raises(ConfigError):
            train(config, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="unknown dataset"):
        train(tiny(dataset="mnist"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()

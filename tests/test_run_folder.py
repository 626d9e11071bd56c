"""The run folder under faults: torn logs, unsafe checkpoints, unstarted runs, odd configs, permissions."""

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from constrained_vae.cli.run import run_main
from constrained_vae.errors import CheckpointError, RunFolderError
from constrained_vae.run import folder
from constrained_vae.run.loop import resume_config, train

FAST = (
    "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --batch-size 32 --log-every 5 "
    "--checkpoint-every 10 --no-progress"
).split()


def numbers(run_dir):
    """metrics.csv without the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(run_dir)]


def model_of(run_dir):
    return torch.load(run_dir / folder.CHECKPOINT_FILE, weights_only=True)["model"]


@pytest.fixture
def straight(tmp_path, monkeypatch):
    """A 40-step run trained without a stop, for the others to equal."""
    monkeypatch.chdir(tmp_path)
    assert run_main(["--epsilon", "1", *FAST, "--steps", "40", "--out", "straight"]) == 0
    return tmp_path / "straight"


def test_a_torn_last_row_of_metrics_csv_is_dropped_and_the_run_resumes(tmp_path, straight, capsys):
    assert run_main(["--epsilon", "1", *FAST, "--steps", "20", "--out", "r"]) == 0
    with open(tmp_path / "r" / folder.TRAINING_LOG, "a") as handle:
        handle.write("155,23.1")  # what a kill or a full disk mid-append leaves
    assert [row["step"] for row in folder.read_metrics(tmp_path / "r")] == [5, 10, 15, 20]
    assert run_main(["--resume", "r", "--steps", "40", "--no-progress"]) == 0
    assert numbers(tmp_path / "r") == numbers(straight)
    assert (tmp_path / "r" / folder.TRAINING_LOG).read_text().count("155,23.1") == 0


@pytest.mark.parametrize(
    "tail", ["40,1.0,2.0", "40,1.0,2.0,3.0,4.0,5.0,6\n"[:-3], "40,1.0,2.0,3.0,4.0,5.0\n", "40,1.0,x,3,4,5,6\n"]
)
def test_every_kind_of_torn_last_row_is_dropped(tmp_path, tail):
    train(resume_config_free(tmp_path), tmp_path / "r", progress=False)
    rows = folder.read_metrics(tmp_path / "r")
    with open(tmp_path / "r" / folder.TRAINING_LOG, "a") as handle:
        handle.write(tail)
    assert folder.read_metrics(tmp_path / "r") == rows


def test_a_bad_row_before_the_last_is_corruption_not_a_torn_write(tmp_path):
    train(resume_config_free(tmp_path), tmp_path / "r", progress=False)
    path = tmp_path / "r" / folder.TRAINING_LOG
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = "10,oops\n"
    path.write_text("".join(lines))
    with pytest.raises(RunFolderError, match="corrupt at line 3"):
        folder.read_metrics(tmp_path / "r")


def resume_config_free(tmp_path):
    from constrained_vae.run.settings import RunConfig

    return RunConfig(
        epsilon=1.0,
        dataset="linear-gaussian",
        spectrum=[4.0, 2.0, 1.0],
        num_samples=256,
        steps=20,
        batch_size=32,
        log_every=5,
        checkpoint_every=10,
    )


class Payload:
    """Pickles as a call of ``Path.touch``: loading it with ``weights_only=False`` would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_carries_code_is_refused_and_nothing_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(["--epsilon", "1", *FAST, "--steps", "20", "--out", "r"]) == 0
    capsys.readouterr()
    marker = tmp_path / "code-ran"
    state = torch.load(tmp_path / "r" / folder.CHECKPOINT_FILE, weights_only=True)
    state["window"]["extra"] = Payload(marker)
    torch.save(state, tmp_path / "r" / folder.CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match=r"refused: it refers to code \(\S+\).*nothing in it was executed"):
        folder.load_checkpoint(tmp_path / "r", folder.read_config(tmp_path / "r"))
    assert run_main(["--resume", "r", "--steps", "40", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: r/checkpoint.pt was refused") and "\n" not in err
    assert not marker.exists()
    torch.load(
        tmp_path / "r" / folder.CHECKPOINT_FILE, weights_only=False
    )  # the payload is real: unsafe loading runs it
    assert marker.exists()


@pytest.mark.parametrize("how", ["--resume", "--out"])
def test_a_run_killed_before_its_first_checkpoint_starts_afresh(tmp_path, straight, capsys, how):
    assert run_main(["--epsilon", "1", *FAST, "--steps", "40", "--out", "r"]) == 0
    for name in (folder.CHECKPOINT_FILE, folder.SUMMARY_FILE):
        (tmp_path / "r" / name).unlink()
    (tmp_path / "r" / folder.TRAINING_LOG).write_text(",".join(folder.TRAINING_LOG_COLUMNS) + "\n")  # as left at step 0
    capsys.readouterr()
    if how == "--resume":
        assert run_main(["--resume", "r", "--no-progress"]) == 0
    else:
        assert run_main(["--epsilon", "1", *FAST, "--steps", "40", "--out", "r"]) == 0
    assert "r was stopped before its first checkpoint: starting it afresh" in capsys.readouterr().err
    assert numbers(tmp_path / "r") == numbers(straight)
    restarted, reference = model_of(tmp_path / "r"), model_of(straight)
    assert all(torch.equal(restarted[key], reference[key]) for key in reference)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("42", "should hold a JSON object of settings, not 42"),
        ("[1, 2]", "not [1, 2]"),
        ('{"epsilon": "x"}', "--epsilon must be a finite number"),
        ('{"epsilon": 1, "spectrum": 5}', "spectrum must be a list"),
        ("{not json", "not valid JSON"),
    ],
)
def test_resume_of_a_config_that_is_not_a_run_config_is_one_line(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)
    assert run_main(["--epsilon", "1", *FAST, "--steps", "20", "--out", "r"]) == 0
    (tmp_path / "r" / folder.CONFIG_FILE).write_text(content)
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    capsys.readouterr()
    assert run_main(["--resume", "r", "--steps", "40", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: r/config.json is not") and message in err and "\n" not in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_run_files_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        train(resume_config_free(tmp_path), tmp_path / "r", progress=False)
        train(resume_config(tmp_path / "r", {"steps": 30}), tmp_path / "r", resume=True, progress=False)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "r").iterdir()}
    assert set(modes) >= {*folder.RUN_FILES, ".lock"}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


def test_the_summary_says_how_many_steps_its_means_cover(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--epsilon", "1", *FAST, "--steps", "20", "--log-every", "20"]
    assert run_main([*args, "--out", "one-row"]) == 0
    assert "(means over all 20 steps, nats per sample)" in capsys.readouterr().out
    assert json.loads((tmp_path / "one-row" / folder.SUMMARY_FILE).read_text())["tail_steps"] == 20
    assert run_main([*args[:-2], "--log-every", "1", "--out", "every-step"]) == 0
    assert "(means over the last 2 of 20 steps, nats per sample)" in capsys.readouterr().out

"""Where a run's settings come from and what it records of its code: ``run.py --config FILE`` and the
provenance in ``config.json`` (the package's version and the git commit it ran from)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from constrained_vae.cli.run import run_main
from constrained_vae.cli.sweep import sweep_main
from constrained_vae.run import folder
from constrained_vae.run.settings import RECORDS
from constrained_vae.version import git_revision

ROOT = Path(__file__).resolve().parents[1]
FAST = "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --batch-size 32 --log-every 5 --no-progress"
FAST_SETTINGS = dict(dataset="linear-gaussian", spectrum=[4, 2, 1], num_samples=256, batch_size=32, log_every=5)


def settings_of(run_dir: Path) -> dict:
    """``config.json`` without its records (the mode and provenance)."""
    values = json.loads((run_dir / folder.CONFIG_FILE).read_text())
    return {key: value for key, value in values.items() if key not in RECORDS}


def training_log(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in folder.read_metrics(run_dir)]


def test_a_run_from_its_config_json_is_the_run_from_its_flags(tmp_path, capsys):
    assert run_main(["--epsilon", "1", "--steps", "10", *FAST.split(), "--out", str(tmp_path / "flags")]) == 0
    again = ["--config", str(tmp_path / "flags" / "config.json"), "--no-progress", "--out", str(tmp_path / "file")]
    assert run_main(again) == 0
    assert settings_of(tmp_path / "file") == settings_of(tmp_path / "flags")
    assert training_log(tmp_path / "file") == training_log(tmp_path / "flags")


def test_a_yaml_file_starts_a_run_and_a_flag_given_overrides_it(tmp_path, capsys):
    settings = tmp_path / "settings.yaml"
    lines = [f"{key}: {json.dumps(value)}" for key, value in FAST_SETTINGS.items()]
    settings.write_text("\n".join([*lines, "epsilon: 1", "steps: 10", "lr: 5e-3", "seed: 3"]) + "\n")
    assert run_main(["--config", str(settings), "--steps", "5", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    saved = settings_of(tmp_path / "r")
    assert saved["steps"] == 5  # the flag
    assert saved["lr"] == 5e-3 and saved["seed"] == 3 and saved["epsilon"] == 1  # the file (5e-3: a number)
    raw = json.loads((tmp_path / "r" / folder.CONFIG_FILE).read_text())
    assert raw["spectrum"] == [4.0, 2.0, 1.0] and all(isinstance(value, float) for value in raw["spectrum"])
    assert isinstance(raw["epsilon"], float) and isinstance(raw["seed"], int)  # as the flags give them


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad-key.json", '{"epsilon": 1, "epsilom": 2}', "unknown setting 'epsilom'"),
        ("bad-type.yaml", "epsilon: 1\nsteps: ten\n", "steps must be an integer or null, got 'ten'"),
        ("bad-list.json", '{"epsilon": 1, "spectrum": [1, "x"]}', "spectrum must be a list of numbers"),
        ("not-a-mapping.yml", "- epsilon\n", "should hold a mapping of settings"),
        ("broken.json", '{"epsilon": 1', "is not valid JSON"),
        ("settings.toml", "epsilon = 1", "expected a .json, .yaml or .yml file"),
        ("missing.json", None, "cannot be read"),
    ],
)
def test_a_bad_settings_file_is_refused_in_one_line_naming_the_file_and_nothing_is_written(
    tmp_path, capsys, name, text, message
):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    assert run_main(["--config", str(path), "--no-progress", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(path) in err and message in err
    assert not (tmp_path / "r").exists()


def test_config_with_resume_is_refused(tmp_path, capsys):
    assert run_main(["--config", str(tmp_path / "c.json"), "--resume", str(tmp_path / "r")]) == 2
    assert "--config starts a new run" in capsys.readouterr().err


def test_config_json_records_the_commit_it_ran_from(tmp_path, capsys):
    assert run_main(["--epsilon", "1", "--steps", "5", *FAST.split(), "--out", str(tmp_path / "r")]) == 0
    versions = json.loads((tmp_path / "r" / folder.CONFIG_FILE).read_text())["versions"]
    assert {"constrained_vae", "torch", "cooper", "python", "git_commit", "git_dirty"} <= set(versions)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0 and (ROOT / "constrained_vae").is_dir():
        assert versions["git_commit"] == head.stdout.strip() and isinstance(versions["git_dirty"], bool)


def test_a_resume_with_other_versions_goes_on_and_records_them_beside_the_first(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert run_main(["--epsilon", "1", "--steps", "5", *FAST.split(), "--out", str(run_dir)]) == 0
    config = json.loads((run_dir / folder.CONFIG_FILE).read_text())
    created = config["versions"] | {"constrained_vae": "0.0.1", "git_commit": "0" * 40}  # as an older checkout
    (run_dir / folder.CONFIG_FILE).write_text(json.dumps(config | {"versions": created}))
    assert run_main(["--resume", str(run_dir), "--steps", "10", "--no-progress"]) == 0
    assert run_main(["--resume", str(run_dir), "--steps", "15", "--no-progress"]) == 0
    config = json.loads((run_dir / folder.CONFIG_FILE).read_text())
    assert config["versions"] == created and config["steps"] == 15
    assert [resume["step"] for resume in config["resumes"]] == [5, 10]
    assert config["resumes"][0] == {"step": 5, **folder.versions()}


def git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_the_commit_is_read_only_from_a_checkout_of_the_package_and_a_changed_file_marks_it_dirty(tmp_path):
    checkout, package = tmp_path / "checkout", tmp_path / "checkout" / "constrained_vae"
    package.mkdir(parents=True)
    (package / "code.py").write_text("x = 1\n")
    git(checkout, "init", "-q")
    git(checkout, "add", ".")
    git(checkout, "commit", "-q", "-m", "first")
    commit = git(checkout, "rev-parse", "HEAD").strip()
    assert git_revision(package) == (commit, False)
    (checkout / "runs").mkdir()
    (checkout / "runs" / "new.txt").write_text("untracked")
    assert git_revision(package) == (commit, False)  # untracked files do not count
    (package / "code.py").write_text("x = 2\n")
    assert git_revision(package) == (commit, True)
    nested = package / "vendored" / "constrained_vae"
    nested.mkdir(parents=True)
    assert git_revision(nested) == (None, None)  # inside another repository: not its checkout
    assert git_revision(tmp_path / "nowhere") == (None, None)


def test_a_sweep_takes_its_run_settings_from_a_runs_config_json_and_its_grid_from_the_flags(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_main(["--epsilon", "1", "--steps", "10", "--seed", "4", *FAST.split(), "--out", str(run_dir)]) == 0
    sweep = ["--config", str(run_dir / "config.json"), "--epsilon", "1", "2", "--steps", "5", "--executor", "local"]
    assert sweep_main([*sweep, "--no-progress", "--out", str(tmp_path / "sweep")]) == 0
    expected = settings_of(run_dir) | {"steps": 5}  # the flag over the file
    for epsilon in (1, 2):
        point = settings_of(tmp_path / "sweep" / f"eps{epsilon}-seed0")
        assert point == expected | {"epsilon": epsilon, "seed": 0}  # the grid's ε and seed, not the file's
    bad = tmp_path / "bad.yaml"
    bad.write_text("dual_lr: fast\n")
    assert sweep_main(["--config", str(bad), "--epsilon", "1", "--no-progress", "--out", str(tmp_path / "s2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(bad) in err and "dual_lr" in err
    assert not (tmp_path / "s2").exists()

"""Refusals as a user meets them in run.py, sweep.py and study.py alike (one ``error:`` line, exit 2,
nothing written), the analysis of an old sweep with a budget of 0, and the scores and figures of a GECO run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from constrained_vae.cli import epsilon_to_beta, evaluate, figures, study, tradeoff
from constrained_vae.cli.run import run_main
from constrained_vae.cli.sweep import sweep_main
from constrained_vae.sweeps.study import STUDY_FILE, SWEEP_DIR

LG = ["--dataset", "linear-gaussian", "--num-samples", "2000"]
# The sweep's in-process executor: no Ray to start in a test.
SWEEP = ["--steps", "60", "--no-progress", "--executor", "local"]
STUDY = ["--betas", "4", "8", "--seeds", "0", "--extra-epsilons", "10", "--no-evaluate", "--preset", "none"]
STUDY += [*LG, *SWEEP]
# A dSprites run of a few steps (the evaluation and the figures need ground-truth factors and images).
DSPRITES = ["--steps", "4", "--batch-size", "8", "--log-every", "2", "--checkpoint-every", "2", "--no-progress"]


def one_error_line(capsys) -> str:
    """The one line on stderr, which must start with ``error:``; its message."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err.removeprefix("error: ")


def contents(root: Path) -> dict[Path, bytes | None]:
    """Everything under ``root``: a file's path → its bytes, a folder's → None."""
    return {path: path.read_bytes() if path.is_file() else None for path in sorted(root.rglob("*"))}


def refused(main, argv: list[str], tmp_path: Path, capsys) -> str:
    """Run ``main(argv)``, which must refuse: exit 2, one error line, nothing written under ``tmp_path``."""
    before = contents(tmp_path)
    assert main(argv) == 2
    message = one_error_line(capsys)
    assert contents(tmp_path) == before
    return message


def run_args(tmp_path: Path, *args: str) -> list[str]:
    return [*args, "--out", str(tmp_path / "out")]


def study_args(tmp_path: Path, *args: str) -> list[str]:
    return ["--out", str(tmp_path / "out"), *STUDY, *args]


# ---------------------------------------------------------------------------- A: budgets of 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilon", "0"], "--epsilon must be positive, got 0.0 (a KL budget of 0 nats per sample cannot be met"),
        (["--epsilon", "-2"], "--epsilon must be positive, got -2.0"),
        (["--beta", "0"], "--beta must be positive, got 0.0 (β = 0 drops the KL term"),
        (["--beta", "-1"], "--beta must be positive, got -1.0"),
        (["--objective", "capacity", "--epsilon", "0"], "--epsilon must be positive, got 0.0 (a KL target of 0"),
        (["--objective", "controlvae", "--epsilon", "0"], "--epsilon must be positive, got 0.0 (a KL target of 0"),
    ],
)
def test_a_budget_of_zero_or_below_is_refused_with_its_reason_by_run_and_sweep(tmp_path, capsys, args, message):
    assert refused(run_main, run_args(tmp_path, *LG, *args, "--no-progress"), tmp_path, capsys).startswith(message)
    flag, value = args[-2:]
    grid = [flag, "1", value, "2"]  # a good value first: every point is checked before any trains
    sweep = run_args(tmp_path, *LG, *SWEEP, *args[:-2], *grid)
    assert refused(sweep_main, sweep, tmp_path, capsys).startswith(message)


def test_the_grid_of_zeros_is_refused_before_anything_trains(tmp_path, capsys):
    grid = ["--epsilon", "0", "1", "2", "--beta", "0", "1", "2"]
    message = refused(sweep_main, run_args(tmp_path, *LG, *SWEEP, *grid), tmp_path, capsys)
    assert message.startswith("--epsilon must be positive, got 0.0 (")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--betas", "0", "4"], "--betas must be positive, got 0.0 (β = 0"),
        (["--extra-epsilons", "0"], "--extra-epsilons must be positive, got 0.0 (a KL budget of 0"),
    ],
)
def test_the_study_refuses_a_budget_of_zero_before_its_folder_is_written(tmp_path, capsys, args, message):
    assert refused(study.study_main, study_args(tmp_path, *args), tmp_path, capsys).startswith(message)


@pytest.fixture(scope="module")
def old_sweep(tmp_path_factory) -> Path:
    """A finished linear-Gaussian sweep (ε 2, 3 and β 1, 2) with two more runs, ``eps0-seed0`` and
    ``beta0-seed0``, recorded with a budget of 0, as before such budgets were refused."""
    out = tmp_path_factory.mktemp("old") / "sweep"
    grid = ["--epsilon", "2", "3", "--beta", "1", "2"]
    assert sweep_main(["--out", str(out), *LG, *SWEEP, "--steps", "20", *grid]) == 0
    for source, name, key in (("eps2-seed0", "eps0-seed0", "epsilon"), ("beta1-seed0", "beta0-seed0", "beta")):
        shutil.copytree(out / source, out / name)
        for record in ("config.json", "summary.json"):
            path = out / name / record
            path.write_text(json.dumps(json.loads(path.read_text()) | {key: 0.0}))
    return out


def test_the_analysis_of_an_old_sweep_leaves_out_a_budget_of_zero_and_says_why(old_sweep, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(old_sweep, sweep)
    capsys.readouterr()
    assert tradeoff.main([str(sweep)]) == 0
    out, err = capsys.readouterr()
    (warning,) = [line for line in err.splitlines() if "budget of 0" in line]
    assert warning.startswith("warning: 2 run(s) of") and "beta0-seed0 (β = 0), eps0-seed0 (ε = 0)" in warning
    runs = (sweep / "analysis" / "runs.csv").read_text()
    assert "eps0-seed0" not in runs and "beta0-seed0" not in runs and "eps2-seed0" in runs
    assert epsilon_to_beta.main([str(sweep), "--epsilon", "2.5"]) == 0
    out, err = capsys.readouterr()
    assert "2.5" in out and "eps0-seed0 (ε = 0)" in err
    assert epsilon_to_beta.main([str(sweep), "--beta", "1.5"]) == 0
    assert "beta0-seed0 (β = 0)" in capsys.readouterr().err


# ---------------------------------------------------------------------------- B: a GECO run's scores and figures


def test_a_geco_run_is_scored_and_drawn(tmp_path, capsys):
    run = tmp_path / "geco"
    assert run_main(["--objective", "geco", "--kappa", "3000", *DSPRITES, "--out", str(run)]) == 0
    capsys.readouterr()
    assert evaluate.main([str(run), "--metrics", "mig", "--num-train", "40"]) == 0
    out = capsys.readouterr().out
    assert "geco κ=3000" in out and "None" not in out
    assert (run / "metrics.json").exists()
    assert figures.main([str(run), "--num-kl-images", "16"]) == 0
    assert (run / "figures" / "kl_per_dimension.png").stat().st_size > 0


# ---------------------------------------------------------------------------- C: settings that do not apply


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--beta", "1", "--dual-lr", "0.5", "--multiplier-init", "7"], "--dual-lr does not apply to --objective"),
        (["--beta", "1", "--dual-kp", "3"], "--dual-kp does not apply to --objective fixed-beta"),
        (["--objective", "geco", "--kappa", "10", "--beta", "1"], "--beta does not apply to --objective geco"),
    ],
)
def test_run_refuses_a_setting_its_objective_does_not_take(tmp_path, capsys, args, message):
    assert refused(run_main, run_args(tmp_path, *LG, *args), tmp_path, capsys).startswith(message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--beta", "1", "--dual-kp", "3"], "--dual-kp does not apply to fixed-β points (--beta)"),
        (["--beta", "1", "--dual-lr", "0.5", "--multiplier-init", "7"], "--dual-lr does not apply to fixed-β"),
        (["--objective", "geco", "--kappa", "10", "--beta", "1"], "--objective geco does not apply to fixed-β"),
        (["--objective", "capacity", "--beta", "1", "2"], "--objective capacity does not apply to fixed-β"),
    ],
)
def test_a_sweep_without_epsilon_points_refuses_what_only_they_take(tmp_path, capsys, args, message):
    assert refused(sweep_main, run_args(tmp_path, *LG, *SWEEP, *args), tmp_path, capsys).startswith(message)


@pytest.mark.parametrize("main", [run_main, sweep_main, study.study_main])
@pytest.mark.parametrize(
    ("args", "flag"),
    [(["--spectrum", "3,2,1", "--num-samples", "7"], "--spectrum"), (["--num-samples", "7"], "--num-samples")],
)
def test_linear_gaussian_data_settings_are_refused_for_dsprites(tmp_path, capsys, main, args, flag):
    if main is study.study_main:
        argv = ["--out", str(tmp_path / "out"), "--betas", "4", "--extra-epsilons", "--seeds", "0", *args]
    else:
        argv = run_args(tmp_path, "--beta", "1", *args)
    message = refused(main, argv, tmp_path, capsys)
    assert message == f"{flag} does not apply to --dataset dsprites (only linear-gaussian is generated from it)"


def test_a_fixed_beta_sweep_may_be_extended_by_epsilon_points_and_the_settings_they_take(tmp_path, capsys):
    out = ["--out", str(tmp_path / "sweep"), *LG, *SWEEP]
    assert sweep_main([*out, "--beta", "1"]) == 0
    assert sweep_main([*out, "--beta", "1", "--epsilon", "1", "--dual-update", "pi"]) == 0
    assert "take the new --dual-kp, --dual-lr, --dual-update" in capsys.readouterr().out
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["run_settings"]["dual_update"] == "pi"
    # Now that an ε point took the rule, another rule is other run settings.
    assert sweep_main([*out, "--beta", "1", "--epsilon", "1", "2", "--dual-update", "gradient"]) == 2
    assert "differs in --dual-kp, --dual-update" in one_error_line(capsys)


# ---------------------------------------------------------------------------- D: messages that name what was given


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dual-kp", "2", "--dual-update", "log"],
            "--dual-kp does not apply to --dual-update log (only pi and pi+ema take a gain)",
        ),
        (
            ["--dual-ema", "0.5", "--dual-update", "gradient"],
            "--dual-ema does not apply to --dual-update gradient (only the +ema rules average the violation)",
        ),
    ],
)
def test_a_multiplier_setting_its_rule_does_not_use_names_the_rule_given(tmp_path, capsys, args, message):
    argv = run_args(tmp_path, *LG, "--epsilon", "1", *args)
    assert refused(run_main, argv, tmp_path, capsys) == message
    sweep = run_args(tmp_path, *LG, *SWEEP, "--epsilon", "1", *args)
    assert refused(sweep_main, sweep, tmp_path, capsys) == message
    assert refused(study.study_main, study_args(tmp_path, *args), tmp_path, capsys) == message


def test_a_bad_num_eval_names_its_flag(tmp_path, capsys):
    message = refused(evaluate.main, [str(tmp_path / "out"), "--num-eval", "-5"], tmp_path, capsys)
    assert message == "--num-eval must be an integer ≥ 1, got -5" and "num_test" not in message


# ---------------------------------------------------------------------------- E: the study's records and re-runs


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    """A finished linear-Gaussian study (β 4 and 8, their matched ε and ε = 10, one seed) with a multiplier
    setting, which its fixed-β phase leaves out and its second phase extends the sweep by."""
    out = tmp_path_factory.mktemp("study") / "study"
    assert study.study_main(["--out", str(out), *STUDY, "--dual-update", "pi"]) == 0
    return out


def test_the_study_extends_its_fixed_beta_sweep_by_the_settings_of_its_epsilon_points(finished_study):
    record = json.loads((finished_study / SWEEP_DIR / "sweep.json").read_text())
    assert record["run_settings"]["dual_update"] == "pi"
    assert sorted(record["grid"]["beta"]) == [4.0, 8.0] and 10.0 in record["grid"]["epsilon"]
    for point in ("beta4-seed0", "eps10-seed0"):
        assert (finished_study / SWEEP_DIR / point / "summary.json").exists()


def test_a_rerun_with_other_run_settings_leaves_every_byte_of_the_study(finished_study, capsys):
    before = contents(finished_study)
    assert study.study_main(["--out", str(finished_study), *STUDY, "--dual-update", "pi", "--steps", "120"]) == 2
    assert "differs in --steps" in one_error_line(capsys)
    assert study.study_main(["--out", str(finished_study), *STUDY, "--steps", "120", "--lr", "0.01"]) == 2
    assert "differs in --dual-kp, --dual-lr, --dual-update, --lr, --steps" in one_error_line(capsys)
    assert contents(finished_study) == before


@pytest.mark.parametrize(
    "matched",
    [{"4": 1.0, "8": 0.5, "16": 0.2}, {"4": 1.0, "2": 0.5}, {"4": "1", "8": 0.5}, {"4": [1.0], "8": 0.5}, [1.0]],
)
def test_a_study_record_with_a_bad_matched_epsilon_is_one_line_naming_it(tmp_path, capsys, matched):
    out = tmp_path / "out"
    out.mkdir()
    plan = {"betas": [4.0, 8.0], "extra_epsilons": [10.0], "seeds": [0]}
    (out / STUDY_FILE).write_text(
        json.dumps({"command": [], "plan": plan, "sweep_args": [], "matched_epsilon": matched})
    )
    message = refused(study.study_main, study_args(tmp_path), tmp_path, capsys)
    assert message.startswith(f"{out / STUDY_FILE} is not a study record (matched_epsilon")


@pytest.mark.parametrize(("key", "value"), [("run_settings", [1]), ("points", 5)])
def test_a_sweep_record_of_the_wrong_shape_is_one_line_naming_it(tmp_path, capsys, key, value):
    out = tmp_path / "out"
    out.mkdir()
    record = {"command": [], "grid": {"epsilon": [1.0], "beta": [], "seeds": [0]}, "run_settings": {}, "points": []}
    (out / "sweep.json").write_text(json.dumps(record | {key: value}))
    message = refused(sweep_main, ["--out", str(out), "--epsilon", "1", *LG, *SWEEP], tmp_path, capsys)
    kind = type(record[key]).__name__
    assert message == f"{out / 'sweep.json'} is not a sweep record ({key} is not a {kind})"

"""Every numeric flag of every script, walked through its own parser: at 0, negative, NaN, ±inf, beyond float32
or int64, or (for a size) beyond what memory holds, each is one ``error:`` line naming the flag, exit 2, and no
folder written. The parsers are introspected, so a flag added later is walked too.

The walk calls the scripts' main functions in this process (a subprocess each would take minutes); a few
subprocess checks at the end see the real scripts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from constrained_vae.cli import epsilon_to_beta, evaluate, figures, study, study_analysis, tradeoff
from constrained_vae.cli.run import run_main, run_parser
from constrained_vae.cli.sweep import sweep_main, sweep_parser

ROOT = Path(__file__).resolve().parents[1]
LG = ["--dataset", "linear-gaussian", "--num-samples", "2000", "--steps", "2", "--no-progress"]
OUT = "out"  # the folder each command is given; it must not exist afterwards

# script → (its parser, its main, the arguments that make a complete command before the flag walked).
Script = tuple[Callable[[], argparse.ArgumentParser], Callable[[list[str]], int], list[str]]
SCRIPTS: dict[str, Script] = {
    "experiments/run.py": (run_parser, run_main, ["--out", OUT, *LG, "--epsilon", "1"]),
    "experiments/sweep.py": (sweep_parser, sweep_main, ["--out", OUT, *LG, "--executor", "local", "--epsilon", "1"]),
    "experiments/study.py": (
        study.study_parser,
        study.study_main,
        ["--out", OUT, *LG, "--preset", "none", "--no-evaluate", "--betas", "4", "--extra-epsilons", "--seeds", "0"],
    ),
    "experiments/evaluate.py": (evaluate.evaluate_parser, evaluate.main, [OUT]),
    "analysis/figures.py": (figures.figures_parser, figures.main, [OUT]),
    "analysis/study.py": (study_analysis.analysis_parser, study_analysis.analysis_main, [OUT]),
    "analysis/epsilon_to_beta.py": (epsilon_to_beta.epsilon_to_beta_parser, epsilon_to_beta.main, [OUT]),
    "analysis/tradeoff_curves.py": (tradeoff.tradeoff_parser, tradeoff.main, [OUT]),
}
# Scripts that are not walked, and why.
NOT_WALKED = {"experiments/closed_form_check.py": "a benchmark of the closed form with its own table of cases"}

# What a flag needs beside the base command to apply at all (the objective or rule that takes it); a sweep
# takes no κ (its points are ε and β values), so its --kappa is walked in the base command as it is.
CONTEXT: dict[str, list[str]] = {
    "--capacity-gamma": ["--objective", "capacity"],
    "--anneal-steps": ["--objective", "controlvae"],
    "--dual-kp": ["--dual-update", "pi"],
    "--dual-ema": ["--dual-update", "log+ema"],
}
# The base command's budget, dropped when the flag walked is a budget itself.
BUDGETS = ("--epsilon", "--beta")

FLOAT_VALUES = ("0", "-1", "nan", "inf", "-inf", "1e308")  # 1e308: beyond float32
INT_VALUES = ("0", "-1", "99999999999999999999999")  # the last: beyond int64
BEYOND_MEMORY = "100000000000"  # 1e11 items: terabytes at any size an item may have
# Flags that size something held in memory (walked at BEYOND_MEMORY too).
SIZES = {
    "--batch-size",
    "--num-samples",
    "--latent-dim",
    "--num-train",
    "--num-eval",
    "--num-variance-estimate",
    "--num-bins",
    "--num-kl-images",
    "--eval-num-train",
    "--eval-num-eval",
    "--eval-batch-size",
    "--eval-num-variance-estimate",
    "--eval-num-bins",
}

# Values that are right for a flag, with the reason; the walk does not try them.
ALLOWED: dict[tuple[str, str], str] = {
    ("--seed", "0"): "the default seed",
    ("--seeds", "0"): "the default seed",
    ("--eval-seed", "0"): "the default seed",
    ("--gpus-per-run", "0"): "points that train on CPUs (the default)",
    ("--max-retries", "0"): "no retry of a point whose worker died",
    ("--dual-kp", "0"): "a gain of 0 makes the pi rule plain gradient ascent",
    ("--dual-ema", "0"): "α = 0 averages nothing: the dual step sees each batch's violation",
    ("--kappa", "0"): "NLL ≤ 0 nats is a budget a Gaussian likelihood can meet",
}


def numeric_flags(parser: argparse.ArgumentParser) -> list[tuple[str, tuple[str, ...], type]]:
    """Every flag of ``parser`` whose values are int or float: its long name, all its names, its type."""
    flags = []
    for action in parser._actions:
        if action.option_strings and action.type in (int, float):
            flags.append((action.option_strings[0], tuple(action.option_strings), action.type))
    return flags


def walk() -> list[tuple[str, str, tuple[str, ...], str]]:
    """(script, flag, the flag's names, bad value) for every numeric flag of every script."""
    cases = []
    for script, (parser, _, _) in SCRIPTS.items():
        for name, names, kind in numeric_flags(parser()):
            values = [*(FLOAT_VALUES if kind is float else INT_VALUES), *([BEYOND_MEMORY] if name in SIZES else [])]
            cases += [(script, name, names, value) for value in values if (name, value) not in ALLOWED]
    return cases


def command(script: str, flag: str, value: str) -> list[str]:
    """The script's base command with ``flag value`` (and what the flag needs to apply)."""
    base = list(SCRIPTS[script][2])
    if script in ("experiments/run.py", "experiments/sweep.py") and flag in BUDGETS:
        base = base[: base.index("--epsilon")]
    if script == "experiments/run.py" and flag == "--kappa":
        base = [*base[: base.index("--epsilon")], "--objective", "geco"]
    if script == "analysis/epsilon_to_beta.py" and flag not in ("--epsilon", "--beta"):
        base.append("--epsilon=1")
    return [*base, *CONTEXT.get(flag, []), f"{flag}={value}"]


def test_every_script_of_the_project_is_walked_or_says_why_not():
    scripts = {f"{d}/{p.name}" for d in ("experiments", "analysis") for p in (ROOT / d).glob("*.py")}
    assert scripts == set(SCRIPTS) | set(NOT_WALKED)


def test_the_walk_reaches_the_flags_the_issue_names():
    walked = {(script, flag, value) for script, flag, _, value in walk()}
    for case in [
        ("experiments/run.py", "--seed", "-1"),
        ("experiments/run.py", "--lr", "1e308"),
        ("experiments/run.py", "--dual-lr", "1e308"),
        ("experiments/run.py", "--anneal-steps", "99999999999999999999999"),
        ("experiments/run.py", "--num-samples", BEYOND_MEMORY),
        ("experiments/sweep.py", "--cpus-per-run", "1e308"),
        ("experiments/evaluate.py", "--num-train", BEYOND_MEMORY),
        ("analysis/figures.py", "--num-kl-images", BEYOND_MEMORY),
        ("experiments/study.py", "--betas", "-1"),
    ]:
        assert case in walked


@pytest.mark.parametrize(("script", "flag", "names", "value"), walk(), ids=lambda x: x if isinstance(x, str) else "")
def test_a_bad_number_is_one_error_line_naming_its_flag_and_nothing_is_written(
    script, flag, names, value, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    main = SCRIPTS[script][1]
    try:
        status = main(command(script, flag, value))
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert any(name in lines[0] for name in names), err
    assert not (tmp_path / OUT).exists()


def test_a_log_rule_refuses_an_initial_multiplier_outside_its_range_naming_the_range(tmp_path, capsys):
    for value in ("1e7", "1e-7"):
        assert run_main(["--out", str(tmp_path / OUT), *LG, "--epsilon", "1", "--multiplier-init", value]) == 2
        message = capsys.readouterr().err
        assert "--multiplier-init must be within [1e-06, 1e+06] under --dual-update log" in message
    assert run_main(["--out", str(tmp_path / OUT), *LG, "--epsilon", "1", "--multiplier-init", "1e6"]) == 0


def test_the_study_names_its_own_grid_flags_not_the_sweeps(tmp_path, capsys):
    for flag, value in (("--betas", "-1"), ("--extra-epsilons", "0"), ("--seeds", "-1")):
        argv = command("experiments/study.py", flag, value)
        assert study.study_main([str(tmp_path / OUT) if a == OUT else a for a in argv]) == 2
        assert capsys.readouterr().err.startswith(f"error: {flag} must be")


def scripts_env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize(
    "argv",
    [
        ["experiments/run.py", "--epsilon", "1", "--seed", "-1"],
        ["experiments/run.py", "--epsilon", "1", "--lr", "1e308"],
        ["experiments/sweep.py", "--epsilon", "1", "--cpus-per-run", "1e308"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_the_scripts_themselves_refuse_a_bad_number_in_one_line(argv, tmp_path):
    out = tmp_path / OUT
    result = subprocess.run(
        [sys.executable, str(ROOT / argv[0]), *argv[1:], "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        env=scripts_env(),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert not out.exists()


def test_a_name_longer_than_the_file_system_takes_is_one_line_for_run_sweep_and_study(tmp_path, capsys):
    long_out = str(tmp_path / ("a" * 300))
    base = ["--epsilon", "1", *LG]
    for main, argv in (
        (run_main, [*base, "--out", long_out]),
        (sweep_main, [*base, "--executor", "local", "--out", long_out]),
        (study.study_main, [*SCRIPTS["experiments/study.py"][2][2:], "--out", long_out]),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out: the name aaaa") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_resume_of_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_main(["--out", str(run), *LG, "--epsilon", "1"]) == 0
    capsys.readouterr()
    if subprocess.run(["chattr", "+i", str(run)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE and a file system that has it)")
    try:
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        assert run_main(["--resume", str(run), "--steps", "4", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err == f"error: cannot write in {run}: Operation not permitted\n"
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    finally:
        subprocess.run(["chattr", "-i", str(run)], check=True)


def test_a_reference_sweep_that_does_not_exist_is_one_line_and_writes_no_analysis(tmp_path, capsys):
    (tmp_path / "study").mkdir()
    assert study_analysis.analysis_main([str(tmp_path / "study"), "--reference", "/nonexistent"]) == 2
    assert capsys.readouterr().err == "error: --reference: /nonexistent is not a folder\n"
    assert list((tmp_path / "study").iterdir()) == []


def test_a_spectrum_beyond_float32_is_one_line_without_numpy_warnings(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning (an overflow casting the data) would fail the test
        with pytest.raises(SystemExit) as stopped:
            run_main(["--out", str(tmp_path / OUT), *LG, "--epsilon", "1", "--spectrum", "1e308,1"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: argument --spectrum: --spectrum values must be at most 3.403e+38")
        and err.count("\n") == 1
    ), err
    assert not (tmp_path / OUT).exists()


def test_figures_and_scores_of_a_run_stopped_before_its_first_checkpoint_say_so(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_main(["--out", str(run), *LG, "--epsilon", "1"]) == 0
    (run / "checkpoint.pt").unlink()
    capsys.readouterr()
    assert figures.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: {run} has no checkpoint.pt: its run was stopped before its first checkpoint, so there is "
        "no trained model to read\n"
    )
    assert "resume" not in err and not (run / "figures").exists()


@pytest.mark.parametrize(("flag", "value"), [("--threads", "2000"), ("--cpus-per-run", "2000")])
def test_more_torch_threads_than_any_machine_has_are_refused_before_torch_crashes_on_them(
    tmp_path, capsys, flag, value
):
    main = run_main if flag == "--threads" else sweep_main
    extra = [] if flag == "--threads" else ["--executor", "local"]
    assert main(["--out", str(tmp_path / OUT), *LG, "--epsilon", "1", *extra, flag, value]) == 2
    assert capsys.readouterr().err.startswith(f"error: {flag} ")
    assert not (tmp_path / OUT).exists()

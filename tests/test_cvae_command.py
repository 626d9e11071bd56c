"""The ``cvae`` command (constrained_vae/cli/main.py): one entry point for the scripts of experiments/ and analysis/."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from constrained_vae import __version__
from constrained_vae.cli import study as study_cli
from constrained_vae.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    str(path.relative_to(ROOT)) for folder in ("experiments", "analysis") for path in (ROOT / folder).glob("*.py")
)
FAST = "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 64 --steps 4 --batch-size 16 --log-every 2".split()


def exit_status(argv):
    """``main(argv)``'s exit status, whether it returns it or exits with it (argparse's --help and errors)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_help_lists_every_command_on_one_line_each(capsys):
    assert exit_status(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("usage: cvae ")
    for name, command in COMMANDS.items():
        assert [line.split() for line in lines if line.split()[:1] == [name]] == [[name, *command.summary.split()]]
    assert all(len(line) <= 100 for line in lines)


def test_version_prints_the_package_version(capsys):
    assert exit_status(["--version"]) == 0
    assert capsys.readouterr().out == f"cvae {__version__}\n"


@pytest.mark.parametrize("argv", [["bogus"], [], ["--epsilon", "5"]], ids=["unknown", "none", "flag-first"])
def test_a_missing_or_unknown_command_is_one_error_line_with_exit_status_2(capsys, argv):
    assert exit_status(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith("error: ")
    assert "cvae --help" in captured.err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_help_names_it_cvae_command(capsys, name):
    assert exit_status([name, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: cvae {name} ")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_refuses_a_bad_flag_naming_itself(capsys, name):
    assert exit_status([name, "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"(see cvae {name} --help)" in err


def imported_main(script):
    """``module:function`` of the ``main`` a thin script wrapper imports and calls."""
    tree = ast.parse((ROOT / script).read_text())
    imports = [
        node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module.startswith("constrained_vae")
    ]
    assert len(imports) == 1 and len(imports[0].names) == 1, f"{script} is not a thin wrapper of one cli main"
    return f"{imports[0].module}:{imports[0].names[0].name}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_is_a_thin_wrapper_of_the_function_its_cvae_command_runs(script):
    commands = [command for command in COMMANDS.values() if command.script == script]
    assert len(commands) == 1, f"{script} has no cvae command"
    assert imported_main(script) == commands[0].target


def test_the_scripts_keep_their_own_names_in_their_help():
    for script in ("experiments/sweep.py", "experiments/closed_form_check.py"):
        result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: {script} ")


def test_a_sweep_run_as_cvae_sweep_records_that_command(tmp_path, capsys):
    argv = ["sweep", "--epsilon", "5", "--out", str(tmp_path / "s"), *FAST, "--executor", "local", "--no-progress"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["command"] == ["cvae", *argv]


def test_cvae_study_records_itself_and_runs_its_phases_as_cvae_sweep(tmp_path, monkeypatch):
    seen = {}

    def fake_run_study(study_dir, plan, sweep_args, command, sweeps, **options):
        seen.update(command=command, sweep_prog=sweeps.prog)
        return 0

    monkeypatch.setattr(study_cli, "run_study", fake_run_study)
    assert main(["study", "--out", str(tmp_path / "study"), "--no-evaluate"]) == 0
    assert seen == {
        "command": ["cvae", "study", "--out", str(tmp_path / "study"), "--no-evaluate"],
        "sweep_prog": "cvae sweep",
    }


def test_closed_form_refuses_a_case_without_budgets_in_one_line(capsys):
    assert exit_status(["closed-form", "--case", "16,8,4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --case: expected SPECTRUM:EPS") and len(err.splitlines()) == 1


def test_python_dash_m_constrained_vae_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "constrained_vae", "--version"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"python -m constrained_vae {__version__}\n"

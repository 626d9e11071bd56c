"""The README's commands are the ones CI runs, and its flags are the CLI's."""

import re
from pathlib import Path

import pytest

from constrained_vae.cli.run import run_parser
from constrained_vae.cli.sweep import sweep_parser

ROOT = Path(__file__).resolve().parents[1]


def ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.startswith("python ")]


def test_ci_runs_exactly_the_readme_install_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    readme_commands = [line for block in blocks for line in block.splitlines()]
    install, *tests = ci_commands()
    assert install in readme_commands
    assert tests == ["python -m pytest", "python -m pytest -m slow"]
    assert all(test in readme_commands for test in tests)
    assert "python experiments/run.py --epsilon 20" in readme_commands
    assert install.index("torch==2.13.0") < install.index("-e")


@pytest.mark.parametrize("parser", [run_parser, sweep_parser], ids=["run.py", "sweep.py"])
def test_every_flag_is_documented_in_the_readme(parser):
    readme = (ROOT / "README.md").read_text()
    flags = {opt for action in parser()._actions for opt in action.option_strings if opt.startswith("--")}
    missing = sorted(f for f in flags - {"--help"} if f"`{f}" not in readme)
    assert not missing, f"flags missing from README: {missing}"

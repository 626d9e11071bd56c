"""The README's commands are the ones CI runs, its flags are the CLI's, and its links and the
documentation pages' lead somewhere."""

import re
from pathlib import Path

import pytest

from constrained_vae.cli.run import run_parser
from constrained_vae.cli.sweep import sweep_parser

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
DOCS = sorted((ROOT / "docs").glob("*.md"))
# [text](target) and ![alt](target); a target may end in a "title"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.startswith("python ") and " mkdocs " not in line]


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    return [line for block in blocks for line in block.splitlines()]


def test_ci_runs_exactly_the_readme_install_and_test_commands():
    install, *tests = ci_commands()
    assert install in readme_commands()
    assert tests == ["python -m pytest", "python -m pytest -m slow"]
    assert all(test in readme_commands() for test in tests)
    assert "python experiments/run.py --epsilon 20" in readme_commands()
    assert install.index("torch==2.13.0") < install.index("-e")


def test_ci_builds_the_documentation_strictly_as_the_readme_says():
    ci = (ROOT / ".ci" / "run").read_text()
    install, *_ = ci_commands()
    assert "docs" in install.split("-e", 1)[1], "the install command must bring the docs extra (mkdocs)"
    builds = [line for line in ci.splitlines() if line.startswith("python -m mkdocs build")]
    assert len(builds) == 1 and "--strict" in builds[0]
    assert ci.index("python -m pytest -m slow") < ci.index(builds[0]), "the docs build runs after the tests"
    assert any(line.startswith("python -m mkdocs build --strict") for line in readme_commands())
    assert any(line.startswith("python -m mkdocs serve") for line in readme_commands())


def documented_text() -> str:
    """The README and every documentation page: where a flag counts as documented."""
    return "\n".join(path.read_text() for path in [ROOT / "README.md", *DOCS])


@pytest.mark.parametrize("parser", [run_parser, sweep_parser], ids=["run.py", "sweep.py"])
def test_every_flag_is_documented_in_the_readme_or_the_docs(parser):
    text = documented_text()
    flags = {opt for action in parser()._actions for opt in action.option_strings if opt.startswith("--")}
    missing = sorted(f for f in flags - {"--help"} if f"`{f}" not in text)
    assert not missing, f"flags missing from README.md and docs/*.md: {missing}"


def test_the_readme_is_a_front_door_of_at_most_250_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move the detail to docs/"


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # links inside code blocks are code
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = (match.group(1) for match in LINK.finditer(text))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]  # not http:, mailto:, #anchor


@pytest.mark.parametrize("path", [ROOT / "README.md", *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_an_existing_file(path):
    broken = [t for t in relative_links(path) if not (path.parent / t.split("#", 1)[0]).exists()]
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def test_the_docs_pages_are_all_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in DOCS if p.name not in nav]
    assert not missing, f"docs pages missing from mkdocs.yml's nav: {missing}"

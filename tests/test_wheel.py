"""``pip install .`` (not editable): the wheel holds the package, and its ``cvae`` command trains from anywhere.

The wheel is built from a copy of the checkout (the build writes ``build/`` and ``*.egg-info`` into its
source) without build isolation, so no network is needed: the build backend is the installed setuptools
(``.[test]`` installs one new enough). It is installed into a fresh virtual environment that sees the
installed dependencies (``--system-site-packages``). Those system site-packages may also hold an editable
install of this checkout, whose import hook is appended to ``sys.meta_path``; the venv's own site-packages
come first on ``sys.path``, so the wheel's copy is found before the hook is asked. The tests check that
it is (``constrained_vae.__file__`` under the venv, with ``PYTHONPATH`` unset and the cwd outside the checkout).
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from constrained_vae import __version__

ROOT = Path(__file__).resolve().parents[1]
EVERYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", ".hypothesis")
AT_THE_ROOT = {".git", ".venv", "build", "dist", "runs", "sweeps"}  # untracked output (.gitignore), and git


def ignored(folder, names):
    return EVERYWHERE(folder, names) | (AT_THE_ROOT & set(names) if Path(folder) == ROOT else set())


def clean_env():
    """This process's environment without anything that would put the checkout on the import path."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    return env | {"PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "MPLBACKEND": "Agg"}


def check_run(args, cwd):
    result = subprocess.run(args, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel, the venv it is installed in, a working folder outside the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=ignored)
    pip = [sys.executable, "-m", "pip"]
    check_run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", "."], source)
    (wheel,) = (tmp / "dist").glob("constrained_vae-*.whl")
    venv = tmp / "venv"
    check_run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp)
    # the venv has no pip of its own: the system's, which it sees, installs into the running interpreter's prefix
    check_run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", wheel], tmp)
    work = tmp / "work"
    work.mkdir()
    return wheel, venv, work


def test_the_wheel_holds_the_package_its_type_marker_and_license_and_no_tests(installed):
    wheel, _, _ = installed
    assert wheel.name == f"constrained_vae-{__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "constrained_vae/py.typed" in names
    assert "constrained_vae/cli/main.py" in names
    assert f"constrained_vae-{__version__}.dist-info/licenses/LICENSE" in names
    assert {name.split("/")[0] for name in names} == {"constrained_vae", f"constrained_vae-{__version__}.dist-info"}
    entry_points = zipfile.ZipFile(wheel).read(f"constrained_vae-{__version__}.dist-info/entry_points.txt").decode()
    assert "cvae = constrained_vae.cli.main:main" in entry_points.splitlines()


def test_the_installed_package_is_the_one_imported_outside_the_checkout(installed):
    _, venv, work = installed
    where = check_run([venv / "bin" / "python", "-c", "import constrained_vae; print(constrained_vae.__file__)"], work)
    assert Path(where.strip()).resolve().is_relative_to(venv.resolve())
    assert (venv / "bin" / "cvae").read_text().startswith(f"#!{venv / 'bin' / 'python'}\n")


def test_the_installed_cvae_answers_help_and_version_and_trains_a_run(installed):
    _, venv, work = installed
    cvae = venv / "bin" / "cvae"
    assert check_run([cvae, "run", "--help"], work).startswith("usage: cvae run ")
    assert check_run([cvae, "--version"], work) == f"cvae {__version__}\n"
    out = check_run(
        [cvae, "run", "--epsilon", "5", "--dataset", "linear-gaussian", "--steps", "20", "--out", "R", "--no-progress"],
        work,
    )
    assert out.startswith("run folder: R\n")
    run = work / "R"
    assert {"config.json", "metrics.csv", "summary.json", "checkpoint.pt"} <= {path.name for path in run.iterdir()}
    assert json.loads((run / "summary.json").read_text())["steps"] == 20

"""The package's version, and the git commit of the checkout it runs from (config.json records both)."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
GIT_TIMEOUT_S = 5.0  # git answers in milliseconds; a hung one must not hold up a run


def git_revision(package_dir: Path = PACKAGE_DIR) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout whose top folder holds ``package_dir``; ``(None, None)``
    when it is not run from a checkout of its own (no git, an installed copy, git failing or slow).

    Dirty means tracked files differ from the commit; untracked files are not counted (run and
    sweep folders often sit inside the checkout). A copy installed inside some other repository
    (a virtual environment in a project's folder) is not that repository's checkout: the package
    must be ``<top>/constrained_vae``.
    """
    # GIT_DIR and its kin (set inside git hooks) would point git at another repository
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=package_dir, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    found = (git("rev-parse", "--show-toplevel", "HEAD") or "").splitlines()
    if len(found) != 2 or Path(found[0]).resolve() != Path(package_dir).resolve().parent:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return found[1].strip(), None if status is None else bool(status.strip())


@functools.cache
def this_revision() -> tuple[str | None, bool | None]:
    """:func:`git_revision` of this package, asked once per process (the code it runs was read at import)."""
    return git_revision()

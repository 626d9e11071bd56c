"""What every command line shares: the error form, the exit codes, and settings read off the flags.

Errors a user can cause print one line, ``error: …``, and exit with status 2 (bad flags included:
:class:`ArgumentParser`); a diverged run exits with status 1 after naming the step; Ctrl-C writes
a checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from constrained_vae.errors import ConfigError
from constrained_vae.run.migrations import upgrade_settings
from constrained_vae.run.settings import DATASET_DEFAULTS, IMAGE_DEFAULTS, RECORDS, RunConfig, typed_settings

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 1
EXIT_FAILED = 1  # a sweep with a failed point
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error form: one line ``error: …`` on stderr, exit status 2.

    With ``raise_errors`` set, a bad flag raises :class:`ConfigError` with that line's message instead (for a
    caller that checks another command's flags before running it).
    """

    raise_errors = False

    def error(self, message: str) -> NoReturn:
        if self.raise_errors:
            raise ConfigError(f"{message} (see {self.prog} --help)")
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def user_error(error: Exception) -> int:
    """Print ``error: MESSAGE`` on stderr; the exit status of bad input."""
    print(f"error: {error}", file=sys.stderr)
    return EXIT_USER_ERROR


def dataset_default(key: str) -> str:
    """``default: 64 (dsprites and the other 64×64 image datasets), 128 (digits), …``: the default of a
    setting that depends on the dataset."""
    by_value: dict[str, list[str]] = {}
    for dataset, defaults in DATASET_DEFAULTS.items():
        value = defaults[key]
        text = (
            "one per --spectrum value"
            if value is None and key == "latent_dim"
            else format(value, "g" if isinstance(value, float) else "")
        )
        names = by_value.setdefault(text, [])
        name = "dsprites and the other 64×64 image datasets" if defaults is IMAGE_DEFAULTS else dataset
        if name not in names:
            names.append(name)
    if len(by_value) == 1:
        return f"default: {next(iter(by_value))}"
    return "default: " + ", ".join(f"{value} ({', '.join(names)})" for value, names in by_value.items())


def settings_from_args(args: argparse.Namespace) -> dict:
    """The RunConfig fields the user gave on the command line (others are None)."""
    names = RunConfig.__dataclass_fields__
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _read_yaml(text: str) -> Any:
    """YAML 1.1 as PyYAML reads it, except that ``5e-4`` (no decimal point) is a number, as in JSON, not a
    string. PyYAML is imported here, for the files that need it (a GPU machine may run without it)."""
    import yaml

    class SettingsLoader(yaml.SafeLoader):
        pass

    number = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
    SettingsLoader.add_implicit_resolver("tag:yaml.org,2002:float", number, list("-+0123456789"))
    try:
        return yaml.load(text, SettingsLoader)
    except yaml.YAMLError as error:
        raise ValueError(str(error)) from None


def settings_from_file(path: str | Path) -> dict[str, Any]:
    """The RunConfig settings in a JSON (``.json``) or YAML (``.yaml``, ``.yml``) file of the keys
    ``config.json`` holds, so that a run's own ``config.json`` starts the same run; its records
    (:data:`~constrained_vae.run.settings.RECORDS`: the mode and provenance) are left out, and a
    ``config.json`` of an older version is read as that version ran it. ConfigError naming the file
    (and the key) for anything else."""
    path = Path(path)
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"--config {path}: expected a .json, .yaml or .yml file")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix.lower() == ".json" else _read_yaml(text)
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot be read ({error.strerror or error})") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError and YAML's errors (as _read_yaml raises them)
        reason = " ".join(str(error).split())
        raise ConfigError(f"--config {path} is not valid {path.suffix[1:].upper()}: {reason}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path} should hold a mapping of settings to values, not {type(values).__name__}")
    try:
        values = typed_settings(values)
    except ConfigError as error:
        raise ConfigError(f"--config {path}: {error}") from None
    return {key: value for key, value in upgrade_settings(values).items() if key not in RECORDS}

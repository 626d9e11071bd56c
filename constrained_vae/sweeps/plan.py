"""A sweep planned: every point checked before anything is written, and what each one needs.

Re-running the same command finishes a sweep: a point whose ``summary.json`` has the sweep's
number of steps is skipped, one with a checkpoint is resumed from it (bit for bit, as
``run.py --resume`` does), and a folder with a config but no checkpoint (stopped before its
first checkpoint) is cleared and started afresh.

**Re-running with another grid.** A sweep folder holds one set of run settings. A command with
the same run settings (compared once dataset defaults are filled in, so ``--steps 4000`` equals
the linear-gaussian default) whose ``--epsilon``, ``--beta`` and ``--seeds`` each include every
recorded value extends the sweep: ``sweep.json`` is rewritten with the new command and grid,
and only the new points train. The settings a resumed run may change but its step count
(``--device``, ``--threads``, ``--compile``, ``--log-every``, ``--checkpoint-every``, ``--tensorboard``) may
change too, as with ``run.py --resume``: the points still to train take the new values, and
``sweep.json`` records the new command. So may the settings only ε points take (``--objective``,
the multiplier's) while the sweep has no ε points yet: no trained point took them (a fixed-β sweep,
which refuses them, extended by its ε points). Anything else (other settings, or a recorded value
left out) is refused, so the command in ``sweep.json`` reproduces every point in the folder
(up to rounding where those settings changed). A ``--preset`` is read as the sweep recorded it
(``preset_settings`` in ``sweep.json``), so that a preset changed since does not change its points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constrained_vae.errors import ConfigError, DataError, SweepError, UserInputError
from constrained_vae.run import folder, locks, memory, tensorboard
from constrained_vae.run.loop import resume_config
from constrained_vae.run.migrations import recorded_preset
from constrained_vae.run.presets import preset_settings
from constrained_vae.run.settings import RESUMABLE_OVERRIDES, RunConfig
from constrained_vae.sweeps.grid import (
    EPSILON_POINT_FIELDS,
    GRID_FIELDS,
    Grid,
    Point,
    check_settings_apply,
    check_sweepable,
)
from constrained_vae.sweeps.records import read_json_record
from constrained_vae.sweeps.tasks import Task

SWEEP_FILE = "sweep.json"
# Run settings a re-run of the sweep may change: those of a resumed run but its steps (they define the points).
RESUMABLE_SWEEP_SETTINGS = tuple(key for key in RESUMABLE_OVERRIDES if key != "steps")


@dataclass
class SweepPlan:
    """A validated sweep: what ``sweep.json`` should hold and which points to train."""

    sweep_dir: Path
    record: dict[str, Any]
    write_record: bool  # False when sweep.json already records this command (its grid and run settings)
    added_points: int  # points new to an existing sweep (0 for a new one)
    names: list[str]
    changed_settings: list[str] = field(default_factory=list)  # resumable settings this command changes, as flags
    tasks: list[Task] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def plan_sweep(sweep_dir: str | Path, grid: Grid, settings: dict[str, Any], command: Sequence[str]) -> SweepPlan:
    """Validate the grid, every point's config and the sweep folder; decide what each point needs.

    Raises :class:`UserInputError` (a :class:`ConfigError`, :class:`DataError` or
    :class:`SweepError`) for any bad input; writes nothing.
    """
    sweep_dir = Path(sweep_dir)
    recorded = read_record(sweep_dir)
    preset = sweep_preset(settings, recorded)
    configs = point_configs(grid, with_preset(settings, preset))
    check_resources(next(iter(configs.values())))
    record = sweep_record(command, grid, settings, preset)
    if recorded is None:
        check_new_sweep_folder(sweep_dir)
        added, changed = 0, []
    else:
        changed = check_extends(sweep_dir, recorded, grid, with_preset(settings, preset))
        added = len(grid.points()) - len(recorded["points"])
    names = [point.name for point in configs]
    plan = SweepPlan(sweep_dir, record, recorded is None or added > 0 or bool(changed), added, names, changed)
    for point, config in configs.items():
        task = task_for(sweep_dir / point.name, config)
        if task is None:
            plan.skipped.append(point.name)
        else:
            plan.tasks.append(task)
    return plan


def point_configs(grid: Grid, settings: dict[str, Any]) -> dict[Point, RunConfig]:
    """Every point's resolved config; :class:`ConfigError` for the first bad one."""
    check_settings_apply(settings, has_epsilon_points=bool(grid.epsilon))
    check_sweepable(settings)
    if not grid.epsilon and not grid.beta:
        raise ConfigError("give --epsilon and/or --beta values to sweep over")
    configs = {point: point.config(settings).resolved() for point in grid.points()}
    names = [point.name for point in configs]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ConfigError(f"values too close to tell apart in folder names ({', '.join(clashes)}); space them out")
    return configs


def check_resources(config: RunConfig) -> None:
    """What every point needs that a config cannot check by itself: the data file, the memory of a step, and
    the tensorboard package for ``--tensorboard``.

    (The device is Ray's to provide: ``--device cuda`` needs ``--gpus-per-run``, see
    :func:`~constrained_vae.sweeps.ray_executor.checked_resources`.)
    """
    if config.data_path is not None and not Path(config.data_path).is_file():
        raise DataError(f"--data-path {config.data_path} is not a file")
    memory.check_config_fits(config)
    if config.tensorboard:
        tensorboard.check_available()


def sweep_record(
    command: Sequence[str], grid: Grid, settings: dict[str, Any], preset: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The contents of ``sweep.json``; ``preset`` the settings of the preset that ``settings`` name."""
    record = {
        "command": list(command),
        "grid": grid.to_dict(),
        "run_settings": dict(settings),
        "points": [point.to_dict() for point in grid.points()],
    }
    return record if preset is None else record | {"preset_settings": dict(preset)}


def sweep_preset(settings: dict[str, Any], recorded: dict[str, Any] | None) -> dict[str, Any] | None:
    """The settings of the preset ``settings`` name: as the ``recorded`` sweep ran it when it names the
    same one, else as it is now; None without a preset."""
    name = settings.get("preset")
    if name is None:
        return None
    if recorded is not None and recorded["run_settings"].get("preset") == name:
        return recorded_preset(recorded)
    return preset_settings(name)


def with_preset(settings: dict[str, Any], preset: dict[str, Any] | None) -> dict[str, Any]:
    """``settings`` with the ``preset``'s filling those not given."""
    return settings if preset is None else preset | settings


def read_record(sweep_dir: Path) -> dict[str, Any] | None:
    """``sweep.json`` of ``sweep_dir``, or None when there is none."""

    def fault(record: Any) -> str:
        Grid.from_dict(record["grid"])
        missing = {"command", "run_settings", "points"} - set(record)
        if missing:
            return f"it lacks {', '.join(sorted(missing))}"
        kinds = {"command": list, "run_settings": dict, "points": list}
        wrong = [key for key, kind in kinds.items() if not isinstance(record[key], kind)]
        return ", ".join(f"{key} is not a {kinds[key].__name__}" for key in wrong)

    return read_json_record(sweep_dir / SWEEP_FILE, "sweep record", fault)


def check_new_sweep_folder(sweep_dir: Path) -> None:
    """A new sweep goes into a missing or empty folder, never among other files.

    Empty means: nothing but a lock file and temporary files a killed sweep left (it never wrote its record).
    """
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise SweepError(f"--out {sweep_dir} exists and is not a folder")
    if sweep_dir.is_dir() and any(not locks.is_bookkeeping(path) for path in sweep_dir.iterdir()):
        raise SweepError(f"--out {sweep_dir} is not empty and holds no {SWEEP_FILE}; choose a new folder")


def check_extends(sweep_dir: Path, recorded: dict[str, Any], grid: Grid, settings: dict[str, Any]) -> list[str]:
    """Refuse a command that is not the recorded sweep or an extension of it (see the module docstring);
    ``settings`` hold their preset's (:func:`with_preset`).

    Returns the settings it changes that a re-run may change (:data:`RESUMABLE_SWEEP_SETTINGS`, and
    the settings only ε points take while the sweep has no ε points: no trained point took them), as flags.
    """
    old = resolved_settings(with_preset(recorded["run_settings"], recorded_preset(recorded)))
    new = resolved_settings(settings)
    differing = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    may_change = RESUMABLE_SWEEP_SETTINGS
    if not Grid.from_dict(recorded["grid"]).epsilon:
        may_change += EPSILON_POINT_FIELDS
    refused = [key for key in differing if key not in may_change]
    if refused:
        flags = ", ".join("--" + key.replace("_", "-") for key in refused)
        raise SweepError(
            f"{sweep_dir} holds a sweep with other run settings (differs in {flags}); "
            f"its command is in {sweep_dir / SWEEP_FILE}: re-run that, or choose another --out"
        )
    missing = Grid.from_dict(recorded["grid"]).values_missing_from(grid)
    if missing:
        left_out = "; ".join(f"{flag} {' '.join(f'{v:g}' for v in values)}" for flag, values in missing.items())
        raise SweepError(
            f"{sweep_dir} holds a sweep with values this command leaves out ({left_out}); "
            "a re-run must give every recorded value (it may add more)"
        )
    return ["--" + key.replace("_", "-") for key in differing]


def resolved_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The run settings with dataset defaults filled in (the grid's fields left out)."""
    config = RunConfig.from_dict({**settings, "epsilon": 1.0, "beta": None}).resolved()  # any budget: it is left out
    return {key: value for key, value in config.to_dict().items() if key not in (*GRID_FIELDS, "mode")}


def task_for(run_dir: Path, config: RunConfig) -> Task | None:
    """What the point in ``run_dir`` needs: None (finished), a fresh run, a restart or a resume."""
    if folder.is_started(run_dir):
        saved = saved_config(run_dir, config)
        return None if is_finished(run_dir, config.steps) else Task(run_dir.name, run_dir, saved, "resume")
    if folder.holds_run(run_dir):
        return Task(run_dir.name, run_dir, config, "restart")
    return Task(run_dir.name, run_dir, config, "new")


def saved_config(run_dir: Path, config: RunConfig) -> RunConfig:
    """The config of the run in ``run_dir``, extended to ``config``'s steps; SweepError if it is another run."""
    overrides = {key: value for key, value in config.to_dict().items() if key != "mode"}
    try:
        return resume_config(run_dir, overrides)
    except UserInputError as error:
        raise SweepError(f"{run_dir} holds a run that is not this sweep's point: {error}") from None


def is_finished(run_dir: Path, steps: int) -> bool:
    """Whether the run's summary records ``steps`` steps."""
    try:
        return folder.read_summary(run_dir).get("steps") == steps
    except (ValueError, AttributeError):  # no summary yet (RunFolderError), or not readable JSON
        return False

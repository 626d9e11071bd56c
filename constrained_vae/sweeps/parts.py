"""The study (:mod:`constrained_vae.sweeps.study`) trained in parts, each part one command on a machine lent
for a short window, whose only lasting output is a few files of bounded size.

    STUDY/study.json   the study's record, with ``parts``: the budget, the schedule (steps per run), and
                       each planned part: its phase, grid, runs, command, and whether it is imported
    STUDY/sweep/NAME   each imported run, an ordinary run folder (``evaluate.py``, figures and
                       ``analysis/study.py`` read it as any other), plus ``dci_sample.npz``

The commands (:mod:`constrained_vae.cli.study`):

1. **plan** (here): checks the study's flags as the whole study does, sizes the parts and writes
   ``study.json``. A part is a sub-grid (β or ε values × seeds) trained as one bank and scored, within
   one command of ``command_seconds``: ``startup_seconds + n · (steps / steps_per_second +
   score_seconds)``, where ``steps_per_second`` is the bank's aggregate throughput (run-steps per second
   summed over its members). Its packed output must fit ``max_bytes`` (:class:`Packing`): per run, the
   final weights (the checkpoint less Adam's moments), DCI's sample of codes, the training log and the
   small JSON files. The fixed-β parts are planned at once; the ε parts once every fixed-β part is
   imported (their matched ε are the KLs those runs reached). The ε parts are budgeted beforehand at
   their most (every β matched to an ε of its own, besides the extra ε). When ``max_parts`` cannot hold
   the requested steps, every run of the study is shortened alike to the most steps that fit (two
   significant digits), and the plan says so; seeds and points are never dropped.
2. **part** (on the machine lent): trains the part's runs in banks in its own process (no Ray), scores
   each on every metric but DCI, draws DCI's sample (the codes DCI would score, float32 by default: the
   posterior means exactly), and packs the runs into ``OUT/part-K.tar.NN`` pieces with a sha256 manifest
   (:mod:`constrained_vae.sweeps.pieces`).
3. **import** (here): checks every piece and the part's record against the plan (its command, its runs,
   their steps), then moves the runs into ``STUDY/sweep`` and marks the part imported in ``study.json``;
   a refused import leaves the study folder as it was (the runs are staged, then renamed into place).
   Then DCI is computed from each run's saved sample with the planned predictor (the published boosted
   trees by default; minutes per run at the published sizes), run by run, so that an interrupted import
   resumes where it stopped. Re-importing an imported part is skipped; a part that did not come back is
   listed as still to run, with its command.
"""

from __future__ import annotations

import io
import json
import math
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from constrained_vae.errors import ConfigError, SweepError, UserInputError
from constrained_vae.evaluation.scoring import (
    check_codes_dtype,
    dci_from_sample,
    dci_sample,
    find_run_dirs,
    scoring_versions,
    write_metrics,
)
from constrained_vae.files import atomic_write_json
from constrained_vae.run import folder, locks
from constrained_vae.run.presets import PRESETS
from constrained_vae.run.settings import RunConfig
from constrained_vae.run.trainee import Trainee
from constrained_vae.sweeps import pieces
from constrained_vae.sweeps.grid import Point
from constrained_vae.sweeps.records import read_json_record
from constrained_vae.sweeps.study import (
    STUDY_FILE,
    SWEEP_DIR,
    StudyEvaluation,
    StudyPlan,
    SweepCommands,
    check_sweep_args,
    evaluate_study,
    fixed_beta_args,
    is_evaluated,
    matched_epsilons,
    study_fault,
)

MIB = 2**20
# Defaults for a window whose command may run 10 minutes and return at most 8 files of ≤ 16 MiB, 64 MiB in all.
DEFAULT_COMMAND_SECONDS = 600.0
DEFAULT_STARTUP_SECONDS = 120.0  # unmeasured: interpreter, data, torch.compile of the bank (~45 s on an H100)
DEFAULT_SCORE_SECONDS = 60.0  # unmeasured: every metric but DCI, one run, at the published sizes
DEFAULT_STEPS_PER_SECOND = 1000.0  # unmeasured: a bank's run-steps per second on one GPU; a part measures it
DEFAULT_MAX_RUNS = 42  # runs per bank (the CUDA default bank size)
DEFAULT_PART_MIB = 60.0
DEFAULT_PIECE_MIB = 15.0
MAX_RETURNED_FILES = 8  # a part's pieces and its manifest
LOG_ROW_BYTES = 160  # one row of metrics.csv, at most
RUN_OVERHEAD_BYTES = 64 * 1024  # config, summary, metrics.json, tar headers: a run's small files, at most
SCHEDULE_DIGITS = 2  # significant digits of a shortened schedule
PART_FILE = "part.json"  # the part's record inside its archive
RUNS_DIR = "runs"
OUT_PLACEHOLDER = "$OUT"  # the --out of a planned part's command: the folder its pieces go to
PART_NAME = re.compile(r"^part-[1-9][0-9]*$")
RUN_FILES = (
    folder.CONFIG_FILE,
    folder.TRAINING_LOG,
    folder.SUMMARY_FILE,
    folder.CHECKPOINT_FILE,
    folder.SCORES_FILE,
    folder.DCI_SAMPLE_FILE,
)
PLAN_SETS = ("--executor", "--bank-size")  # sweep flags a part's command sets itself
PHASES = ("fixed", "constrained")


class PartSweeps(SweepCommands, Protocol):
    """A :class:`SweepCommands` that also tells each point's resolved config."""

    def configs(self, argv: Sequence[str]) -> dict[str, RunConfig]:
        """Each point's resolved config, by run name, of ``experiments/sweep.py`` arguments (checked)."""


# ---------------------------------------------------------------------------- the budget


@dataclass(frozen=True)
class Packing:
    """How a part's output is packed: pieces of ``piece_bytes``, ``max_bytes`` in all, codes as ``codes_dtype``."""

    piece_bytes: int = int(DEFAULT_PIECE_MIB * MIB)
    max_bytes: int = int(DEFAULT_PART_MIB * MIB)
    codes_dtype: str = "float32"

    def check(self) -> None:
        """ConfigError naming the flag of the first bad value."""
        check_piece_sizes(self.max_bytes, self.piece_bytes)
        check_codes_dtype(self.codes_dtype)


@dataclass(frozen=True)
class PartBudget:
    """What one part may take: seconds of its command, bytes of its output; and what a run costs.

    ``steps_per_second``: a bank's aggregate throughput (run-steps per second summed over its members);
    ``startup_seconds``: a part's fixed cost; ``score_seconds``: one run's scoring (all but DCI);
    ``max_parts``: the parts the study may use (None: as many as it needs); ``max_runs``: runs per part;
    ``packing``: how its output is packed, and the most bytes it may take.
    """

    steps_per_second: float = DEFAULT_STEPS_PER_SECOND
    command_seconds: float = DEFAULT_COMMAND_SECONDS
    startup_seconds: float = DEFAULT_STARTUP_SECONDS
    score_seconds: float = DEFAULT_SCORE_SECONDS
    max_parts: int | None = None
    max_runs: int = DEFAULT_MAX_RUNS
    packing: Packing = Packing()

    def check(self) -> None:
        """ConfigError naming the flag of the first bad value."""
        positive = {"--steps-per-second": self.steps_per_second, "--command-seconds": self.command_seconds}
        for flag, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{flag} must be a positive number, got {value:g}")
        for flag, value in {"--startup-seconds": self.startup_seconds, "--score-seconds": self.score_seconds}.items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{flag} must be a non-negative number, got {value:g}")
        if self.startup_seconds >= self.command_seconds:
            raise ConfigError(
                f"--startup-seconds {self.startup_seconds:g} leaves no time "
                f"in --command-seconds {self.command_seconds:g}"
            )
        if self.max_parts is not None and self.max_parts < 2:
            raise ConfigError(f"--max-parts must be at least 2 (a fixed-β part and an ε part), got {self.max_parts}")
        if self.max_runs < 1:
            raise ConfigError(f"--max-runs must be a positive integer, got {self.max_runs}")
        self.packing.check()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_piece_sizes(part_bytes: int, piece_bytes: int) -> None:
    """A part's output in pieces: each of at least 1 KiB, with its manifest at most :data:`MAX_RETURNED_FILES`."""
    if piece_bytes < 1024 or part_bytes < piece_bytes:
        raise ConfigError(
            f"--piece-mib must be at least 1 KiB and at most --max-part-mib, got {piece_bytes / MIB:g} "
            f"and {part_bytes / MIB:g}"
        )
    if math.ceil(part_bytes / piece_bytes) + 1 > MAX_RETURNED_FILES:
        raise ConfigError(
            f"--max-part-mib {part_bytes / MIB:g} in pieces of --piece-mib {piece_bytes / MIB:g} makes more than "
            f"{MAX_RETURNED_FILES - 1} pieces (and a manifest): raise --piece-mib or lower --max-part-mib"
        )


def runs_per_part(budget: PartBudget, steps: int, run_bytes: int) -> int:
    """How many runs of ``steps`` steps (each ``run_bytes`` packed) one part holds (0: not even one)."""
    per_run = steps / budget.steps_per_second + budget.score_seconds
    by_time = (
        math.floor((budget.command_seconds - budget.startup_seconds) / per_run) if per_run > 0 else budget.max_runs
    )
    return max(0, min(by_time, budget.packing.max_bytes // run_bytes, budget.max_runs))


def chunks(items: Sequence, count: int) -> list[tuple]:
    """``items`` in ``count`` contiguous chunks whose sizes differ by at most one (the larger first)."""
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        out.append(tuple(items[start:end]))
        start = end
    return out


def split_grid(values: Sequence[float], seeds: Sequence[int], capacity: int) -> list[tuple[tuple, tuple]]:
    """The values × seeds grid as the fewest sub-grids of at most ``capacity`` runs each, the most even among
    those, then the fewest seed groups (``[(values, seeds), …]``, seed groups outermost); SweepError when
    ``capacity`` < 1."""
    if capacity < 1:
        raise SweepError("not even one run fits a part")
    best: tuple[int, int, int, int] | None = None
    for seed_groups in range(1, len(seeds) + 1):
        per_seed_group = math.ceil(len(seeds) / seed_groups)
        if capacity < per_seed_group:
            continue
        value_groups = math.ceil(len(values) / (capacity // per_seed_group))
        largest = math.ceil(len(values) / value_groups) * per_seed_group
        candidate = (value_groups * seed_groups, largest, seed_groups, value_groups)
        best = candidate if best is None or candidate < best else best
    assert best is not None  # one seed per group always fits a capacity ≥ 1
    _, _, seed_groups, value_groups = best
    return [(v, s) for s in chunks(seeds, seed_groups) for v in chunks(values, value_groups)]


def count_parts(values: int, seeds: int, capacity: int) -> float:
    """The parts of :func:`split_grid` (infinite when not even one run fits)."""
    return len(split_grid(range(values), range(seeds), capacity)) if capacity >= 1 else math.inf


def shortened(steps: int) -> int:
    """``steps`` rounded down to :data:`SCHEDULE_DIGITS` significant digits (at least 1)."""
    unit = 10 ** max(0, len(str(steps)) - SCHEDULE_DIGITS)
    return max(1, steps // unit * unit)


def fitting_steps(
    budget: PartBudget, requested: int, phases: Sequence[tuple[int, int]], run_bytes: Callable[[int], int]
) -> int:
    """The most steps per run, up to ``requested``, at which every phase (``(values, seeds)``) fits its parts
    and all of them together ``budget.max_parts``: ``requested`` itself when it fits, else the largest count
    that does, rounded down (:func:`shortened`). SweepError when not even one step fits."""

    def parts(steps: int) -> float:
        capacity = runs_per_part(budget, steps, run_bytes(steps))
        return sum(count_parts(values, seeds, capacity) for values, seeds in phases)

    def fits(steps: int) -> bool:
        needed = parts(steps)
        return needed < math.inf and (budget.max_parts is None or needed <= budget.max_parts)

    if fits(requested):
        return requested
    if not fits(1):
        runs = sum(values * seeds for values, seeds in phases)
        capacity = runs_per_part(budget, 1, run_bytes(1))
        raise SweepError(
            f"the budget cannot hold the study even at 1 step per run: {runs} runs, at most {capacity} per part "
            f"(bounded by --max-part-mib, --max-runs or the seconds a run's scoring takes), "
            f"do not fit --max-parts {budget.max_parts}"
        )
    low, high = 1, requested  # fits(low), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return shortened(low)


def estimate_run_bytes(config: RunConfig, evaluation: StudyEvaluation | None, codes_dtype: str) -> Callable[[int], int]:
    """A run's packed bytes against its steps, at most: its final weights (measured on a fresh model), DCI's
    sample, its training log and small files."""
    trainee = Trainee.build(RunConfig.from_dict(config.to_dict() | {"device": "cpu"}).resolved())
    buffer = io.BytesIO()
    torch.save(folder.final_weights(trainee.state_dict()), buffer)
    weights = len(buffer.getvalue())
    sample = 0
    if evaluation is not None and "dci" in evaluation.protocols:
        protocol = evaluation.protocols["dci"]
        points = protocol["num_train"] + protocol["num_test"]
        factors = len(getattr(trainee.dataset, "factor_sizes", []) or [])
        sample = points * (config.latent_dim * torch.finfo(getattr(torch, codes_dtype)).bits // 8 + factors)
    return lambda steps: weights + sample + (steps // config.log_every + 2) * LOG_ROW_BYTES + RUN_OVERHEAD_BYTES


# ---------------------------------------------------------------------------- the record


def parts_fault(parts: Any) -> str:
    """What is wrong with ``study.json``'s ``parts`` ("" when nothing is); may raise KeyError or TypeError."""
    if not isinstance(parts, dict):
        return "parts is not an object"
    if isinstance(parts["steps"], bool) or not isinstance(parts["steps"], int) or parts["steps"] < 1:
        return "parts.steps is not a positive integer"
    if not isinstance(parts["planned"], list) or not isinstance(parts["request"], dict):
        return "parts.planned is not a list or parts.request not an object"
    for index, part in enumerate(parts["planned"]):
        if part["name"] != f"part-{index + 1}" or part["phase"] not in PHASES:
            return f"parts.planned[{index}] is not part-{index + 1} of a phase {' or '.join(PHASES)}"
        if not isinstance(part["runs"], list) or not all(isinstance(run, str) for run in part["runs"]):
            return f"{part['name']}'s runs are not a list of names"
        if not isinstance(part["command"], list) or not (
            part["imported"] is None or isinstance(part["imported"], dict)
        ):
            return f"{part['name']}'s command is not a list or its import record not an object"
    return ""


def read_parts_study(study_dir: Path) -> dict[str, Any] | None:
    """``study.json``, checked, its parts too when it has them; None when there is none."""

    def fault(record: Any) -> str:
        return study_fault(record) or (parts_fault(record["parts"]) if "parts" in record else "")

    return read_json_record(study_dir / STUDY_FILE, "study record", fault)


def planned_study(study_dir: Path) -> dict[str, Any]:
    """``study.json`` of a study planned in parts; SweepError when ``study_dir`` holds none."""
    record = read_parts_study(study_dir)
    if record is None or "parts" not in record:
        raise SweepError(f"{study_dir} holds no study planned in parts (experiments/study.py plan --help)")
    return record


def phase_args(sweep_args: Sequence[str], phase: str) -> list[str]:
    """The sweep flags of a phase's parts: the ε points' flags left out of the fixed-β phase's, and ``--steps``
    (the plan gives every part its steps)."""
    args = fixed_beta_args(sweep_args) if phase == "fixed" else list(sweep_args)
    return without_flag(args, "--steps")


def without_flag(args: Sequence[str], flag: str) -> list[str]:
    """``args`` without ``flag`` and its value, in either form (``--flag V``, ``--flag=V``)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            kept.append(arg)
    return kept


def grid_args(phase: str, values: Sequence[float], seeds: Sequence[int]) -> list[str]:
    flag = "--beta" if phase == "fixed" else "--epsilon"
    return [flag, *(f"{v:g}" for v in values), "--seeds", *(str(s) for s in seeds)]


def run_names(phase: str, values: Sequence[float], seeds: Sequence[int]) -> list[str]:
    """The run folders of a sub-grid, value by value."""
    if phase == "fixed":
        return [Point(None, v, s).name for v in values for s in seeds]
    return [Point(v, None, s).name for v in values for s in seeds]


def planned_parts(request: dict[str, Any], phase: str, values: Sequence[float], first: int) -> list[dict[str, Any]]:
    """The parts of one phase, numbered from ``first``: each sub-grid with its runs and command."""
    seeds = request["seeds"]
    parts = []
    for index, (group, seed_group) in enumerate(split_grid(values, seeds, request["runs_per_part"])):
        name = f"part-{first + index}"
        command = [
            request["prog"],
            "part",
            name,
            "--out",
            OUT_PLACEHOLDER,
            *grid_args(phase, group, seed_group),
            "--steps",
            str(request["steps"]),
            *phase_args(request["sweep_args"], phase),
            "--executor",
            "local",
            "--bank-size",
            str(len(group) * len(seed_group)),
            "--no-progress",
            *request["part_flags"],
        ]
        parts.append(
            {
                "name": name,
                "phase": phase,
                "values": [float(v) for v in group],
                "seeds": [int(s) for s in seed_group],
                "runs": run_names(phase, group, seed_group),
                "command": command,
                "imported": None,
            }
        )
    return parts


def shell_command(command: Sequence[str]) -> str:
    """A planned part's command as a shell line (``$OUT`` left for the shell)."""
    words = [f'"{OUT_PLACEHOLDER}"' if word == OUT_PLACEHOLDER else shlex.quote(word) for word in command]
    return "python " + " ".join(words)


def status_lines(record: dict[str, Any]) -> list[str]:
    """Each planned part, imported or still to run (with its command), and what is planned later."""
    parts = record["parts"]
    lines = []
    for part in parts["planned"]:
        what = f"{part['name']} ({'fixed β' if part['phase'] == 'fixed' else 'ε'}, {len(part['runs'])} runs)"
        if part["imported"] is not None:
            lines.append(f"{what}: imported")
        else:
            lines.append(f"{what}: to run: {shell_command(part['command'])}")
    if record.get("matched_epsilon") is None:
        lines.append("the ε parts are planned once every fixed-β part is imported (their matched ε)")
    return lines


# ---------------------------------------------------------------------------- plan


def plan_study_parts(
    study_dir: str | Path,
    plan: StudyPlan,
    sweep_args: Sequence[str],
    command: Sequence[str],
    sweeps: PartSweeps,
    budget: PartBudget,
    *,
    prog: str,
    part_flags: Sequence[str],
    evaluation: StudyEvaluation | None,
    log: Callable[[str], None] = print,
) -> int:
    """Plan the study in parts in ``study_dir`` (see the module docstring) and print each part's command.

    ``sweep_args`` are the sweep flags of every part (as for :func:`~constrained_vae.sweeps.study.run_study`);
    ``part_flags`` the part command's own flags (evaluation, pieces), passed on as given. Re-running the
    same plan prints where the study stands; another plan in the same folder is refused. Raises
    :class:`SweepError` (exit 2) before anything is written.
    """
    study_dir = Path(study_dir)
    check_sweep_args(sweep_args)
    clashes = sorted({arg.split("=")[0] for arg in sweep_args} & set(PLAN_SETS))
    if clashes:
        raise SweepError(f"{', '.join(clashes)}: the plan of parts sets these for each part")
    budget.check()
    fixed_probe = [*grid_args("fixed", plan.betas, plan.seeds), *fixed_beta_args(sweep_args)]
    local = ["--executor", "local", "--out", str(study_dir / SWEEP_DIR)]
    config = next(iter(sweeps.configs([*fixed_probe, *local]).values()))
    sweeps.check([*grid_args("constrained", plan.extra_epsilons or [1.0], plan.seeds), *sweep_args, *local])
    epsilon_bound = len(plan.betas) + len(plan.extra_epsilons)  # every β matched to an ε of its own, at most
    run_bytes = estimate_run_bytes(config, evaluation, budget.packing.codes_dtype)
    phases = [(len(plan.betas), len(plan.seeds)), (epsilon_bound, len(plan.seeds))]
    steps = fitting_steps(budget, config.steps, phases, run_bytes)
    request = {
        "prog": command[0],
        "sweep_args": list(sweep_args),
        "part_flags": list(part_flags),
        "budget": budget.to_dict(),
        "seeds": list(plan.seeds),
    }
    recorded = read_parts_study(study_dir) if (study_dir / STUDY_FILE).exists() else None
    if recorded is not None:
        return _replanned(study_dir, plan, request, recorded, log)
    _check_new_folder(study_dir)
    capacity = runs_per_part(budget, steps, run_bytes(steps))
    published = PRESETS[config.preset]["steps"] if config.preset else None
    request |= {"steps": steps, "runs_per_part": capacity}
    parts = {
        "steps": steps,
        "requested_steps": config.steps,
        "published_steps": published,
        "shortened": steps < config.steps,
        "run_bytes": run_bytes(steps),
        "runs_per_part": capacity,
        "evaluation": None if evaluation is None else {"protocols": evaluation.protocols, "seed": evaluation.seed},
        "codes_dtype": budget.packing.codes_dtype,
        "request": request,
        "planned": planned_parts(request, "fixed", plan.betas, 1),
    }
    record = {
        "command": list(command),
        "plan": plan.to_dict(),
        "sweep_args": list(sweep_args),
        "matched_epsilon": None,
        "parts": parts,
    }
    with locks.hold(study_dir):
        if (study_dir / STUDY_FILE).exists():  # another plan got here first
            raise SweepError(f"{study_dir} was planned by another command meanwhile; re-run to see it")
        atomic_write_json(study_dir / STUDY_FILE, record)
    seconds = budget.startup_seconds + capacity * (steps / budget.steps_per_second + budget.score_seconds)
    log(
        f"planned {study_dir}: {steps:,} steps per run, at most {capacity} run(s) per part "
        f"(~{seconds:.0f} s of a {budget.command_seconds:g} s command at {budget.steps_per_second:g} run-steps/s, "
        f"~{run_bytes(steps) / MIB:.1f} MiB per run packed)"
    )
    if steps < config.steps:
        source = f"{config.preset}'s published {published:,}" if published == config.steps else f"{config.steps:,}"
        log(f"SHORTENED: every run trains {steps:,} steps, not {source}: the budget holds no more")
    for line in status_lines(record):
        log(line)
    return 0


def _check_new_folder(study_dir: Path) -> None:
    if study_dir.exists() and not study_dir.is_dir():
        raise SweepError(f"--out {study_dir} exists and is not a folder")
    if study_dir.is_dir() and any(not locks.is_bookkeeping(path) for path in study_dir.iterdir()):
        raise SweepError(f"--out {study_dir} is not empty and holds no {STUDY_FILE}; choose a new folder")


def _replanned(
    study_dir: Path, plan: StudyPlan, request: dict[str, Any], recorded: dict[str, Any], log: Callable[[str], None]
) -> int:
    """The same plan again: print where the study stands. Another plan: SweepError."""
    if "parts" not in recorded:
        raise SweepError(f"{study_dir} holds a study trained whole (experiments/study.py --out); choose another --out")
    kept = {key: recorded["parts"]["request"].get(key) for key in request}
    if recorded["plan"] != plan.to_dict() or kept != request:
        raise SweepError(
            f"{study_dir} holds a study planned otherwise; its command is in {study_dir / STUDY_FILE}: "
            "re-run that, or choose another --out"
        )
    for line in status_lines(recorded):
        log(line)
    return 0


# ---------------------------------------------------------------------------- one part, on the machine lent


def run_part(
    name: str,
    out_dir: str | Path,
    work_dir: str | Path,
    sweep_args: Sequence[str],
    command: Sequence[str],
    sweeps: SweepCommands,
    evaluation: StudyEvaluation | None,
    packing: Packing,
    *,
    log: Callable[[str], None] = print,
) -> int:
    """Train the part's sweep (``sweep_args``, without ``--out``) in ``work_dir``, score its runs (every
    metric of ``evaluation`` but DCI, whose sample is saved instead) and pack them into ``out_dir``.

    An exit status: the sweep's when it does not finish, 1 when the packed part exceeds
    ``packing.max_bytes`` (its pieces are still written), else 0. SweepError for bad input, before
    anything is written; re-running on the same ``work_dir`` goes on from what it holds.
    """
    if not PART_NAME.match(name):
        raise SweepError(f"{name!r} is not a part's name (part-1, part-2, …)")
    packing.check()
    out_dir, work = Path(out_dir), Path(work_dir) / name
    if pieces.manifest_path(out_dir, name).exists():
        raise SweepError(f"{out_dir} already holds {name}'s pieces; give an empty --out")
    sweep_dir = work / SWEEP_DIR
    argv = [*sweep_args, "--out", str(sweep_dir)]
    sweeps.check(argv)
    started = time.perf_counter()
    status = sweeps.run(argv)
    if status != 0:
        return status
    trained = time.perf_counter() - started
    run_dirs = find_run_dirs([sweep_dir])
    started = time.perf_counter()
    if evaluation is not None:
        others = {metric: p for metric, p in evaluation.protocols.items() if metric != "dci"}
        if others:
            evaluate_study(sweep_dir, others, seed=evaluation.seed, device=evaluation.device, log=log)
        if "dci" in evaluation.protocols:
            for run_dir in run_dirs:
                sample = dci_sample(
                    run_dir,
                    evaluation.protocols["dci"],
                    seed=evaluation.seed,
                    device=evaluation.device,
                    codes_dtype=packing.codes_dtype,
                )
                folder.write_dci_sample(run_dir, sample)
    scored = time.perf_counter() - started
    steps = sum(int(folder.read_summary(run_dir)["steps"]) for run_dir in run_dirs)
    record = {
        "part": name,
        "command": list(command),
        "runs": [run_dir.name for run_dir in run_dirs],
        "evaluation": None if evaluation is None else {"protocols": evaluation.protocols, "seed": evaluation.seed},
        "codes_dtype": packing.codes_dtype,
        "seconds": {"training": round(trained, 1), "scoring": round(scored, 1)},
        "run_steps_per_second": round(steps / trained, 1) if trained > 0 else None,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "versions": folder.versions(),
    }
    tree = work / "packed"
    shutil.rmtree(tree, ignore_errors=True)
    for run_dir in run_dirs:
        target = tree / RUNS_DIR / run_dir.name
        target.mkdir(parents=True)
        for file in RUN_FILES:
            if file == folder.CHECKPOINT_FILE:
                folder.copy_final_weights(run_dir, target / file)
            elif (run_dir / file).is_file():
                shutil.copyfile(run_dir / file, target / file)
    atomic_write_json(tree / PART_FILE, record)
    manifest = pieces.pack(tree, out_dir, name, packing.piece_bytes)
    size = manifest["bytes"]
    log(
        f"{name}: {len(run_dirs)} runs trained in {trained:.0f} s ({record['run_steps_per_second']} run-steps/s, "
        f"start-up included), scored in {scored:.0f} s; packed {size / MIB:.1f} MiB in {len(manifest['pieces'])} "
        f"piece(s) + {pieces.manifest_path(out_dir, name).name} in {out_dir}"
    )
    if size > packing.max_bytes:
        print(
            f"error: {name} packed {size / MIB:.1f} MiB, more than --max-part-mib {packing.max_bytes / MIB:g}: "
            "the plan's estimate of a run's bytes fell short (plan a new study folder with a lower --max-part-mib)",
            file=sys.stderr,
        )
        return 1
    return 0


# ---------------------------------------------------------------------------- import


def find_manifests(paths: Sequence[str | Path]) -> list[Path]:
    """The manifests named by ``paths``: manifest files, or folders whose manifests are taken (sorted)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            manifests = sorted(path.glob(f"*{pieces.MANIFEST_SUFFIX}"))
            if not manifests:
                raise SweepError(f"{path} holds no *{pieces.MANIFEST_SUFFIX}: no part came back there")
            found.extend(manifests)
        elif path.name.endswith(pieces.MANIFEST_SUFFIX):
            found.append(path)
        else:
            raise SweepError(f"{path} is neither a folder nor a part's {pieces.MANIFEST_SUFFIX}")
    return found


def import_parts(
    study_dir: str | Path,
    paths: Sequence[str | Path],
    *,
    dci: bool = True,
    log: Callable[[str], None] = print,
) -> int:
    """Import the parts whose pieces ``paths`` hold into ``study_dir``, then compute the DCI still missing
    (unless not ``dci``); print where the study stands. 0, or SweepError (exit 2) for a part refused."""
    study_dir = Path(study_dir)
    planned_study(study_dir)
    manifests = find_manifests(paths)
    with locks.hold(study_dir):
        record = planned_study(study_dir)
        for manifest in manifests:
            record = import_part(study_dir, record, manifest, log)
        if dci:
            score_dci(study_dir, record, log)
    for line in status_lines(record):
        log(line)
    return 0


def part_member(name: str) -> bool:
    """Whether a packed part may hold ``name``: its record, or one of a run's files."""
    parts = name.split("/")
    if parts == [PART_FILE]:
        return True
    return (
        len(parts) == 3 and parts[0] == RUNS_DIR and pieces.NAME.match(parts[1]) is not None and parts[2] in RUN_FILES
    )


def normalised(command: Sequence[str]) -> list[str]:
    """A part's command with its folders (``--out``, ``--work``) left out: what a plan fixes."""
    return without_flag(without_flag(command, "--out"), "--work")


def import_part(study_dir: Path, record: dict[str, Any], manifest_file: Path, log: Callable[[str], None]) -> dict:
    """Check the part of ``manifest_file`` against the plan and move its runs into the study (see the
    module docstring); the new record. A refused part leaves the study folder as it was."""
    manifest = pieces.read_manifest(manifest_file)
    name = manifest["name"]
    planned = {part["name"]: part for part in record["parts"]["planned"]}
    if name not in planned:
        raise SweepError(
            f"{manifest_file}: {name} is not a planned part of {study_dir} (planned: {', '.join(planned) or 'none'})"
        )
    part = planned[name]
    if part["imported"] is not None:
        log(f"{name}: already imported (sha256 {part['imported']['sha256'][:12]}…); skipped")
        return record
    staging = study_dir / f".importing-{name}"
    shutil.rmtree(staging, ignore_errors=True)  # a killed import's (the study folder is held)
    try:
        staging.mkdir()
        pieces.join(manifest_file, staging / "part.tar")
        pieces.extract(staging / "part.tar", staging / "tree", part_member)
        runs = check_part(staging / "tree", part, record)
        new = json.loads(json.dumps(record))
        new_part = next(p for p in new["parts"]["planned"] if p["name"] == name)
        received = json.loads((staging / "tree" / PART_FILE).read_text())
        new_part["imported"] = {
            "sha256": manifest["sha256"],
            "bytes": manifest["bytes"],
            "seconds": received.get("seconds"),
            "run_steps_per_second": received.get("run_steps_per_second"),
            "device": received.get("device"),
        }
        moved, created = move_runs(runs, study_dir / SWEEP_DIR)
        try:
            plan_epsilon_parts(study_dir, new)
            atomic_write_json(study_dir / STUDY_FILE, new)
        except BaseException:
            unmove_runs(moved, runs, study_dir / SWEEP_DIR, created)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    imported = new_part["imported"]
    log(
        f"{name}: imported {len(runs)} runs into {study_dir / SWEEP_DIR} (trained on {imported['device']} at "
        f"{imported['run_steps_per_second']} run-steps/s)"
    )
    return new


def check_part(tree: Path, part: dict[str, Any], record: dict[str, Any]) -> list[Path]:
    """The runs of an extracted part, checked against its plan: its command, its runs, their steps and points,
    its evaluation and DCI samples; SweepError naming the first difference."""
    name = part["name"]
    try:
        received = json.loads((tree / PART_FILE).read_text())
    except (OSError, ValueError) as error:
        raise SweepError(f"{name}: its {PART_FILE} is missing or unreadable ({type(error).__name__})") from None
    if not isinstance(received, dict) or received.get("part") != name:
        raise SweepError(f"{name}: its {PART_FILE} is the record of another part")
    ran, planned = normalised(received.get("command") or []), normalised(part["command"])
    if ran != planned:
        extra = [word for word in ran if word not in planned]
        lacking = [word for word in planned if word not in ran]
        how = f"added {' '.join(extra[:4]) or 'nothing'}, lacked {' '.join(lacking[:4]) or 'nothing'}"
        raise SweepError(
            f"{name} was trained by another command than the one planned in {STUDY_FILE} "
            f"({how if extra or lacking else 'its words in another order'}): run the planned command"
        )
    if sorted(received.get("runs") or []) != sorted(part["runs"]):
        raise SweepError(f"{name} holds runs {received.get('runs')}, not the planned {part['runs']}")
    if received.get("evaluation") != record["parts"]["evaluation"]:
        raise SweepError(f"{name} was scored at another protocol than the planned one")
    runs = []
    for run in part["runs"]:
        run_dir = tree / RUNS_DIR / run
        try:
            config = folder.read_config(run_dir)
            summary = folder.read_summary(run_dir)
            folder.read_metrics(run_dir)
        except (UserInputError, ValueError) as error:
            raise SweepError(f"{name}: run {run} is incomplete or corrupt ({error})") from None
        point = Point(config.epsilon, config.beta, config.seed)
        if point.name != run or config.steps != record["parts"]["steps"] or summary.get("steps") != config.steps:
            raise SweepError(f"{name}: run {run} is not the planned point of {record['parts']['steps']:,} steps")
        if record["parts"]["evaluation"] and "dci" in record["parts"]["evaluation"]["protocols"]:
            sample = folder.read_dci_sample(run_dir)
            if int(sample["step"]) != config.steps:
                raise SweepError(f"{name}: run {run}'s DCI sample is not of its final step")
        runs.append(run_dir)
    return runs


def move_runs(runs: Sequence[Path], sweep_dir: Path) -> tuple[list[Path], bool]:
    """Rename each run folder into ``sweep_dir``, all or none (a failure moves the moved ones back); the
    moved folders, and whether ``sweep_dir`` was made for them."""
    clashes = [run.name for run in runs if (sweep_dir / run.name).exists()]
    if clashes:
        raise SweepError(
            f"{sweep_dir} already holds {', '.join(clashes)}: not from an imported part (an import stopped "
            "midway?); move them aside and import again"
        )
    created = not sweep_dir.exists()
    sweep_dir.mkdir(exist_ok=True)
    moved: list[Path] = []
    try:
        for run in runs:
            run.rename(sweep_dir / run.name)
            moved.append(sweep_dir / run.name)
    except BaseException:
        unmove_runs(moved, runs, sweep_dir, created)
        raise
    return moved, created


def unmove_runs(moved: Sequence[Path], runs: Sequence[Path], sweep_dir: Path, created: bool) -> None:
    """Undo :func:`move_runs`: each moved run back where it came from; ``sweep_dir`` removed when it was made."""
    origins = {run.name: run for run in runs}
    for path in moved:
        path.rename(origins[path.name])
    if created and sweep_dir.is_dir() and not any(sweep_dir.iterdir()):
        sweep_dir.rmdir()


def plan_epsilon_parts(study_dir: Path, record: dict[str, Any]) -> None:
    """Once every fixed-β part is imported: the matched ε (recorded) and the ε parts (appended to the plan)."""
    parts = record["parts"]
    if record.get("matched_epsilon") is not None:
        return
    if any(p["imported"] is None for p in parts["planned"] if p["phase"] == "fixed"):
        return
    plan = StudyPlan(**{key: tuple(values) for key, values in record["plan"].items()})
    matched = matched_epsilons(study_dir / SWEEP_DIR, plan)
    record["matched_epsilon"] = matched
    epsilons = sorted({*matched.values(), *plan.extra_epsilons})
    request = parts["request"] | {"steps": parts["steps"], "runs_per_part": parts["runs_per_part"]}
    parts["planned"] += planned_parts(request, "constrained", epsilons, len(parts["planned"]) + 1)


def score_dci(study_dir: Path, record: dict[str, Any], log: Callable[[str], None]) -> int:
    """DCI of every imported run that lacks it, from its saved sample, at the planned protocol; the number scored."""
    evaluation = record["parts"]["evaluation"]
    if not evaluation or "dci" not in evaluation["protocols"]:
        return 0
    protocol, seed = evaluation["protocols"]["dci"], evaluation["seed"]
    imported = [run for part in record["parts"]["planned"] if part["imported"] is not None for run in part["runs"]]
    pending = [
        study_dir / SWEEP_DIR / run
        for run in imported
        if not is_evaluated(study_dir / SWEEP_DIR / run, {"dci": protocol}, seed)
    ]
    for index, run_dir in enumerate(pending, start=1):
        started = time.perf_counter()
        with locks.hold(run_dir):
            sample = folder.read_dci_sample(run_dir)
            scores = dci_from_sample(sample, protocol)
            seconds = round(time.perf_counter() - started, 3)
            result = {
                "scores": {"dci": scores},
                "protocols": {"dci": protocol},
                "seed": int(sample["seed"]),
                "step": int(sample["step"]),
                "dataset": folder.read_config(run_dir).dataset,
                "representation": "posterior mean",
                "seconds": {"dci": seconds},
                "versions": scoring_versions(),
            }
            write_metrics(run_dir, result)
        log(f"DCI {index}/{len(pending)}: {run_dir.name} disentanglement {scores['disentanglement']} ({seconds:.0f} s)")
    return len(pending)

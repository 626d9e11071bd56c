"""The paper-scale dSprites study: fixed β against the KL budgets those β reach.

    STUDY/study.json   the study: β values, extra ε, seeds, the command; once the fixed-β
                       runs have finished, the matched ε of each β
    STUDY/sweep/       one ordinary sweep folder (``experiments/sweep.py``) holding every run:
                       ``beta{B}-seed{S}`` and ``eps{E}-seed{S}``, each with ``metrics.json``
    STUDY/analysis/    written by ``analysis/study.py`` (:mod:`constrained_vae.plots.study`)

The phases, each through the sweep's command (a :class:`SweepCommands`, so that a phase is
exactly the ``experiments/sweep.py`` command a user could type) and the evaluation's
:func:`~constrained_vae.evaluation.scoring.evaluate_paths`:

1. the fixed-β sweep: every β × seed;
2. the matched ε of each β: the seed-mean tail KL its runs reached (nats per sample), to
   :data:`MATCHED_DIGITS` significant digits, recorded in ``study.json``;
3. the same sweep extended by the constrained points: (matched ε ∪ extra ε) × seed;
4. every run scored at the evaluation protocol (by default the published sizes), one run
   at a time; a run whose ``metrics.json`` already holds this protocol and seed for its
   final step is skipped.

**Resumable.** Re-running the same command continues from wherever the study stopped:
the sweep skips finished points and resumes interrupted ones from their checkpoints, the
matched ε are read from ``study.json`` once recorded (never recomputed), and evaluated
runs are skipped. A command with other β, extra ε or seeds than the recorded study is
refused before anything runs, as is a flag for the sweeps that their own checks refuse;
run settings other than the recorded sweep's are refused by the sweep itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from constrained_vae.core.objectives import ConstrainedSettings, FixedBetaSettings
from constrained_vae.errors import SweepError
from constrained_vae.evaluation.scoring import (
    check_metric_seed,
    evaluate_paths,
    find_run_dirs,
    json_ready,
    protocols_with,
)
from constrained_vae.files import atomic_write_json
from constrained_vae.run import folder, locks
from constrained_vae.run.settings import check_seed
from constrained_vae.sweeps.grid import EPSILON_POINT_FIELDS, Point
from constrained_vae.sweeps.records import read_json_record

STUDY_FILE = "study.json"
SWEEP_DIR = "sweep"
MATCHED_DIGITS = 3  # significant digits of a matched ε: stable folder names, far below the seed spread
DEFAULT_BETAS = (1.0, 2.0, 4.0, 8.0, 16.0)
DEFAULT_EXTRA_EPSILONS = (5.0, 10.0, 20.0, 40.0)
DEFAULT_SEEDS = (0, 1, 2)
EXIT_REFUSED = 2  # a sweep's exit status for input it refused, having written nothing
GRID_FLAGS = ("--epsilon", "--beta", "--seed", "--seeds", "--out")  # the study sets these for the sweep
# The flags only ε points take (each with one value): the fixed-β phase leaves them out, as its sweep refuses them.
EPSILON_POINT_FLAGS = tuple("--" + name.replace("_", "-") for name in EPSILON_POINT_FIELDS)


class SweepCommands(Protocol):
    """How the study runs a sweep phase: ``experiments/sweep.py`` arguments, checked or run."""

    def check(self, argv: Sequence[str]) -> None:
        """Raise :class:`~constrained_vae.errors.UserInputError` for what the sweep would refuse; run nothing."""

    def run(self, argv: Sequence[str]) -> int:
        """Run the sweep; its exit status (0: every point finished, 1: a point failed, 2: bad input, 130)."""


@dataclass(frozen=True)
class StudyPlan:
    """What the study trains: fixed β values, extra ε (nats per sample) and seeds."""

    betas: tuple[float, ...] = DEFAULT_BETAS
    extra_epsilons: tuple[float, ...] = DEFAULT_EXTRA_EPSILONS
    seeds: tuple[int, ...] = DEFAULT_SEEDS

    def check(self) -> None:
        """ConfigError naming the study's flag (``--betas``, ``--extra-epsilons``, ``--seeds``) for a bad value,
        by the rules of the settings they become (a fixed β, a constrained ε, a run's seed)."""
        for name, values, settings, field in (
            ("betas", self.betas, FixedBetaSettings, "beta"),
            ("extra_epsilons", self.extra_epsilons, ConstrainedSettings, "epsilon"),
        ):
            check = settings.__dataclass_fields__[field].metadata["check"]
            for value in values:
                check(name, value)
        for seed in self.seeds:
            check_seed(seed, "seeds")

    def to_dict(self) -> dict[str, list]:
        return {"betas": list(self.betas), "extra_epsilons": list(self.extra_epsilons), "seeds": list(self.seeds)}


def matched_epsilon(kl: float) -> float:
    """A KL in nats per sample as a budget: rounded to :data:`MATCHED_DIGITS` significant digits."""
    return float(f"{kl:.{MATCHED_DIGITS}g}")


def fixed_run_kls(sweep_dir: Path, beta: float, seeds: Sequence[int]) -> list[float]:
    """The tail KL (nats per sample) of the finished fixed-β run at ``beta`` of each seed."""
    return [folder.read_summary(sweep_dir / Point(None, beta, seed).name)["kl"] for seed in seeds]


def matched_epsilons(sweep_dir: Path, plan: StudyPlan) -> dict[str, float]:
    """β (as ``f"{β:g}"``) → the matched ε: the seed-mean KL its fixed runs reached."""
    matched = {}
    for beta in plan.betas:
        kls = fixed_run_kls(sweep_dir, beta, plan.seeds)
        matched[f"{beta:g}"] = matched_epsilon(math.fsum(kls) / len(kls))
    return matched


def study_fault(record: Any) -> str:
    """What is wrong with a ``study.json`` record ("" when nothing is); may raise KeyError or TypeError."""
    malformed = [key for key in StudyPlan().to_dict() if not isinstance(record["plan"][key], list)]
    if malformed:
        return f"plan {', '.join(malformed)} not lists"
    if not all(isinstance(record[key], list) for key in ("command", "sweep_args")):
        return "command and sweep_args must be lists"
    matched = record.get("matched_epsilon")
    if matched is None:
        return ""
    betas = {f"{beta:g}" for beta in record["plan"]["betas"]}
    if not isinstance(matched, dict) or set(matched) != betas:
        return f"matched_epsilon must map each β of the plan ({', '.join(sorted(betas))}) to its ε"
    bad = [b for b, e in matched.items() if isinstance(e, bool) or not isinstance(e, (int, float)) or not e > 0]
    if bad or not all(math.isfinite(e) for e in matched.values()):
        return f"matched_epsilon of β {', '.join(bad) or '?'} is not a positive number"
    return ""


def read_study(study_dir: Path) -> dict[str, Any] | None:
    """``study.json`` of ``study_dir``, or None when there is none."""
    return read_json_record(study_dir / STUDY_FILE, "study record", study_fault)


def check_study_folder(study_dir: Path, plan: StudyPlan, recorded: dict[str, Any] | None) -> None:
    """Refuse a folder that holds another study, or other files and no study."""
    if recorded is None:
        if study_dir.exists() and not study_dir.is_dir():
            raise SweepError(f"--out {study_dir} exists and is not a folder")
        if study_dir.is_dir() and any(not locks.is_bookkeeping(path) for path in study_dir.iterdir()):
            raise SweepError(f"--out {study_dir} is not empty and holds no {STUDY_FILE}; choose a new folder")
        return
    if "parts" in recorded:
        raise SweepError(
            f"{study_dir} holds a study trained in parts: continue it with experiments/study.py plan, part and "
            "import (see its command in study.json), or choose another --out"
        )
    if recorded["plan"] != plan.to_dict():
        raise SweepError(
            f"{study_dir} holds a study of {recorded['plan']}, not {plan.to_dict()}; "
            f"its command is in {study_dir / STUDY_FILE}: re-run that, or choose another --out"
        )


def check_sweep_args(sweep_args: Sequence[str]) -> None:
    """The sweep flags passed through may not set the grid or the folder: the study does."""
    clashes = sorted({arg.split("=")[0] for arg in sweep_args} & set(GRID_FLAGS))
    if clashes:
        raise SweepError(f"{', '.join(clashes)}: the study sets these; use --betas, --extra-epsilons, --seeds, --out")


def fixed_beta_args(sweep_args: Sequence[str]) -> list[str]:
    """``sweep_args`` without the flags only ε points take (:data:`EPSILON_POINT_FLAGS`), in either
    form, ``--flag VALUE`` or ``--flag=VALUE``."""
    kept: list[str] = []
    skip_value = False
    for arg in sweep_args:
        if skip_value:
            skip_value = False
        elif arg in EPSILON_POINT_FLAGS:
            skip_value = True
        elif arg.split("=")[0] not in EPSILON_POINT_FLAGS:
            kept.append(arg)
    return kept


def sweep_command(sweep_dir: Path, plan: StudyPlan, epsilons: Sequence[float], sweep_args: Sequence[str]) -> list[str]:
    """The ``experiments/sweep.py`` arguments of one phase: every β, the given ε, the seeds. Without ε
    (the fixed-β phase) the flags only ε points take are left out (:func:`fixed_beta_args`): the phase
    with ε extends that sweep by them."""
    grid = ["--beta", *(f"{b:g}" for b in plan.betas), "--seeds", *(str(s) for s in plan.seeds)]
    if epsilons:
        grid += ["--epsilon", *(f"{e:g}" for e in epsilons)]
    return [*grid, "--out", str(sweep_dir), *(sweep_args if epsilons else fixed_beta_args(sweep_args))]


def is_evaluated(run_dir: Path, protocols: dict[str, dict[str, Any]], seed: int) -> bool:
    """Whether ``RUN/metrics.json`` holds every metric of ``protocols`` at ``seed`` for the run's final step."""
    scores = folder.read_scores(run_dir)
    if not scores or scores.get("seed") != seed or scores.get("step") != folder.read_summary(run_dir).get("steps"):
        return False
    recorded, scored = scores.get("protocols", {}), scores.get("scores", {})
    return all(recorded.get(name) == settings and name in scored for name, settings in json_ready(protocols).items())


def evaluate_study(
    sweep_dir: Path,
    protocols: dict[str, dict[str, Any]],
    *,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> int:
    """Score every run of the study's sweep not yet scored at ``protocols``; the number scored now."""
    scored = 0
    for run_dir in find_run_dirs([sweep_dir]):
        if is_evaluated(run_dir, protocols, seed):
            continue
        evaluate_paths([run_dir], seed=seed, protocols=protocols, device=device, log=log)
        scored += 1
    return scored


@dataclass(frozen=True)
class StudyEvaluation:
    """How the study scores its runs: ``protocols`` (metric → settings) at ``seed`` on ``device``."""

    protocols: dict[str, dict[str, Any]]
    seed: int = 0
    device: str = "cpu"


def run_study(
    study_dir: str | Path,
    plan: StudyPlan,
    sweep_args: Sequence[str],
    command: Sequence[str],
    sweeps: SweepCommands,
    *,
    evaluate: bool = True,
    protocol_overrides: dict[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    eval_seed: int = 0,
    eval_device: str = "cpu",
    log: Callable[[str], None] = print,
) -> int:
    """Train and evaluate the study in ``study_dir`` (see the module docstring); an exit status.

    ``sweep_args`` are ``experiments/sweep.py`` flags for every phase (run settings such as
    ``--preset``, ``--steps``, ``--device``; resources such as ``--gpus-per-run``), run by
    ``sweeps``. Returns the sweep's status when a phase does not finish (1: a point failed,
    2: bad input, 130: interrupted; the sweep has printed why), else 0. The evaluation scores
    ``metrics`` (default: all) at their published protocols with ``protocol_overrides`` applied
    (see :func:`~constrained_vae.evaluation.scoring.protocols_with`). Raises
    :class:`SweepError` (exit 2) for a command that is not this folder's study, before
    anything is written.
    """
    study_dir = Path(study_dir)
    plan.check()
    check_sweep_args(sweep_args)
    for epsilons in ([], plan.extra_epsilons or [1.0]):  # each phase's flags, as its sweep will parse them
        sweeps.check(sweep_command(study_dir / SWEEP_DIR, plan, epsilons, sweep_args))
    evaluation = StudyEvaluation(protocols_with(protocol_overrides, metrics, "--eval-"), eval_seed, eval_device)
    check_metric_seed(eval_seed, "--eval-seed")
    check_study_folder(study_dir, plan, read_study(study_dir))  # before the folder is touched
    with locks.hold(study_dir):  # one study per folder; checked again under the lock
        recorded = read_study(study_dir)
        check_study_folder(study_dir, plan, recorded)
        record = {"command": list(command), "plan": plan.to_dict(), "sweep_args": list(sweep_args)}
        record["matched_epsilon"] = (recorded or {}).get("matched_epsilon")
        if recorded is None:
            atomic_write_json(study_dir / STUDY_FILE, record)
        return _run_phases(study_dir, plan, record, sweeps, evaluation if evaluate else None, log)


def _run_phases(
    study_dir: Path,
    plan: StudyPlan,
    record: dict[str, Any],
    sweeps: SweepCommands,
    evaluation: StudyEvaluation | None,
    log: Callable[[str], None],
) -> int:
    """The phases of :func:`run_study`, with the study folder held; ``record`` is ``study.json``'s new contents.

    The record is rewritten only once a sweep phase has accepted the command: a command its sweep
    refuses (exit 2, other run settings than the recorded sweep's) leaves the folder as it was.
    """
    sweep_dir = study_dir / SWEEP_DIR
    sweep_args = record["sweep_args"]
    if record["matched_epsilon"] is None:
        log(f"study phase 1: fixed β {', '.join(f'{b:g}' for b in plan.betas)} × {len(plan.seeds)} seeds")
        status = sweeps.run(sweep_command(sweep_dir, plan, [], sweep_args))
        if status != EXIT_REFUSED:
            atomic_write_json(study_dir / STUDY_FILE, record)
        if status != 0:
            return status
        record["matched_epsilon"] = matched_epsilons(sweep_dir, plan)
        atomic_write_json(study_dir / STUDY_FILE, record)
    matched = record["matched_epsilon"]
    log("matched ε (seed-mean KL of each β, nats): " + ", ".join(f"β={b} → ε={e:g}" for b, e in matched.items()))
    epsilons = sorted({*matched.values(), *plan.extra_epsilons})
    log(f"study phase 2: constrained ε {', '.join(f'{e:g}' for e in epsilons)} × {len(plan.seeds)} seeds")
    status = sweeps.run(sweep_command(sweep_dir, plan, epsilons, sweep_args))
    if status != EXIT_REFUSED:
        atomic_write_json(study_dir / STUDY_FILE, record)
    if status != 0 or evaluation is None:
        return status
    scored = evaluate_study(sweep_dir, evaluation.protocols, seed=evaluation.seed, device=evaluation.device, log=log)
    log(f"study phase 3: {scored} run(s) scored now; every run of {sweep_dir} is scored")
    return 0

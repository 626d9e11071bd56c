"""``experiments/study.py``: the paper-scale dSprites study (:mod:`constrained_vae.sweeps.study`), whole or in
parts (:mod:`constrained_vae.sweeps.parts`): ``experiments/study.py plan|part|import|status …``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from constrained_vae.cli.common import EXIT_INTERRUPTED, ArgumentParser, user_error
from constrained_vae.cli.sweep import PROG as SWEEP_PROG
from constrained_vae.cli.sweep import check_sweep_arguments, sweep_main
from constrained_vae.errors import UserInputError
from constrained_vae.evaluation.metrics import DCI_PREDICTORS, METRICS
from constrained_vae.evaluation.scoring import CODE_DTYPES, check_metric_seed, protocols_with
from constrained_vae.run import folder
from constrained_vae.run.device import resolve_device
from constrained_vae.run.presets import LOCATELLO_2019, PRESETS
from constrained_vae.run.settings import DEVICES, RunConfig
from constrained_vae.sweeps import parts
from constrained_vae.sweeps.study import (
    DEFAULT_BETAS,
    DEFAULT_EXTRA_EPSILONS,
    DEFAULT_SEEDS,
    StudyEvaluation,
    StudyPlan,
    run_study,
)


class SweepCommandLine:
    """The study's sweeps as ``experiments/sweep.py`` commands, or those of ``prog`` (``cvae sweep``): a
    ``PartSweeps``."""

    def __init__(self, prog: str = SWEEP_PROG) -> None:
        self.prog = prog

    def check(self, argv: Sequence[str]) -> None:
        check_sweep_arguments(argv, self.prog)

    def run(self, argv: Sequence[str]) -> int:
        return sweep_main(argv, self.prog)

    def configs(self, argv: Sequence[str]) -> dict[str, RunConfig]:
        return check_sweep_arguments(argv, self.prog)


PROG = "experiments/study.py"  # the script; `cvae study` passes its own prog


EVAL_SETTINGS = ("num_train", "num_eval", "batch_size", "num_variance_estimate", "num_bins", "predictor")


def study_parser(prog: str = PROG, description: str | None = None) -> argparse.ArgumentParser:
    """The study's own flags; every other flag is handed to each ``experiments/sweep.py`` phase. ``prog``
    names the command in the help and the errors."""
    parser = ArgumentParser(
        prog=prog,
        description=description
        or "The dSprites study: fixed β, constrained ε at the KL each β reaches plus extra ε, over seeds; "
        "then every run scored. Re-running the same command continues an interrupted study. Flags not listed "
        "here (--steps, --device, --gpus-per-run, --workers, --no-progress, ...) go to every sweep phase. "
        f"In parts, for machines lent a few minutes at a time: {PROG} plan|part|import|status --help.",
        allow_abbrev=False,  # a sweep flag must never be read as an abbreviation of one of these
    )
    parser.add_argument("--out", required=True, metavar="STUDY", help="the study folder (new, or one to continue)")
    parser.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=list(DEFAULT_BETAS),
        metavar="B",
        help=f"fixed β values (default: {' '.join(f'{b:g}' for b in DEFAULT_BETAS)})",
    )
    parser.add_argument(
        "--extra-epsilons",
        type=float,
        nargs="*",
        default=list(DEFAULT_EXTRA_EPSILONS),
        metavar="E",
        help="KL budgets ε (nats per sample) trained besides the matched ones "
        f"(default: {' '.join(f'{e:g}' for e in DEFAULT_EXTRA_EPSILONS)})",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(DEFAULT_SEEDS),
        metavar="S",
        help=f"seeds of every point (default: {' '.join(map(str, DEFAULT_SEEDS))})",
    )
    parser.add_argument(
        "--preset",
        default=LOCATELLO_2019,
        choices=[*PRESETS, "none"],
        help=f"the run settings' published setup (default: {LOCATELLO_2019}; none: the dataset defaults)",
    )
    add_evaluation_arguments(parser)
    return parser


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the runs' scoring: ``--no-evaluate`` and ``--eval-*``."""
    evaluation = parser.add_argument_group("evaluation (default: every metric at the published protocol)")
    evaluation.add_argument("--no-evaluate", action="store_true", help="train only")
    evaluation.add_argument("--eval-metrics", help=f"comma-separated subset of {', '.join(METRICS)} (default: all)")
    evaluation.add_argument("--eval-seed", type=int, default=0, help="seed of every metric (default 0)")
    evaluation.add_argument(
        "--eval-device", default="auto", choices=DEVICES, help="the encoder's device (default: auto, CUDA if any)"
    )
    for name in EVAL_SETTINGS[:-1]:
        evaluation.add_argument(
            f"--eval-{name.replace('_', '-')}", type=int, help=f"the metrics' {name} (see experiments/evaluate.py)"
        )
    evaluation.add_argument(
        "--eval-dci-predictor",
        dest="eval_predictor",
        choices=list(DCI_PREDICTORS),
        help="DCI's classifier (default: boosting, the published one)",
    )


def evaluation_from_args(args: argparse.Namespace) -> StudyEvaluation | None:
    """The scoring the evaluation flags ask for, checked (None with ``--no-evaluate``); ConfigError for a bad one."""
    overrides = {name: getattr(args, f"eval_{name}") for name in EVAL_SETTINGS}
    protocols = protocols_with(
        {k: v for k, v in overrides.items() if v is not None},
        args.eval_metrics.split(",") if args.eval_metrics else None,
        "--eval-",
    )
    check_metric_seed(args.eval_seed, "--eval-seed")
    if args.no_evaluate:
        return None
    return StudyEvaluation(protocols, args.eval_seed, str(resolve_device(args.eval_device)))


def study_main(argv: Sequence[str] | None = None, prog: str = PROG, sweep_prog: str = SWEEP_PROG) -> int:
    """Parse ``argv`` and run the study; the exit status of :func:`run_study` (2 for bad input).

    ``prog`` and ``sweep_prog`` are the study's and the sweep's commands as a user types them (``cvae study``,
    ``cvae sweep``): the help's, and the first words of the commands ``study.json`` and ``sweep.json`` record.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PART_COMMANDS:
        return parts_main(argv)
    args, sweep_args = study_parser(prog).parse_known_args(argv)
    if args.preset != "none":
        sweep_args = ["--preset", args.preset, *sweep_args]
    plan = StudyPlan(tuple(b + 0.0 for b in args.betas), tuple(e + 0.0 for e in args.extra_epsilons), tuple(args.seeds))
    overrides = {name: getattr(args, f"eval_{name}") for name in EVAL_SETTINGS}
    try:
        folder.check_name(args.out, "--out")
        return run_study(
            args.out,
            plan,
            sweep_args,
            [*prog.split(), *argv],
            SweepCommandLine(sweep_prog),
            evaluate=not args.no_evaluate,
            protocol_overrides={k: v for k, v in overrides.items() if v is not None},
            metrics=args.eval_metrics.split(",") if args.eval_metrics else None,
            eval_seed=args.eval_seed,
            eval_device=str(resolve_device(args.eval_device)),
        )
    except UserInputError as error:
        return user_error(error)
    except KeyboardInterrupt:
        print(f"\ninterrupted: re-run the same command to continue the study in {args.out}", file=sys.stderr)
        return EXIT_INTERRUPTED


# ---------------------------------------------------------------------------- the study in parts

PART_COMMANDS = ("plan", "part", "import", "status")


def add_packing_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a part's packed output."""
    packing = parser.add_argument_group("a part's output (pieces with a sha256 manifest)")
    packing.add_argument(
        "--piece-mib",
        type=float,
        default=parts.DEFAULT_PIECE_MIB,
        help=f"largest piece, MiB (default {parts.DEFAULT_PIECE_MIB:g})",
    )
    packing.add_argument(
        "--max-part-mib",
        type=float,
        default=parts.DEFAULT_PART_MIB,
        help=f"a part's whole output, MiB (default {parts.DEFAULT_PART_MIB:g})",
    )
    packing.add_argument(
        "--codes-dtype",
        choices=CODE_DTYPES,
        default="float32",
        help="DCI's saved codes: float32 (default: the posterior means exactly) or float16 (half the bytes)",
    )


def plan_parser() -> argparse.ArgumentParser:
    parser = study_parser(
        f"{PROG} plan",
        "Plan the study in parts, each one command on a GPU lent for a short window: the fixed-β parts now, the "
        "ε parts once those are imported. Prints each part's command. Takes the study's flags; flags not listed "
        "here (--steps, --batch-size, ...) go to every part's sweep. Re-running it prints where the study stands.",
    )
    budget = parser.add_argument_group("the budget of one part")
    budget.add_argument(
        "--steps-per-second",
        type=float,
        default=parts.DEFAULT_STEPS_PER_SECOND,
        help="a bank's run-steps per second, summed over its members (default "
        f"{parts.DEFAULT_STEPS_PER_SECOND:g}: UNMEASURED; each imported part reports what it measured)",
    )
    budget.add_argument(
        "--command-seconds",
        type=float,
        default=parts.DEFAULT_COMMAND_SECONDS,
        help=f"longest command (default {parts.DEFAULT_COMMAND_SECONDS:g})",
    )
    budget.add_argument(
        "--startup-seconds",
        type=float,
        default=parts.DEFAULT_STARTUP_SECONDS,
        help=f"a part's start-up and margin (default {parts.DEFAULT_STARTUP_SECONDS:g}, unmeasured)",
    )
    budget.add_argument(
        "--score-seconds",
        type=float,
        default=parts.DEFAULT_SCORE_SECONDS,
        help=f"scoring one run, every metric but DCI (default {parts.DEFAULT_SCORE_SECONDS:g}, unmeasured)",
    )
    budget.add_argument(
        "--max-parts", type=int, help="parts the study may use; fewer shorten every run alike (default: no limit)"
    )
    budget.add_argument(
        "--max-runs", type=int, default=parts.DEFAULT_MAX_RUNS, help="runs per part (default: %(default)s)"
    )
    add_packing_arguments(parser)
    return parser


def part_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=f"{PROG} part",
        description="Train one planned part of the study (the command `plan` printed), without Ray, score it "
        "(all but DCI, whose codes are saved) and pack it into OUT as pieces with a manifest. Flags not listed "
        "here go to the part's sweep.",
        allow_abbrev=False,
    )
    parser.add_argument("name", metavar="PART", help="the part's name (part-1, part-2, ...)")
    parser.add_argument("--out", required=True, metavar="OUT", help="the folder for the pieces and the manifest")
    parser.add_argument(
        "--work", metavar="DIR", help="the folder the runs train in (default: a folder under the system's temp)"
    )
    add_evaluation_arguments(parser)
    add_packing_arguments(parser)
    return parser


def import_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=f"{PROG} import",
        description="Check the pieces of returned parts against the plan, move their runs into the study, "
        "and compute DCI from their saved codes. A refused part changes nothing; an imported one is skipped.",
    )
    parser.add_argument("--out", required=True, metavar="STUDY", help="the study folder (of `plan`)")
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="folders holding returned pieces, or their manifests (none: only the DCI still to compute)",
    )
    parser.add_argument("--no-dci", action="store_true", help="import only; DCI on a later import")
    return parser


def status_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=f"{PROG} status", description="The parts of a study: imported, or to run.")
    parser.add_argument("--out", required=True, metavar="STUDY", help="the study folder (of `plan`)")
    return parser


def mib(value: float) -> int:
    return int(value * parts.MIB)


def packing_from_args(args: argparse.Namespace) -> parts.Packing:
    return parts.Packing(mib(args.piece_mib), mib(args.max_part_mib), args.codes_dtype)


def packing_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--piece-mib",
        f"{args.piece_mib:g}",
        "--max-part-mib",
        f"{args.max_part_mib:g}",
        "--codes-dtype",
        args.codes_dtype,
    ]


def evaluation_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The evaluation flags ``args`` gives other than their defaults, as flags again (for a part's command)."""
    flags = ["--no-evaluate"] if args.no_evaluate else []
    for action in parser._actions:
        dest = action.dest
        if dest.startswith("eval_") and getattr(args, dest) not in (None, action.default):
            flags += [action.option_strings[0], str(getattr(args, dest))]
    return flags


def plan_main(argv: Sequence[str]) -> int:
    parser = plan_parser()
    args, sweep_args = parser.parse_known_args(argv)
    if args.preset != "none":
        sweep_args = ["--preset", args.preset, *sweep_args]
    plan = StudyPlan(tuple(b + 0.0 for b in args.betas), tuple(e + 0.0 for e in args.extra_epsilons), tuple(args.seeds))
    budget = parts.PartBudget(
        args.steps_per_second,
        args.command_seconds,
        args.startup_seconds,
        args.score_seconds,
        args.max_parts,
        args.max_runs,
        packing_from_args(args),
    )
    return parts.plan_study_parts(
        args.out,
        plan,
        sweep_args,
        [PROG, "plan", *argv],
        SweepCommandLine(),
        budget,
        prog=PROG,
        part_flags=[*evaluation_flags(args, parser), *packing_flags(args)],
        evaluation=evaluation_from_args(args),
    )


def part_main(argv: Sequence[str]) -> int:
    args, sweep_args = part_parser().parse_known_args(argv)
    work = args.work or str(Path(tempfile.gettempdir()) / "constrained-vae-parts")
    packing = packing_from_args(args)
    return parts.run_part(
        args.name,
        args.out,
        work,
        sweep_args,
        [PROG, "part", *argv],
        SweepCommandLine(),
        evaluation_from_args(args),
        packing,
        log=lambda line: print(line, flush=True),
    )


def import_main(argv: Sequence[str]) -> int:
    args = import_parser().parse_args(argv)
    return parts.import_parts(args.out, args.paths, dci=not args.no_dci)


def status_main(argv: Sequence[str]) -> int:
    args = status_parser().parse_args(argv)
    record = parts.planned_study(Path(args.out))
    for line in parts.status_lines(record):
        print(line)
    return 0


def parts_main(argv: Sequence[str]) -> int:
    """``experiments/study.py plan|part|import|status …``; 2 for bad input, 130 when interrupted."""
    command, rest = argv[0], list(argv[1:])
    main = {"plan": plan_main, "part": part_main, "import": import_main, "status": status_main}[command]
    try:
        return main(rest)
    except UserInputError as error:
        return user_error(error)
    except KeyboardInterrupt:
        print(f"\ninterrupted: re-run the same {command} command to go on", file=sys.stderr)
        return EXIT_INTERRUPTED

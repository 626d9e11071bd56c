"""``experiments/study.py``: the paper-scale dSprites study (:mod:`constrained_vae.sweeps.study`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from constrained_vae.cli.common import EXIT_INTERRUPTED, ArgumentParser, user_error
from constrained_vae.cli.sweep import check_sweep_arguments, sweep_main
from constrained_vae.errors import UserInputError
from constrained_vae.evaluation.metrics import DCI_PREDICTORS, METRICS
from constrained_vae.run import folder
from constrained_vae.run.device import resolve_device
from constrained_vae.run.presets import LOCATELLO_2019, PRESETS
from constrained_vae.run.settings import DEVICES
from constrained_vae.sweeps.study import (
    DEFAULT_BETAS,
    DEFAULT_EXTRA_EPSILONS,
    DEFAULT_SEEDS,
    StudyPlan,
    run_study,
)


class SweepCommandLine:
    """The study's sweeps as ``experiments/sweep.py`` commands (a ``SweepCommands``)."""

    def check(self, argv: Sequence[str]) -> None:
        check_sweep_arguments(argv)

    def run(self, argv: Sequence[str]) -> int:
        return sweep_main(argv)


PROG = "experiments/study.py"


EVAL_SETTINGS = ("num_train", "num_eval", "batch_size", "num_variance_estimate", "num_bins", "predictor")


def study_parser() -> argparse.ArgumentParser:
    """The study's own flags; every other flag is handed to each ``experiments/sweep.py`` phase."""
    parser = ArgumentParser(
        prog=PROG,
        description="The dSprites study: fixed β, constrained ε at the KL each β reaches plus extra ε, over seeds; "
        "then every run scored. Re-running the same command continues an interrupted study. Flags not listed "
        "here (--steps, --device, --gpus-per-run, --workers, --no-progress, ...) go to every sweep phase.",
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
    return parser


def study_main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the study; the exit status of :func:`run_study` (2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, sweep_args = study_parser().parse_known_args(argv)
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
            [PROG, *argv],
            SweepCommandLine(),
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

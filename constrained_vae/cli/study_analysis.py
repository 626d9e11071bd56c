"""``analysis/study.py``: the study's table, paired comparison, ε ↔ β map and figures."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from constrained_vae.analysis.study import DEFAULT_SELECT_BY
from constrained_vae.analysis.sweep_table import load_sweep
from constrained_vae.cli.common import ArgumentParser, user_error
from constrained_vae.errors import SweepError, UserInputError
from constrained_vae.plots.study import ANALYSIS_DIR, write_study_analysis
from constrained_vae.run.settings import check_seed


def analysis_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="analysis/study.py", description="The study's table, paired comparison, ε ↔ β map and figures."
    )
    parser.add_argument("study", metavar="STUDY", help="the folder of experiments/study.py --out")
    parser.add_argument("--reference", metavar="SWEEP", help="a sweep whose ε ↔ β map to compare (the 3,000-step one)")
    parser.add_argument(
        "--select-by",
        default=DEFAULT_SELECT_BY,
        help=f"the score that picks each family's best run for its traversals (default: {DEFAULT_SELECT_BY})",
    )
    parser.add_argument("--no-traversals", action="store_true", help="skip the traversal figures")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device of the traversals' decoder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    return parser


def analysis_main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, write the analysis, print the report; 2 for bad input."""
    args = analysis_parser().parse_args(argv)
    try:
        check_seed(args.seed)
        if args.reference is not None:  # read before anything is written into STUDY/analysis/
            try:
                load_sweep(args.reference)
            except UserInputError as error:
                raise SweepError(f"--reference: {error}") from None
        report, paths = write_study_analysis(
            args.study,
            reference=args.reference,
            select_by=args.select_by,
            traversals=not args.no_traversals,
            device=args.device,
            seed=args.seed,
        )
    except UserInputError as error:
        return user_error(error)
    print(report)
    print(f"\nwrote {len(paths)} files into {Path(args.study) / ANALYSIS_DIR}")
    return 0

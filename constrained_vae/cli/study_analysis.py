"""``analysis/study.py``: the study's table, paired comparison, ε ↔ β map and figures."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from constrained_vae.analysis.study import DEFAULT_SELECT_BY
from constrained_vae.analysis.sweep_table import load_sweep
from constrained_vae.cli.common import ArgumentParser, user_error
from constrained_vae.errors import SweepError, UserInputError
from constrained_vae.plots.study import ANALYSIS_DIR, write_study_analysis

PROG = "analysis/study.py"  # the script; `cvae study-analysis` passes its own prog


def analysis_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The study analysis's flags; ``prog`` names the command in the help and the errors."""
    parser = ArgumentParser(prog=prog, description="The study's table, paired comparison, ε ↔ β map and figures.")
    parser.add_argument("study", metavar="STUDY", help="the folder of experiments/study.py --out")
    parser.add_argument("--reference", metavar="SWEEP", help="a sweep whose ε ↔ β map to compare (the 3,000-step one)")
    parser.add_argument(
        "--select-by",
        metavar="SCORE",
        help="the score (a column such as mig.mig; one the runs hold) that picks each family's best run for its "
        f"traversals (default: {DEFAULT_SELECT_BY}, when the runs hold it)",
    )
    parser.add_argument("--no-traversals", action="store_true", help="skip the traversal figures")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device of the traversals' decoder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    return parser


def analysis_main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse ``argv``, write the analysis, print the report and its ``warning:`` lines (the same as
    ``tradeoff_curves.py``'s); 2 for bad input, with nothing written. ``prog`` is the command as a user
    types it (the help's and the errors')."""
    args = analysis_parser(prog).parse_args(argv)
    if not 0 <= args.seed < 2**32:  # numpy's generators take no negative seed
        return user_error(f"--seed must be an integer from 0 to {2**32 - 1}, got {args.seed}")
    try:
        reference = None
        if args.reference is not None:  # read before anything is written into STUDY/analysis/
            try:
                reference = load_sweep(args.reference)
            except UserInputError as error:
                raise SweepError(f"--reference: {error}") from None
        report, paths, warnings = write_study_analysis(
            args.study,
            reference=reference,
            select_by=args.select_by,
            traversals=not args.no_traversals,
            device=args.device,
            seed=args.seed,
        )
    except UserInputError as error:
        return user_error(error)
    print(report)
    print(f"\nwrote {len(paths)} files into {Path(args.study) / ANALYSIS_DIR}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0

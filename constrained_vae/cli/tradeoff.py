"""``analysis/tradeoff_curves.py``: a sweep's tradeoff figures and table in SWEEP/analysis/{tradeoff.csv, *.png, *.pdf}.

An ε whose runs did not meet their constraint (tail KL > 1.05 ε) is marked in the table,
the CSV (``constraint_met``) and the figures, and named in a ``warning:`` line on stderr:
λ there had not settled, so its dual estimate is a lower bound on the effective β. An ε whose
runs met it with λ still moving, or with the budget inactive (tail KL ≪ ε, λ at its floor), is
named in a ``warning:`` line too: its λ is no settled effective β.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from constrained_vae.analysis.epsilon_beta import sweep_warnings
from constrained_vae.analysis.sweep_table import load_sweep
from constrained_vae.cli.common import ArgumentParser, user_error
from constrained_vae.errors import UserInputError
from constrained_vae.plots.tradeoff import format_table, write_tradeoff_analysis

PROG = "analysis/tradeoff_curves.py"  # the script; `cvae` passes its own prog


def tradeoff_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The flags; ``prog`` is the command as a user types it (the help's and the errors')."""
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a sweep folder made by experiments/sweep.py")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse ``argv``, write the sweep's tradeoff table and figures, print the table; ``prog`` as in
    :func:`tradeoff_parser`."""
    args = tradeoff_parser(prog).parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        table, paths = write_tradeoff_analysis(sweep)
    except UserInputError as error:
        return user_error(error)
    print(format_table(table))
    print("\nwrote:\n" + "\n".join(f"  {path}" for path in paths))
    for warning in sweep_warnings(sweep):
        print(f"warning: {warning}", file=sys.stderr)
    return 0

"""Tradeoff figures and table of a sweep: writes SWEEP/analysis/{tradeoff.csv, *.png, *.pdf}.

An ε whose runs did not meet their constraint (tail KL > 1.05 ε) is marked in the table,
the CSV (``constraint_met``) and the figures, and named in a ``warning:`` line on stderr:
λ there had not settled, so its dual estimate is a lower bound on the effective β.
"""

import argparse
import sys

from constrained_vae.cli import EXIT_USER_ERROR, ArgumentParser
from constrained_vae.errors import UserInputError
from constrained_vae.tradeoff import load_sweep, unmet_constraints, unmet_warning
from constrained_vae.tradeoff_figures import format_table, write_tradeoff_analysis


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a sweep folder made by experiments/sweep.py")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        table, paths = write_tradeoff_analysis(sweep)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(format_table(table))
    print("\nwrote:\n" + "\n".join(f"  {path}" for path in paths))
    warning = unmet_warning(unmet_constraints(sweep))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

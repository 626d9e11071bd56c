"""Tradeoff figures and table of a sweep: writes SWEEP/analysis/{tradeoff.csv, *.png, *.pdf}."""

import argparse
import sys

from constrained_vae.errors import UserInputError
from constrained_vae.tradeoff_figures import format_table, write_tradeoff_analysis


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep", help="a sweep folder made by experiments/sweep.py")
    args = parser.parse_args()
    try:
        table, paths = write_tradeoff_analysis(args.sweep)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(table))
    print("\nwrote:\n" + "\n".join(f"  {path}" for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())

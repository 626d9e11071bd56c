"""Tradeoff figures and table of a sweep: writes SWEEP/analysis/; see `--help`."""

import sys

from constrained_vae.cli.tradeoff import main

if __name__ == "__main__":
    sys.exit(main())

"""Disentanglement scores of trained runs: writes RUN/metrics.json and prints a table; see `--help`."""

import sys

from constrained_vae.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())

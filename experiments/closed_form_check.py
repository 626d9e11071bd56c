"""Constrained training on linear-Gaussian data against the closed form β*(ε); see `--help`."""

import sys

from constrained_vae.cli.closed_form import main

if __name__ == "__main__":
    sys.exit(main())

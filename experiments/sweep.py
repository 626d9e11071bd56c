"""Train a grid of ε and/or β values × seeds, one run folder per point, in parallel; see `--help`."""

import sys

from constrained_vae.sweep import sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main())

"""Train a grid of ε and/or β values × seeds, one run folder per point, each point a Ray task (on a Ray started
here, or on a cluster's with --address); see `--help`."""

import sys

from constrained_vae.cli.sweep import sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main())

"""The β-VAE paper's figures of a trained run, as PNG files in RUN/figures/; see `--help`."""

import sys

from constrained_vae.cli.figures import main

if __name__ == "__main__":
    sys.exit(main())

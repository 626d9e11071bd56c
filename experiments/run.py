"""Train one constrained (--epsilon) or fixed-β (--beta) VAE; see `--help`."""

import sys

from constrained_vae.cli.run import run_main

if __name__ == "__main__":
    sys.exit(run_main())

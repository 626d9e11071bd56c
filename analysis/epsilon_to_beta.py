"""The effective β of a KL budget ε (or the budget a β amounts to), read off a sweep; see `--help`."""

import sys

from constrained_vae.cli.epsilon_to_beta import main

if __name__ == "__main__":
    sys.exit(main())

"""The paper-scale dSprites study: fixed β, constrained ε at the KLs they reach, seeds, evaluation; see `--help`."""

import sys

from constrained_vae.cli.study import study_main

if __name__ == "__main__":
    sys.exit(study_main())

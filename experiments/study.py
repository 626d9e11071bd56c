"""The dSprites study of issue 9: fixed β, constrained ε at the KLs they reach, seeds, evaluation; see `--help`."""

import sys

from constrained_vae.study import study_main

if __name__ == "__main__":
    sys.exit(study_main())

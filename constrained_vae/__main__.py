"""``python -m constrained_vae COMMAND …``: the ``cvae`` command (:mod:`constrained_vae.cli.main`)."""

import sys

from constrained_vae.cli.main import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m constrained_vae"))

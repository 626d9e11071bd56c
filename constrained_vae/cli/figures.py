"""``analysis/figures.py``: the β-VAE paper's figures of a trained run, as PNG (or PDF) files in RUN/figures/.

Latent traversals (rows ordered by KL), reconstructions beside originals, samples from the
prior, and the KL of each latent dimension in nats.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from constrained_vae.cli.common import ArgumentParser, user_error
from constrained_vae.core.checks import check_positive_int
from constrained_vae.errors import UserInputError
from constrained_vae.plots.figure import DPI, FORMATS, MAX_DPI
from constrained_vae.plots.run_figures import write_figures
from constrained_vae.run.device import resolve_device
from constrained_vae.run.memory import check_fits
from constrained_vae.run.settings import DEVICES, check_seed

# The least memory an image of --num-kl-images takes (its int64 index and one float32 value), for refusing a
# count beyond the machine before any is drawn.
KL_IMAGE_BYTES = 12

PROG = "analysis/figures.py"  # the script; `cvae` passes its own prog


def figures_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The flags; ``prog`` is the command as a user types it (the help's and the errors')."""
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder (config.json and checkpoint.pt)")
    parser.add_argument("--seed", type=int, default=0, help="picks the images shown and the prior samples")
    parser.add_argument("--num-kl-images", type=int, default=1024, help="images averaged for the KL per dimension")
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="default cpu; auto: CUDA if available")
    parser.add_argument("--format", default="png", choices=FORMATS, help="file format (default: png)")
    parser.add_argument("--dpi", type=int, default=DPI, help=f"pixels per inch, 1 to {MAX_DPI} (default: {DPI})")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse ``argv``, write the run's figures, list them; ``prog`` as in :func:`figures_parser`."""
    args = figures_parser(prog).parse_args(argv)
    try:
        check_seed(args.seed)
        check_positive_int("num_kl_images", args.num_kl_images)  # named by its flag, before the run is read
        images = f"--num-kl-images {args.num_kl_images}"
        check_fits(args.num_kl_images * KL_IMAGE_BYTES, "cpu", f"{images} (at least {KL_IMAGE_BYTES} bytes an image)")
        device = resolve_device(args.device).type  # `cuda` without a GPU: a ConfigError, one line
        output = dict(formats=(args.format,), dpi=args.dpi)
        paths = write_figures(args.run, seed=args.seed, num_kl_observations=args.num_kl_images, device=device, **output)
    except (UserInputError, ValueError) as error:
        return user_error(error)
    print("wrote:\n" + "\n".join(f"  {path}" for path in paths))
    return 0

"""The β-VAE paper's figures of a trained run, as PNG files in RUN/figures/.

Latent traversals (rows ordered by KL), reconstructions beside originals, samples from the
prior, and the KL of each latent dimension in nats.
"""

import argparse
import sys

from constrained_vae.errors import UserInputError
from constrained_vae.figures import write_figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder (config.json and checkpoint.pt)")
    parser.add_argument("--seed", type=int, default=0, help="picks the images shown and the prior samples")
    parser.add_argument("--num-kl-images", type=int, default=1024, help="images averaged for the KL per dimension")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args(argv)
    try:
        paths = write_figures(args.run, seed=args.seed, num_kl_observations=args.num_kl_images, device=args.device)
    except (UserInputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("wrote:\n" + "\n".join(f"  {path}" for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Constrained training on linear-Gaussian data against the closed form β*(ε).

Trains one constrained run per (spectrum, ε) and prints a Markdown table of
ε, β*(ε), the learned λ (tail mean ± std), the relative error, and the tail KL.
"""

import argparse
import tempfile
from pathlib import Path

from constrained_vae.core.linear_gaussian import beta_for_rate
from constrained_vae.run.loop import train
from constrained_vae.run.settings import RunConfig, parse_spectrum

DEFAULT_CASES = ["16,8,4,2,1:0.5,1,2,3,5", "9,3,1:0.5,1.5,2.5", "25,20,10,5,2,1,0.5,0.25:2,4,6"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", action="append", help="SPECTRUM:EPS,EPS,… (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="closed-form-"))
    print("| spectrum | ε (nats) | β*(ε) | learned λ | λ error | tail KL | KL error |")
    print("|---|---|---|---|---|---|---|")
    for case in args.case or DEFAULT_CASES:
        spectrum_text, eps_text = case.split(":")
        spectrum = parse_spectrum(spectrum_text)
        for epsilon in (float(e) for e in eps_text.split(",")):
            config = RunConfig(epsilon=epsilon, dataset="linear-gaussian", spectrum=spectrum, seed=args.seed)
            summary = train(config, out / f"{spectrum_text}_eps{epsilon:g}_seed{args.seed}", progress=False)
            beta_star = beta_for_rate(epsilon, spectrum)
            lam, kl = summary["multiplier"], summary["kl"]
            print(
                f"| {spectrum_text} | {epsilon:g} | {beta_star:.4f} | {lam:.4f} ± {summary['multiplier_std']:.4f} "
                f"| {100 * (lam / beta_star - 1):+.2f}% | {kl:.4f} | {100 * (kl / epsilon - 1):+.2f}% |",
                flush=True,
            )


if __name__ == "__main__":
    main()

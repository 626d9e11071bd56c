"""``experiments/closed_form_check.py``: constrained training on linear-Gaussian data against the closed form β*(ε).

Trains one constrained run per (spectrum, ε) and prints a Markdown table of
ε, β*(ε), the learned λ (tail mean ± std), the relative error, and the tail KL.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

from constrained_vae.cli.common import ArgumentParser, user_error
from constrained_vae.core.linear_gaussian import beta_for_rate
from constrained_vae.errors import UserInputError
from constrained_vae.run.loop import train
from constrained_vae.run.settings import RunConfig, parse_spectrum

PROG = "experiments/closed_form_check.py"  # the script; `cvae closed-form` passes its own prog
DEFAULT_CASES = ["16,8,4,2,1:0.5,1,2,3,5", "9,3,1:0.5,1.5,2.5", "25,20,10,5,2,1,0.5,0.25:2,4,6"]


def parse_case(text: str) -> tuple[str, list[float], list[float]]:
    """``"16,8,4:0.5,1"`` → ``("16,8,4", [16.0, 8.0, 4.0], [0.5, 1.0])``: the spectrum as written, its
    values, and the KL budgets ε (nats per sample)."""
    spectrum_text, colon, eps_text = text.partition(":")
    try:
        spectrum = parse_spectrum(spectrum_text)
        epsilons = [float(part) for part in eps_text.split(",") if part.strip()]
    except (UserInputError, ValueError):
        epsilons = []
    if not colon or not epsilons or any(not (math.isfinite(e) and e > 0) for e in epsilons):
        raise argparse.ArgumentTypeError(f"expected SPECTRUM:EPS,EPS,… of positive numbers, got {text!r}")
    return spectrum_text, spectrum, epsilons


def closed_form_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The check's flags; ``prog`` names the command in the help and the errors."""
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--case",
        action="append",
        type=parse_case,
        metavar="SPECTRUM:EPS,…",
        help=f"a data spectrum and its budgets ε (repeatable; default: {' '.join(DEFAULT_CASES)})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse ``argv``, train every (spectrum, ε), print the table row by row; 2 for bad input.

    ``prog`` is the command as a user types it (the help's and the errors').
    """
    args = closed_form_parser(prog).parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="closed-form-"))
    print("| spectrum | ε (nats) | β*(ε) | learned λ | λ error | tail KL | KL error |")
    print("|---|---|---|---|---|---|---|")
    try:
        for spectrum_text, spectrum, epsilons in args.case or [parse_case(case) for case in DEFAULT_CASES]:
            for epsilon in epsilons:
                config = RunConfig(epsilon=epsilon, dataset="linear-gaussian", spectrum=spectrum, seed=args.seed)
                summary = train(config, out / f"{spectrum_text}_eps{epsilon:g}_seed{args.seed}", progress=False)
                beta_star = beta_for_rate(epsilon, spectrum)
                lam, kl = summary["multiplier"], summary["kl"]
                print(
                    f"| {spectrum_text} | {epsilon:g} | {beta_star:.4f} | {lam:.4f} ± {summary['multiplier_std']:.4f} "
                    f"| {100 * (lam / beta_star - 1):+.2f}% | {kl:.4f} | {100 * (kl / epsilon - 1):+.2f}% |",
                    flush=True,
                )
    except UserInputError as error:
        return user_error(error)
    return 0


__all__ = ["closed_form_parser", "main", "parse_case"]

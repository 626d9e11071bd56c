"""Command-line front ends. ``experiments/run.py`` calls :func:`run_main`.

Errors a user can cause print one line, ``error: …``, and exit with status 2;
a diverged run exits with status 1 after naming the step.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from constrained_vae.config import DATASET_DEFAULTS, DATASETS, DEVICES, RunConfig, parse_spectrum
from constrained_vae.errors import TrainingDiverged, UserInputError

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 1


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of one run (shared by ``run.py`` and the sweep)."""
    mode = parser.add_argument_group("objective (exactly one)")
    mode.add_argument(
        "--epsilon", type=float, help="KL budget ε in nats per sample: maximise reconstruction s.t. KL ≤ ε"
    )
    mode.add_argument("--beta", type=float, help="fixed β: train NLL + β·KL (the β-VAE paper's Eq. 4)")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, help="default: dsprites (generated, no download)")
    data.add_argument("--data-path", help="the official dSprites .npz file, for --dataset dsprites-npz")
    data.add_argument("--spectrum", type=_spectrum, help="linear-gaussian eigenvalues, e.g. 16,8,4,2,1")
    data.add_argument("--num-samples", type=int, help="linear-gaussian rows (default 20000)")
    train = parser.add_argument_group("training (defaults depend on the dataset; see README)")
    train.add_argument("--steps", type=int, help="total optimisation steps (with --resume: extend to this many)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, help="primal (Adam) learning rate")
    train.add_argument("--dual-lr", type=float, help="dual (SGD ascent on λ) learning rate")
    train.add_argument("--multiplier-init", type=float, help="initial λ")
    train.add_argument("--latent-dim", type=int, help="latent dimensions (dSprites: 10)")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", choices=DEVICES, help="default: auto (CUDA if available)")
    train.add_argument("--log-every", type=int, help="steps between rows of metrics.csv")
    train.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")


def _spectrum(text: str) -> list[float]:
    try:
        return parse_spectrum(text)
    except UserInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def settings_from_args(args: argparse.Namespace) -> dict:
    """The RunConfig fields the user gave on the command line (others are None)."""
    names = RunConfig.__dataclass_fields__
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def default_run_dir(config: RunConfig) -> Path:
    tag = f"eps{config.epsilon:g}" if config.epsilon is not None else f"beta{config.beta:g}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.dataset}-{tag}-seed{config.seed}-{stamp}"


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Train one β-VAE: KL-constrained (--epsilon, nats) or fixed-β (--beta); writes a run folder.",
    )
    add_run_arguments(parser)
    parser.add_argument("--out", help="new run folder (default: runs/<dataset>-<eps|beta>-seed<s>-<time>)")
    parser.add_argument("--resume", metavar="RUN", help="continue this run from its checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, train, print where the run is and its final figures."""
    from constrained_vae.training import resume_config, train

    args = run_parser().parse_args(argv)
    settings = settings_from_args(args)
    try:
        if args.resume:
            if args.out and Path(args.out) != Path(args.resume):
                raise UserInputError("give either --out (a new run) or --resume (an existing one), not both")
            run_dir = Path(args.resume)
            config = resume_config(run_dir, settings)
        else:
            config = RunConfig(**settings)
            config.validate()
            run_dir = Path(args.out) if args.out else default_run_dir(config)
        summary = train(config, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    print(format_summary(run_dir, summary))
    return 0


def format_summary(run_dir: Path, summary: dict) -> str:
    """The lines ``run.py`` ends with: where the run is, final KL, NLL and λ (or β)."""
    tail = f"means over the last {summary['tail_steps']} of {summary['steps']} steps"
    lines = [f"run folder: {run_dir}", f"{summary['mode']} on {summary['dataset']} ({tail}, nats per sample):"]
    if summary["mode"] == "constrained":
        met = "met" if summary["constraint_satisfied"] else "NOT met"
        lines.append(f"  KL  = {summary['kl']:.3f}  (ε = {summary['epsilon']:g}, constraint {met})")
        lines.append(f"  NLL = {summary['nll']:.3f}")
        lines.append(f"  λ   = {summary['multiplier']:.4f} ± {summary['multiplier_std']:.4f}")
    else:
        lines.append(f"  KL  = {summary['kl']:.3f}")
        lines.append(f"  NLL = {summary['nll']:.3f}")
        lines.append(f"  β   = {summary['multiplier']:g}")
    lines.append(f"  training time {summary['seconds']:.1f} s")
    return "\n".join(lines)


__all__ = ["DATASET_DEFAULTS", "add_run_arguments", "run_main", "run_parser"]

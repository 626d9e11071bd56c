"""Command-line front ends. ``experiments/run.py`` calls :func:`run_main`.

Errors a user can cause print one line, ``error: …``, and exit with status 2
(bad flags included: :class:`ArgumentParser`); a diverged run exits with status 1
after naming the step; Ctrl-C writes a checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from constrained_vae.config import (
    DATASET_DEFAULTS,
    DATASETS,
    DEFAULT_CAPACITY_GAMMA,
    DEFAULT_DUAL_EMA,
    DEFAULT_DUAL_KP,
    DEFAULT_DUAL_UPDATE,
    DEVICES,
    DUAL_RULES,
    DUAL_UPDATES,
    GECO_DUAL_UPDATE,
    OBJECTIVES,
    RunConfig,
    parse_spectrum,
)
from constrained_vae.errors import ConfigError, TrainingDiverged, TrainingInterrupted, UserInputError
from constrained_vae.presets import PRESET_DESCRIPTIONS

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error form: one line ``error: …`` on stderr, exit status 2.

    With ``raise_errors`` set, a bad flag raises :class:`ConfigError` with that line's message instead (for a
    caller that checks another command's flags before running it).
    """

    raise_errors = False

    def error(self, message: str) -> NoReturn:
        if self.raise_errors:
            raise ConfigError(f"{message} (see {self.prog} --help)")
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def dataset_default(key: str) -> str:
    """``default: 64 (dsprites, dsprites-npz), 128 (digits), …`` for a setting whose default depends on the dataset."""
    by_value: dict[str, list[str]] = {}
    for dataset, defaults in DATASET_DEFAULTS.items():
        value = defaults[key]
        text = "one per --spectrum value" if value is None and key == "latent_dim" else f"{value:g}"
        by_value.setdefault(text, []).append(dataset)
    if len(by_value) == 1:
        return f"default: {next(iter(by_value))}"
    return "default: " + ", ".join(f"{value} ({', '.join(names)})" for value, names in by_value.items())


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of one run (shared by ``run.py`` and the sweep)."""
    mode = parser.add_argument_group("objective (a budget: --epsilon, --beta or, for geco, --kappa)")
    mode.add_argument(
        "--epsilon", type=float, help="KL budget ε in nats per sample: maximise reconstruction s.t. KL ≤ ε"
    )
    mode.add_argument("--beta", type=float, help="fixed β: train NLL + β·KL (the β-VAE paper's Eq. 4)")
    mode.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="default: constrained with --epsilon, fixed-beta with --beta; baselines: capacity (Burgess et al. "
        "2018, C rises to --epsilon), controlvae (Shao et al. 2020, set point rises to --epsilon), "
        "geco (Rezende & Viola 2018: min KL s.t. NLL ≤ --kappa)",
    )
    mode.add_argument("--kappa", type=float, help="geco's reconstruction budget κ: NLL ≤ κ, nats per sample")
    duals = parser.add_argument_group("multiplier updates (constrained and geco; see README)")
    duals.add_argument(
        "--dual-update",
        choices=DUAL_UPDATES,
        help=f"how λ moves: {', '.join(DUAL_RULES)}; +ema: the dual step sees the moving average of the violation; "
        f"default: {DEFAULT_DUAL_UPDATE} (constrained), {GECO_DUAL_UPDATE} (geco)",
    )
    duals.add_argument(
        "--dual-kp", type=float, help=f"proportional gain K_P of --dual-update pi (default: {DEFAULT_DUAL_KP:g})"
    )
    duals.add_argument(
        "--dual-ema", type=float, help=f"decay α of the moving average for +ema (default: {DEFAULT_DUAL_EMA:g})"
    )
    duals.add_argument(
        "--capacity-gamma", type=float, help=f"γ of --objective capacity (default: {DEFAULT_CAPACITY_GAMMA:g})"
    )
    duals.add_argument(
        "--anneal-steps",
        type=int,
        help="steps over which capacity's C or controlvae's set point rise to --epsilon (default: half of --steps)",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, help="default: dsprites (generated, no download)")
    data.add_argument("--data-path", help="the official dSprites .npz file, for --dataset dsprites-npz")
    data.add_argument("--spectrum", type=_spectrum, help="linear-gaussian eigenvalues, e.g. 16,8,4,2,1")
    data.add_argument("--num-samples", type=int, help="linear-gaussian rows (default 20000)")
    train = parser.add_argument_group("training (defaults depend on the dataset; see README)")
    train.add_argument(
        "--preset",
        choices=list(PRESET_DESCRIPTIONS),
        help="a published setup, recorded in config.json; settings given explicitly override its: "
        + "; ".join(f"{name}: {text}" for name, text in PRESET_DESCRIPTIONS.items()),
    )
    described = (
        ("--steps", int, "total optimisation steps (with --resume: extend to this many)"),
        ("--batch-size", int, "examples per step, drawn with replacement"),
        ("--lr", float, "primal (Adam) learning rate"),
        ("--dual-lr", float, "dual (SGD ascent on λ) learning rate"),
        ("--multiplier-init", float, "initial λ"),
        ("--latent-dim", int, "latent dimensions"),
        ("--log-every", int, "steps between rows of metrics.csv"),
        ("--checkpoint-every", int, "steps between checkpoints"),
    )
    for flag, kind, text in described:
        train.add_argument(flag, type=kind, help=f"{text}; {dataset_default(flag[2:].replace('-', '_'))}")
    train.add_argument("--seed", type=int, help="seeds the model's initialisation, batches and samples (default: 0)")
    train.add_argument("--device", choices=DEVICES, help="default: auto (CUDA if available)")
    train.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="run the model's forward and backward under torch.compile, with CUDA graphs on a GPU (default: "
        "only for CUDA runs of 50000 steps or more; compiling takes tens of seconds)",
    )


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
    tag = config.label.replace(" ", "-").replace("constrained-", "").replace("fixed-beta-", "")
    tag = tag.replace("ε=", "eps").replace("β=", "beta").replace("κ=", "kappa")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.dataset}-{tag}-seed{config.seed}-{stamp}"


def run_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="run.py",
        description="Train one β-VAE: KL-constrained (--epsilon, nats) or fixed-β (--beta); writes a run folder.",
    )
    add_run_arguments(parser)
    parser.add_argument("--out", help="new run folder (default: runs/<dataset>-<eps|beta>-seed<s>-<time>)")
    parser.add_argument("--resume", metavar="RUN", help="continue this run from its checkpoint")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's, one per core; where other jobs share the cores, 1 can be "
        "several times faster than 2); a sweep sets them with --cpus-per-run",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, train, print where the run is and its final figures."""
    from constrained_vae import runs
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
        if runs.is_unstarted(run_dir):
            print(f"{run_dir} was stopped before its first checkpoint: starting it afresh", file=sys.stderr)
        summary = train(config, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except TrainingInterrupted as stopped:
        print(f"\ninterrupted at step {stopped.step}; continue with: {resume_command(run_dir)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        where = f"continue from its last checkpoint with: {resume_command(run_dir)}"
        print(f"\ninterrupted; {where if runs.is_started(run_dir) else 'nothing was trained'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_summary(run_dir, summary))
    return 0


def resume_command(run_dir: Path) -> str:
    return f"python experiments/run.py --resume {shlex.quote(str(run_dir))}"


def format_summary(run_dir: Path, summary: dict) -> str:
    """The lines ``run.py`` ends with: where the run is, final KL, NLL and λ (or β)."""
    if summary["tail_steps"] >= summary["steps"]:
        tail = f"means over all {summary['steps']} steps"
    else:
        tail = f"means over the last {summary['tail_steps']} of {summary['steps']} steps"
    lines = [f"run folder: {run_dir}", f"{summary['mode']} on {summary['dataset']} ({tail}, nats per sample):"]
    met = "met" if summary["constraint_satisfied"] else "NOT met"
    if summary["mode"] in ("constrained", "capacity", "controlvae"):
        name = "constraint" if summary["mode"] == "constrained" else "target"
        symbol = "λ  " if summary["mode"] == "constrained" else "β  "
        lines.append(f"  KL  = {summary['kl']:.3f}  (ε = {summary['epsilon']:g}, {name} {met})")
        lines.append(f"  NLL = {summary['nll']:.3f}")
        lines.append(f"  {symbol} = {summary['multiplier']:.4f} ± {summary['multiplier_std']:.4f}")
    elif summary["mode"] == "geco":
        lines.append(f"  KL  = {summary['kl']:.3f}")
        lines.append(f"  NLL = {summary['nll']:.3f}  (κ = {summary['kappa']:g}, constraint {met})")
        lines.append(f"  β   = {summary['multiplier']:.4f} ± {summary['multiplier_std']:.4f}  (1/λ)")
    else:
        lines.append(f"  KL  = {summary['kl']:.3f}")
        lines.append(f"  NLL = {summary['nll']:.3f}")
        lines.append(f"  β   = {summary['multiplier']:g}")
    lines.append(f"  training time {summary['seconds']:.1f} s")
    return "\n".join(lines)


__all__ = ["DATASET_DEFAULTS", "add_run_arguments", "run_main", "run_parser"]

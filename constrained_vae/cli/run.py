"""``experiments/run.py``: train one run (:func:`run_main`); the flags of one run, which the sweep shares."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from constrained_vae.cli.common import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    ArgumentParser,
    dataset_default,
    settings_from_args,
    settings_from_file,
    user_error,
)
from constrained_vae.core import dual
from constrained_vae.core.models import MODEL_DESCRIPTIONS
from constrained_vae.core.objectives import OBJECTIVES, PRECISIONS, GECOSettings
from constrained_vae.core.objectives.capacity import DEFAULT_GAMMA
from constrained_vae.core.objectives.controlvae import ControlVAESettings
from constrained_vae.data import DATASETS
from constrained_vae.errors import TrainingDiverged, TrainingInterrupted, UserInputError
from constrained_vae.run import folder
from constrained_vae.run.device import COMPILE_MIN_STEPS
from constrained_vae.run.loop import resume_config, train
from constrained_vae.run.presets import PRESET_DESCRIPTIONS
from constrained_vae.run.settings import DEVICES, RunConfig, parse_spectrum
from constrained_vae.run.summary import constraint_status, format_multiplier, multiplier_remark

PROG = "experiments/run.py"  # the script; `cvae run` passes its own prog


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of one run (shared by ``run.py`` and the sweep)."""
    objective = parser.add_argument_group("objective (a budget: --epsilon, --beta or, for geco, --kappa)")
    objective.add_argument(
        "--epsilon", type=float, help="KL budget ε in nats per sample: maximise reconstruction s.t. KL ≤ ε"
    )
    objective.add_argument("--beta", type=float, help="fixed β: train NLL + β·KL (the β-VAE paper's Eq. 4)")
    objective.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        help="default: constrained with --epsilon, fixed-beta with --beta; baselines: capacity (Burgess et al. "
        f"2018, C rises to --epsilon), {ControlVAESettings.name} (Shao et al. 2020, set point rises to --epsilon), "
        "geco (Rezende & Viola 2018: min KL s.t. NLL ≤ --kappa)",
    )
    objective.add_argument("--kappa", type=float, help="geco's reconstruction budget κ: NLL ≤ κ, nats per sample")
    duals = parser.add_argument_group("multiplier updates (constrained and geco; see docs/multipliers.md)")
    duals.add_argument(
        "--dual-update",
        choices=dual.UPDATES,
        help=f"how λ moves: {', '.join(dual.RULES)}; +ema: the dual step sees the moving average of the violation; "
        f"default: {dual.DEFAULT_UPDATE} (constrained), {GECOSettings.default_update} (geco)",
    )
    duals.add_argument(
        "--dual-lr",
        type=float,
        help=f"the rule's rate η (also ρ of augmented); default: {dual.DEFAULT_LOG_LR:g} for the log rules (a step in "
        f"log λ per nat), for the others {dataset_default('additive_dual_lr').removeprefix('default: ')}",
    )
    duals.add_argument(
        "--multiplier-init", type=float, help=f"initial λ (geco: initial β); default: {dual.DEFAULT_MULTIPLIER_INIT:g}"
    )
    duals.add_argument(
        "--dual-kp", type=float, help=f"proportional gain K_P of --dual-update pi (default: {dual.DEFAULT_KP:g})"
    )
    duals.add_argument(
        "--dual-ema", type=float, help=f"decay α of the moving average for +ema (default: {dual.DEFAULT_EMA:g})"
    )
    duals.add_argument("--capacity-gamma", type=float, help=f"γ of --objective capacity (default: {DEFAULT_GAMMA:g})")
    duals.add_argument(
        "--anneal-steps",
        type=int,
        help="steps over which capacity's C or controlvae's set point rise to --epsilon (default: half of --steps)",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=list(DATASETS),
        help="default: dsprites; " + "; ".join(f"{name}: {source.about}" for name, source in DATASETS.items()),
    )
    data.add_argument(
        "--data-path",
        help="what the dataset is read from: "
        + "; ".join(f"{source.path} for {name}" for name, source in DATASETS.items() if source.path),
    )
    data.add_argument(
        "--factor-sizes",
        type=_factor_sizes,
        help="the factor grid of an MPI3D file other than the published one, e.g. 4,4,2,3,3,40,40 "
        "(disentanglement_lib's older toy and realistic files)",
    )
    data.add_argument("--spectrum", type=_spectrum, help="linear-gaussian eigenvalues, e.g. 16,8,4,2,1")
    data.add_argument("--num-samples", type=int, help="linear-gaussian rows (default 20000)")
    training = parser.add_argument_group("training (defaults depend on the dataset; see docs/training.md)")
    training.add_argument(
        "--preset",
        choices=list(PRESET_DESCRIPTIONS),
        help="a published setup, recorded in config.json; settings given explicitly override its: "
        + "; ".join(f"{name}: {text}" for name, text in PRESET_DESCRIPTIONS.items()),
    )
    described = (
        ("--steps", int, "total optimisation steps (with --resume: extend to this many)"),
        ("--batch-size", int, "examples per step, drawn with replacement"),
        ("--lr", float, "primal (Adam) learning rate"),
        ("--latent-dim", int, "latent dimensions"),
        ("--log-every", int, "steps between rows of metrics.csv"),
        ("--checkpoint-every", int, "steps between checkpoints"),
    )
    for flag, kind, text in described:
        training.add_argument(flag, type=kind, help=f"{text}; {dataset_default(flag[2:].replace('-', '_'))}")
    training.add_argument(
        "--model",
        metavar="MODEL",
        help="the VAE: "
        + "; ".join(f"{name}: {text}" for name, text in MODEL_DESCRIPTIONS.items())
        + "; or one of your own named package.module:factory, called as factory(sample_shape, latent_dim) "
        f"(docs/own-model-and-data.md); {dataset_default('model')}",
    )
    training.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        help="also log to RUN/tensorboard/: each row of metrics.csv and, at checkpoints, reconstructions and "
        "latent traversals (image data); needs the tensorboard package "
        "(default: off; a continued run keeps its own unless this is given)",
    )
    training.add_argument("--seed", type=int, help="seeds the model's initialisation, batches and samples (default: 0)")
    training.add_argument("--device", choices=DEVICES, help="default: auto (CUDA if available)")
    training.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="run the model's forward and backward under torch.compile, with CUDA graphs on a GPU (default: "
        f"only for CUDA runs of {COMPILE_MIN_STEPS} steps or more; compiling takes tens of seconds)",
    )
    training.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        help="the model's forward: fp32, or bf16 under torch.autocast (its matrix products and convolutions in "
        "bfloat16; the NLL, the KL, the multiplier and the optimizer stay float32) (default: fp32)",
    )


def _factor_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"factor sizes must be positive, got {text!r}")
    return sizes


def _spectrum(text: str) -> list[float]:
    try:
        return parse_spectrum(text)
    except UserInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def default_run_dir(config: RunConfig) -> Path:
    """``runs/<dataset>-<eps|beta|kappa><budget>-seed<s>-<time>``."""
    tag = config.label.replace(" ", "-").replace("constrained-", "").replace("fixed-beta-", "")
    tag = tag.replace("ε=", "eps").replace("β=", "beta").replace("κ=", "kappa")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.dataset}-{tag}-seed{config.seed}-{stamp}"


def run_parser(prog: str = "run.py") -> argparse.ArgumentParser:
    """The flags of one run; ``prog`` names the command in the help and the errors."""
    parser = ArgumentParser(
        prog=prog,
        description="Train one β-VAE: KL-constrained (--epsilon, nats) or fixed-β (--beta); writes a run folder.",
    )
    add_run_arguments(parser)
    parser.add_argument("--out", help="new run folder (default: runs/<dataset>-<eps|beta>-seed<s>-<time>)")
    parser.add_argument("--resume", metavar="RUN", help="continue this run from its checkpoint")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="start a new run from a JSON or YAML file of settings, the keys config.json holds "
        "(--config RUN/config.json repeats that run); flags given override the file's settings",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's, one per core; where other jobs share the cores, 1 can be "
        "several times faster than 2); a sweep sets them with --cpus-per-run",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv``, train, print where the run is and its final figures.

    ``prog`` is the command as a user types it (``cvae run``), named in the help, the errors and the
    resume hint; default: the script, ``python experiments/run.py``.
    """
    parser = run_parser(prog) if prog else run_parser()
    command = prog or f"python {PROG}"
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    try:
        if args.config:
            if args.resume:
                raise UserInputError("--config starts a new run; a resumed run (--resume) reads its own config.json")
            settings = settings_from_file(args.config) | settings  # a flag given overrides the file
        if args.resume or args.out:
            folder.check_name(args.resume or args.out, "--resume" if args.resume else "--out")
        if args.resume:
            if args.out and Path(args.out) != Path(args.resume):
                raise UserInputError("give either --out (a new run) or --resume (an existing one), not both")
            run_dir = Path(args.resume)
            config = resume_config(run_dir, settings)
        else:
            config = RunConfig(**settings)
            config.validate()
            run_dir = Path(args.out) if args.out else default_run_dir(config)
        if folder.is_unstarted(run_dir):
            print(f"{run_dir} was stopped before its first checkpoint: starting it afresh", file=sys.stderr)
        summary = train(config, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    except UserInputError as error:
        return user_error(error)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except TrainingInterrupted as stopped:
        print(
            f"\ninterrupted at step {stopped.step}; continue with: {resume_command(command, run_dir)}", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        where = f"continue from its last checkpoint with: {resume_command(command, run_dir)}"
        print(f"\ninterrupted; {where if folder.is_started(run_dir) else 'nothing was trained'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_summary(run_dir, summary))
    return 0


def resume_command(command: str, run_dir: Path) -> str:
    return f"{command} --resume {shlex.quote(str(run_dir))}"


def format_summary(run_dir: Path, summary: dict) -> str:
    """The lines ``run.py`` ends with: where the run is, final KL, NLL and λ (or β).

    What is printed follows the objective's capability flags
    (:class:`~constrained_vae.core.objectives.ObjectiveSettings`): the term its budget bounds gets
    the budget and whether it was met (or was inactive), and its multiplier is written with its
    symbol and, when it is learned, whether it settled (:mod:`constrained_vae.run.summary`).
    """
    objective = OBJECTIVES[summary["mode"]]
    if summary["tail_steps"] >= summary["steps"]:
        tail = f"means over all {summary['steps']} steps"
    else:
        tail = f"means over the last {summary['tail_steps']} of {summary['steps']} steps"
    lines = [f"run folder: {run_dir}", f"{summary['mode']} on {summary['dataset']} ({tail}, nats per sample):"]
    met = f"{objective.budget_kind} {constraint_status(summary)}"
    budget = f"{objective.budget_symbol} = {summary[objective.budget]:g}"
    for term, name in (("kl", "KL "), ("nll", "NLL")):
        bounded = f"  ({budget}, {met})" if objective.bounded_term == term else ""
        lines.append(f"  {name} = {summary[term]:.3f}{bounded}")
    symbol = f"{objective.multiplier_symbol:<3}"
    if objective.constant_multiplier:
        lines.append(f"  {symbol} = {summary['multiplier']:g}")
    else:
        note = f"  {objective.multiplier_note}" if objective.multiplier_note else ""
        remark = multiplier_remark(summary, objective.multiplier_symbol)
        note += f"  ({remark})" if remark else ""
        lines.append(f"  {symbol} = {format_multiplier(summary)}{note}")
    if summary.get("constraint_note"):
        lines.append(f"  {summary['constraint_note']}")
    lines.append(f"  training time {summary['seconds']:.1f} s")
    return "\n".join(lines)


__all__ = ["add_run_arguments", "format_summary", "run_main", "run_parser"]

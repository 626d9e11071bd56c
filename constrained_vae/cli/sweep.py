"""``experiments/sweep.py``: train a grid of ε and/or β values × seeds, in banks, on Ray or in this process.

See :mod:`constrained_vae.sweeps.plan` (skip, resume, extend), :mod:`constrained_vae.sweeps.runner`
(one writer) and :mod:`constrained_vae.sweeps.ray_executor` (where points train).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from constrained_vae.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    ArgumentParser,
    dataset_default,
    settings_from_args,
    settings_from_file,
    user_error,
)
from constrained_vae.cli.run import add_run_arguments
from constrained_vae.errors import UnrecordedSweep, UserInputError
from constrained_vae.run import folder, locks
from constrained_vae.run.bank import STRATEGIES
from constrained_vae.run.settings import RunConfig
from constrained_vae.sweeps.grid import GRID_FIELDS, Grid
from constrained_vae.sweeps.plan import check_resources, plan_sweep, point_configs
from constrained_vae.sweeps.ray_executor import (
    DEFAULT_MAX_RETRIES,
    EXECUTORS,
    Resources,
    checked_resources,
    default_bank_size,
)
from constrained_vae.sweeps.report import format_report
from constrained_vae.sweeps.runner import check_writable, run_sweep

PROG = "experiments/sweep.py"  # the script; `cvae sweep` passes its own prog


def resources_from_args(args: argparse.Namespace, settings: dict[str, Any]) -> Resources:
    """The resource flags, checked; :class:`ConfigError` for a bad one."""
    return checked_resources(
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        workers=args.workers,
        max_retries=args.max_retries,
        device=settings.get("device"),
        bank_size=args.bank_size if args.bank_size is not None else default_bank_size(settings.get("device")),
        executor=args.executor,
        bank_strategy=args.bank_strategy,
    )


def sweep_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """``run.py``'s flags, with several values for ``--epsilon``/``--beta`` and ``--seeds`` for ``--seed``;
    ``prog`` names the command in the help and the errors."""
    parser = ArgumentParser(
        prog=prog,
        description="Train a grid of β-VAEs (ε values and/or β values × seeds), one run folder per point, "
        "in parallel. Re-running the same command finishes an interrupted sweep.",
        conflict_handler="resolve",  # the grid flags below replace run.py's --epsilon, --beta and --seed
    )
    add_run_arguments(parser)
    grid = parser.add_argument_group("grid (at least one of --epsilon, --beta)")
    grid.add_argument("--epsilon", type=float, nargs="+", metavar="E", help="KL budgets ε (nats per sample)")
    grid.add_argument("--beta", type=float, nargs="+", metavar="B", help="fixed β values")
    grid.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0], metavar="S", help="seeds (default: 0)")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--out", required=True, metavar="SWEEP", help="the sweep folder (new, or one to finish)")
    sweep.add_argument("--steps", type=int, help=f"optimisation steps of every point; {dataset_default('steps')}")
    sweep.add_argument(
        "--config",
        metavar="FILE",
        help="the run settings of every point from a JSON or YAML file, the keys config.json holds (--config "
        "RUN/config.json sweeps that run's settings); its epsilon, beta and seed are left out (the grid flags "
        "give them), and flags given override the file",
    )
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray_group = parser.add_argument_group("where the points train (in banks, on Ray or in this process)")
    ray_group.add_argument(
        "--bank-size",
        type=int,
        metavar="K",
        help="train up to K points that share every setting but ε, β and the seed side by side, as one bank "
        "in one process (its --cpus-per-run and --gpus-per-run are the bank's); default: "
        '1 on CPUs, 42 on CUDA (docs/sweeps.md, "Run banks")',
    )
    ray_group.add_argument(
        "--bank-strategy",
        choices=STRATEGIES,
        help="how a bank steps its members: stacked (one batched forward and backward for all), "
        "sequential (one after another), threaded (one after another on each of the bank's threads); "
        "default: stacked on CUDA, threaded on CPUs",
    )
    ray_group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="auto",
        help="where the banks train: ray (this machine's Ray, or --address), local (this process, one bank "
        "after another), auto (default: ray where Ray is installed, else local)",
    )
    ray_group.add_argument(
        "--address",
        metavar="ADDR",
        help="join the Ray cluster whose head is at ADDR (host:port); every node must "
        "see --out (a shared file system); default: $RAY_ADDRESS, else a Ray started in this process",
    )
    ray_group.add_argument(
        "--cpus-per-run",
        type=float,
        metavar="C",
        help="CPUs of each point, its torch threads (default: 1, or cores/N with --workers N)",
    )
    ray_group.add_argument(
        "--gpus-per-run",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs of each point; a fraction shares one "
        "(0.125: 8 points per GPU); default: 0 (the points train on CPUs)",
    )
    ray_group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="shorthand for this machine: N points at once, each with cores/N "
        "CPUs (default: as many points as there are cores, 1 CPU each)",
    )
    ray_group.add_argument(
        "--max-retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        metavar="R",
        help="times a point whose worker "
        f"process dies is retried, from its last checkpoint (default: {DEFAULT_MAX_RETRIES})",
    )
    return parser


def grid_from_args(args: argparse.Namespace) -> Grid:
    return Grid.of(args.epsilon or [], args.beta or [], args.seeds)


def run_settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields given on the command line over those of ``--config FILE``, the grid's left out;
    ConfigError for a bad file."""
    settings = (settings_from_file(args.config) if args.config else {}) | settings_from_args(args)
    return {key: value for key, value in settings.items() if key not in GRID_FIELDS}


def check_sweep_arguments(argv: Sequence[str], prog: str = PROG) -> dict[str, RunConfig]:
    """What :func:`sweep_main` refuses before touching any folder, checked without running it: the flags,
    every point's settings and the resources. For a caller that runs the sweep later (``experiments/study.py``);
    raises :class:`UserInputError` for bad input. Each point's resolved config, by run name."""
    parser = sweep_parser(prog)
    parser.raise_errors = True
    args = parser.parse_args(argv)
    settings = run_settings_from_args(args)
    resources_from_args(args, settings)
    configs = point_configs(grid_from_args(args), settings)
    check_resources(next(iter(configs.values())))
    return {point.name: config for point, config in configs.items()}


def sweep_main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse ``argv``, check everything, train the grid, print the table.

    ``prog`` is the command as a user types it (``cvae sweep``): the help's, and the first words of the
    command ``sweep.json`` records.

    Exit status: 0 when every point finished, 1 when any failed, 2 for bad input
    (nothing written), 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = sweep_parser(prog).parse_args(argv)
    grid, command = grid_from_args(args), [*prog.split(), *argv]
    try:
        folder.check_name(args.out, "--out")
        settings = run_settings_from_args(args)
        resources = resources_from_args(args, settings)
        plan_sweep(args.out, grid, settings, command)  # bad input is refused before the folder is touched
        with locks.hold(args.out):
            check_writable(Path(args.out))
            plan = plan_sweep(args.out, grid, settings, command)
            if plan.added_points:
                print(f"extending the sweep in {plan.sweep_dir} by {plan.added_points} points (same run settings)")
            if plan.changed_settings:
                print(f"the points of {plan.sweep_dir} still to train take the new {', '.join(plan.changed_settings)}")
            outcomes = run_sweep(plan, resources, progress=not args.no_progress)
    except UnrecordedSweep as error:  # trained, but its records could not be written: the report still shows
        print(format_report(plan.sweep_dir, error.outcomes))
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except UserInputError as error:
        return user_error(error)
    except KeyboardInterrupt:
        print(f"\ninterrupted: re-run the same command to finish the sweep in {args.out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_report(plan.sweep_dir, outcomes))
    return EXIT_FAILED if any(outcome.status == "failed" for outcome in outcomes) else 0

"""``experiments/evaluate.py``: disentanglement scores of trained runs (RUN/metrics.json) and their table.

Give run folders, or sweep folders (every subfolder holding config.json and checkpoint.pt is
scored). Runs on datasets without ground-truth factors are skipped with a message. The
protocol flags change the published defaults (see constrained_vae/evaluation/metrics/) for every
metric that has that setting.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from constrained_vae.cli.common import ArgumentParser, user_error
from constrained_vae.errors import UserInputError
from constrained_vae.evaluation.metrics import DCI_PREDICTORS, METRICS
from constrained_vae.evaluation.scoring import (
    HELD_OUT_NAMES,
    default_protocols,
    evaluate_paths,
    format_table,
    protocols_with,
)
from constrained_vae.run.device import resolve_device
from constrained_vae.run.settings import DEVICES

PROTOCOL_SETTINGS = ("num_train", "num_eval", "batch_size", "num_variance_estimate", "num_bins", "predictor")


def metrics_with(setting: str) -> str:
    """The metrics whose protocol has ``setting``, comma-separated (for the flags' help)."""
    return ", ".join(name for name, protocol in default_protocols().items() if setting in protocol)


PROG = "experiments/evaluate.py"  # the script; `cvae evaluate` passes its own prog


def evaluate_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The evaluation's flags; ``prog`` names the command in the help and the errors."""
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP", help="run folders or sweep folders")
    parser.add_argument("--metrics", help=f"comma-separated subset of: {', '.join(METRICS)} (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every metric's sampling and classifiers")
    protocol = parser.add_argument_group("protocol (default: the published one)")
    protocol.add_argument("--num-train", type=int, help="training points of every metric (default 10000)")
    protocol.add_argument(
        "--num-eval",
        type=int,
        help="held-out points ("
        + "; ".join(f"{key} of {metrics_with(key)}" for key in HELD_OUT_NAMES)
        + "; default 5000)",
    )
    protocol.add_argument("--batch-size", type=int, help="observations per BetaVAE / FactorVAE point (default 64)")
    protocol.add_argument("--num-variance-estimate", type=int, help="FactorVAE: points for the code std (10000)")
    protocol.add_argument(
        "--num-bins", type=int, help=f"{metrics_with('num_bins')}: histogram bins per code (default 20)"
    )
    protocol.add_argument(
        "--dci-predictor",
        dest="predictor",
        choices=list(DCI_PREDICTORS),
        help="DCI: per-factor classifier (default boosting, disentanglement_lib's; forest is faster, not published)",
    )
    parser.add_argument(
        "--device", default="cpu", choices=DEVICES, help="torch device for the encoder (default cpu; auto: CUDA if any)"
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse ``argv``, score the runs, print the table; ``prog`` is the command as a user types it."""
    args = evaluate_parser(prog).parse_args(argv)
    overrides = {name: getattr(args, name) for name in PROTOCOL_SETTINGS if getattr(args, name) is not None}
    try:
        metric_names = args.metrics.split(",") if args.metrics else None
        protocols = protocols_with(overrides, metric_names)
        device = str(resolve_device(args.device))
        evaluations = evaluate_paths(
            args.paths,
            seed=args.seed,
            protocols=protocols,
            device=device,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except (UserInputError, ValueError) as error:
        return user_error(error)
    print(format_table(evaluations))
    return 0

"""``cvae``: every command line of the project as one installed command, ``cvae COMMAND [FLAGS]``.

Each command is a script's ``main`` (``cvae run`` is ``python experiments/run.py``) with the rest of the
arguments handed on unchanged; its help, errors and recorded commands name it ``cvae run``. A command's
module is imported only when it runs (``cvae run`` does not import Ray or matplotlib).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from constrained_vae.cli.common import ArgumentParser
from constrained_vae.version import __version__


@dataclass(frozen=True)
class Command:
    """A subcommand: the ``module:function`` it runs (called with the rest of argv and ``prog``), the
    script it stands for, and its one line of help."""

    target: str
    script: str
    summary: str

    def run(self, argv: Sequence[str], prog: str, **extra: str) -> int:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)(list(argv), prog=prog, **extra)


COMMANDS = {
    "run": Command(
        "constrained_vae.cli.run:run_main",
        "experiments/run.py",
        "train one constrained (--epsilon) or fixed-β (--beta) VAE",
    ),
    "sweep": Command(
        "constrained_vae.cli.sweep:sweep_main", "experiments/sweep.py", "train a grid of ε and/or β values × seeds"
    ),
    "evaluate": Command(
        "constrained_vae.cli.evaluate:main", "experiments/evaluate.py", "disentanglement scores of runs and sweeps"
    ),
    "figures": Command("constrained_vae.cli.figures:main", "analysis/figures.py", "the paper's figures of a run"),
    "tradeoff": Command(
        "constrained_vae.cli.tradeoff:main", "analysis/tradeoff_curves.py", "a sweep's ε ↔ β table and figures"
    ),
    "epsilon-to-beta": Command(
        "constrained_vae.cli.epsilon_to_beta:main",
        "analysis/epsilon_to_beta.py",
        "the effective β of an ε (or the ε of a β), from a sweep",
    ),
    "study": Command(
        "constrained_vae.cli.study:study_main", "experiments/study.py", "the dSprites study: fixed β against ε"
    ),
    "study-analysis": Command(
        "constrained_vae.cli.study_analysis:analysis_main", "analysis/study.py", "a study's tables and figures"
    ),
    "closed-form": Command(
        "constrained_vae.cli.closed_form:main",
        "experiments/closed_form_check.py",
        "learned λ against the closed form β*(ε), linear-Gaussian",
    ),
}


def main_parser(prog: str = "cvae") -> argparse.ArgumentParser:
    """``cvae``'s own flags and the list of commands (for the help and the errors; :func:`main` dispatches)."""
    width = max(map(len, COMMANDS)) + 2
    listing = "\n".join(f"  {name:<{width}}{command.summary}" for name, command in COMMANDS.items())
    parser = ArgumentParser(
        prog=prog,
        usage="%(prog)s [-h] [--version] COMMAND [FLAGS ...]",
        description="Constrained β-VAEs: minimise the NLL subject to KL ≤ ε (nats per sample), with a\n"
        "learned Lagrange multiplier. Each command is a script of experiments/ or analysis/.",
        epilog=f"commands:\n{listing}\n\nA command's flags: {prog} COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, help=argparse.SUPPRESS)
    for name in COMMANDS:
        commands.add_parser(name, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "cvae") -> int:
    """Run ``prog COMMAND ARGS…``: the command's ``main`` on ``ARGS`` (its exit status). ``--help``,
    ``--version``, no command or an unknown one are answered here (an unknown one: one ``error:`` line,
    exit status 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        name, rest = argv[0], argv[1:]
        # the study's phases are sweeps: they record and name the sweep command of this same program
        extra = {"sweep_prog": f"{prog} sweep"} if name == "study" else {}
        return COMMANDS[name].run(rest, f"{prog} {name}", **extra)
    main_parser(prog).parse_args(argv)  # --help and --version exit 0; anything else is an error, exit 2
    raise AssertionError(f"{prog}: no command ran for {argv}")  # unreachable: a command would have matched


__all__ = ["COMMANDS", "main", "main_parser"]

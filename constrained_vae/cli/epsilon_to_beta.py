"""``analysis/epsilon_to_beta.py``: the effective β of a KL budget ε (or the budget a β amounts to), read off a sweep.

A dual answer that rests on runs which did not meet their constraint (at ε, or at either
swept ε it is interpolated between) is labelled a lower bound, not a converged λ, and a
``warning:`` line on stderr names those ε. So is one that rests on runs whose λ was still
moving when they ended ("λ still moving") or whose budget was inactive (tail KL ≪ ε, λ at its floor).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from constrained_vae.analysis.epsilon_beta import (
    dual_support,
    epsilon_for_beta,
    estimate_beta,
    format_estimate,
    inactive_constraints,
    inactive_warning,
    lambda_support,
    swept_range,
    unmet_constraints,
    unmet_warning,
    unsettled_multipliers,
    unsettled_warning,
)
from constrained_vae.analysis.sweep_table import Sweep, load_sweep
from constrained_vae.cli.common import ArgumentParser, user_error
from constrained_vae.core.checks import check_positive
from constrained_vae.errors import SweepError, UserInputError

PROG = "analysis/epsilon_to_beta.py"  # the script; `cvae` passes its own prog


def epsilon_to_beta_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The flags; ``prog`` is the command as a user types it (the help's and the errors')."""
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a sweep folder made by experiments/sweep.py")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--epsilon", type=float, help="KL budget in nats per sample")
    query.add_argument("--beta", type=float, help="fixed β, for the inverse question")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse ``argv``, print the effective β of an ε (or the ε of a β); ``prog`` as in the parser's."""
    args = epsilon_to_beta_parser(prog).parse_args(argv)
    try:
        check_positive("epsilon" if args.epsilon is not None else "beta", _query(args))
        sweep = load_sweep(args.sweep)
        answer, warning = (
            answer_epsilon(sweep, args.epsilon) if args.epsilon is not None else answer_beta(sweep, args.beta)
        )
    except UserInputError as error:
        return user_error(error)
    print(answer)
    for line in (*(warning or "").splitlines(), sweep.unfinished_warning()):
        if line:
            print(f"warning: {line}", file=sys.stderr)
    return 0


def _query(args: argparse.Namespace) -> float:
    """The ε or the β asked about."""
    return args.epsilon if args.epsilon is not None else args.beta


def _range_text(sweep: Sweep) -> str:
    ranges = swept_range(sweep)
    parts = []
    if "epsilon" in ranges:
        parts.append("constrained ε in [{:g}, {:g}]".format(*ranges["epsilon"]))
    if "fixed_kl" in ranges:
        parts.append("fixed-β runs reached KL in [{:.3g}, {:.3g}]".format(*ranges["fixed_kl"]))
    return "; ".join(parts)


def answer_epsilon(sweep: Sweep, epsilon: float) -> tuple[str, str | None]:
    """The three estimates of the effective β at ``epsilon`` as text, and a warning (or None)
    when the dual one rests on runs that did not meet their constraint."""
    check_positive("epsilon", epsilon)
    estimates = estimate_beta(sweep, epsilon)
    names = {"dual": "dual (converged λ)", "inverse_fixed": "inverse fixed-β", "slope": "slope −dNLL/dKL"}
    if all(not math.isfinite(estimates[f"beta_{k}"]) for k in names):
        raise SweepError(f"ε = {epsilon:g} is outside what the sweep covers ({_range_text(sweep)}); not extrapolating")
    support = dual_support(sweep, epsilon)
    skipped = sorted({e for e in sweep.unfinished_epsilons if support and min(support) < e < max(support)})
    if skipped and estimates["n_seeds"] == 0:  # never interpolate across a swept ε whose runs have not finished
        estimates["beta_dual"] = estimates["beta_dual_std"] = math.nan
    dual_known = math.isfinite(estimates["beta_dual"])
    unmet = unmet_constraints(sweep, support) if dual_known else []
    unsettled = unsettled_multipliers(sweep, support) if dual_known and not unmet else []
    inactive = inactive_constraints(sweep, support) if dual_known else []
    if unmet:
        names["dual"] = "dual (λ not settled)"
    elif unsettled:
        names["dual"] = "dual (λ still moving)"
    elif inactive:
        names["dual"] = "dual (budget inactive)"
    lines = [f"effective β at ε = {epsilon:g} nats ({sweep.path}):"]
    for key, label in names.items():
        mean, std = estimates[f"beta_{key}"], estimates[f"beta_{key}_std"]
        if math.isfinite(mean):
            text = format_estimate(mean, std) + (" (seed std)" if math.isfinite(std) else "")
        elif key == "dual" and skipped:
            text = "— (not interpolated: the runs at swept ε = {} have not finished)".format(
                ", ".join(f"{e:g}" for e in skipped)
            )
        else:
            text = "— (outside the swept range)"
        if key == "dual" and estimates["n_seeds"] == 0 and math.isfinite(mean):
            text += ", interpolated between swept ε = " + " and ".join(f"{e:g}" for e in support)
        if key == "dual" and unmet:
            where = ", ".join(f"{u.epsilon:g}" for u in unmet)
            text = f"≥ {text} — a lower bound, not an estimate: the constraint was not met at ε = {where}"
        elif key == "dual" and unsettled:
            where = ", ".join(f"{u.epsilon:g}" for u in unsettled)
            text += f" — not a settled effective β: λ still moving at ε = {where}"
        elif key == "dual" and inactive:
            where = ", ".join(f"{u.epsilon:g}" for u in inactive)
            text += f" — no effective β of ε: the constraint was inactive at ε = {where} (KL ≪ ε, λ at its floor)"
        lines.append(f"  {label:22s} {text}")
    beta_star = sweep.closed_form()
    if beta_star is not None:
        lines.append(f"  {'closed form β*(ε)':22s} {beta_star(epsilon):.4g}")
    return "\n".join(lines), _warnings(unmet_warning(unmet), unsettled_warning(unsettled), inactive_warning(inactive))


def _warnings(*lines: str | None) -> str | None:
    """The warnings that apply, one a line (None when none does)."""
    return "\n".join(line for line in lines if line) or None


def answer_beta(sweep: Sweep, beta: float) -> tuple[str, str | None]:
    """The KL budget a fixed ``beta`` amounts to, read two ways, and a warning (or None) when
    the dual reading passes through runs that did not meet their constraint."""
    result = epsilon_for_beta(sweep, beta)
    if not any(math.isfinite(result[k]) for k in ("epsilon_fixed", "epsilon_dual")):
        ranges = swept_range(sweep)
        covered = "fixed β in [{:g}, {:g}]".format(*ranges["beta"]) if "beta" in ranges else "no fixed-β runs"
        raise SweepError(f"β = {beta:g} is outside what the sweep covers ({covered}); not extrapolating")
    support = lambda_support(sweep, beta) if math.isfinite(result["epsilon_dual"]) else []
    unmet = unmet_constraints(sweep, support) if support else []
    unsettled = unsettled_multipliers(sweep, support) if support and not unmet else []
    inactive = inactive_constraints(sweep, support) if support else []
    lines = [f"KL budget that β = {beta:g} amounts to ({sweep.path}):"]
    for key, label in (("epsilon_fixed", "KL of fixed-β runs"), ("epsilon_dual", "ε whose λ equals β")):
        value = result[key]
        text = f"{value:.4g} nats" if math.isfinite(value) else "— (outside the swept range)"
        if key == "epsilon_dual" and unmet:
            text += " — not an estimate: read through a λ that had not settled (constraint not met)"
        elif key == "epsilon_dual" and unsettled:
            text += " — not an estimate: read through a λ still moving"
        elif key == "epsilon_dual" and inactive:
            text += " — not an estimate: read through a budget that was inactive (λ at its floor)"
        lines.append(f"  {label:22s} {text}")
    warnings = (unmet_warning(unmet), unsettled_warning(unsettled), inactive_warning(inactive))
    return "\n".join(lines), _warnings(*warnings)

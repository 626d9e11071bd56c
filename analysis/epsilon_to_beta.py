"""The effective β of a KL budget ε (or the budget a β amounts to), read off a sweep."""

import argparse
import math
import sys

from constrained_vae.errors import SweepError, UserInputError
from constrained_vae.tradeoff import epsilon_for_beta, estimate_beta, format_estimate, load_sweep, swept_range


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep", help="a sweep folder made by experiments/sweep.py")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--epsilon", type=float, help="KL budget in nats per sample")
    query.add_argument("--beta", type=float, help="fixed β, for the inverse question")
    args = parser.parse_args()
    try:
        sweep = load_sweep(args.sweep)
        print(answer_epsilon(sweep, args.epsilon) if args.epsilon is not None else answer_beta(sweep, args.beta))
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _range_text(sweep) -> str:
    ranges = swept_range(sweep)
    parts = []
    if "epsilon" in ranges:
        parts.append("constrained ε in [{:g}, {:g}]".format(*ranges["epsilon"]))
    if "fixed_kl" in ranges:
        parts.append("fixed-β runs reached KL in [{:.3g}, {:.3g}]".format(*ranges["fixed_kl"]))
    return "; ".join(parts)


def answer_epsilon(sweep, epsilon: float) -> str:
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise SweepError(f"--epsilon must be a positive number, got {epsilon}")
    estimates = estimate_beta(sweep, epsilon)
    names = {"dual": "dual (converged λ)", "inverse_fixed": "inverse fixed-β", "slope": "slope −dNLL/dKL"}
    if all(not math.isfinite(estimates[f"beta_{k}"]) for k in names):
        raise SweepError(f"ε = {epsilon:g} is outside what the sweep covers ({_range_text(sweep)}); not extrapolating")
    lines = [f"effective β at ε = {epsilon:g} nats ({sweep.path}):"]
    for key, label in names.items():
        mean, std = estimates[f"beta_{key}"], estimates[f"beta_{key}_std"]
        if math.isfinite(mean):
            text = format_estimate(mean, std) + (" (seed std)" if math.isfinite(std) else "")
        else:
            text = "— (outside the swept range)"
        if key == "dual" and estimates["n_seeds"] == 0 and math.isfinite(mean):
            text += ", interpolated between swept ε"
        if key == "dual" and estimates["constraint_satisfied"] < 1:
            text += f" — KL {estimates['kl']:.4g} > 1.05 ε at the end: λ had not settled, a bound, not an estimate"
        lines.append(f"  {label:22s} {text}")
    beta_star = sweep.closed_form()
    if beta_star is not None:
        lines.append(f"  {'closed form β*(ε)':22s} {beta_star(epsilon):.4g}")
    return "\n".join(lines)


def answer_beta(sweep, beta: float) -> str:
    result = epsilon_for_beta(sweep, beta)
    if not any(math.isfinite(result[k]) for k in ("epsilon_fixed", "epsilon_dual")):
        ranges = swept_range(sweep)
        covered = "fixed β in [{:g}, {:g}]".format(*ranges["beta"]) if "beta" in ranges else "no fixed-β runs"
        raise SweepError(f"β = {beta:g} is outside what the sweep covers ({covered}); not extrapolating")
    lines = [f"KL budget that β = {beta:g} amounts to ({sweep.path}):"]
    for key, label in (("epsilon_fixed", "KL of fixed-β runs"), ("epsilon_dual", "ε whose λ equals β")):
        value = result[key]
        text = f"{value:.4g} nats" if math.isfinite(value) else "— (outside the swept range)"
        lines.append(f"  {label:22s} {text}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

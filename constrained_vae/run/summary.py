"""What a run's training log says at the end: ``RUN/summary.json``'s final and tail-averaged figures."""

from __future__ import annotations

import math
from typing import Any

from constrained_vae.errors import RunFolderError
from constrained_vae.run.settings import RunConfig

TAIL_FRACTION = 0.1  # summary figures average the rows of the last 10% of steps
CONSTRAINT_TOLERANCE = 0.05  # a budget is met when its tail term ≤ budget·(1 + 5%)


def tail_start(last_step: int) -> int:
    """The step after which a run of ``last_step`` steps is in its tail (the last :data:`TAIL_FRACTION`)."""
    return last_step - max(1, math.ceil(TAIL_FRACTION * last_step))


def summarise(config: RunConfig, rows: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """Final and tail-averaged figures; the tail is the rows logged in the last 10% of steps.

    ``tail_steps`` is the number of steps those rows average (a row averages the
    steps since the row before it), so it can exceed 10% when rows are sparse.
    ``constraint_satisfied`` says whether the tail term the objective's budget bounds (KL ≤ ε,
    NLL ≤ κ) is within :data:`CONSTRAINT_TOLERANCE` of it; None for an objective without one.
    """
    if not rows:
        raise RunFolderError("no metrics were logged; cannot summarise the run")
    steps = int(rows[-1]["step"])
    start = tail_start(steps)
    first = next((i for i, row in enumerate(rows) if row["step"] > start), len(rows) - 1)
    tail = rows[first:]
    covered_from = int(rows[first - 1]["step"]) if first > 0 else 0

    def mean(key: str) -> float:
        return sum(row[key] for row in tail) / len(tail)

    kl, nll, multiplier = mean("kl"), mean("nll"), mean("multiplier")
    multiplier_std = math.sqrt(sum((row["multiplier"] - multiplier) ** 2 for row in tail) / len(tail))
    objective = config.objective_settings
    satisfied = None
    if objective.bounded_term is not None:
        bounded = {"kl": kl, "nll": nll}[objective.bounded_term]
        satisfied = bool(bounded <= objective.budget_value * (1 + CONSTRAINT_TOLERANCE))
    return {
        "mode": config.objective_name,
        "epsilon": config.epsilon,
        "beta": config.beta,
        "kappa": config.kappa,
        "dataset": config.dataset,
        "seed": config.seed,
        "steps": steps,
        "seconds": seconds,
        "tail_steps": steps - covered_from,
        "kl": kl,
        "nll": nll,
        "elbo": -(nll + kl),
        "multiplier": multiplier,
        "multiplier_std": multiplier_std,
        "constraint_satisfied": satisfied,
        "constraint_tolerance": CONSTRAINT_TOLERANCE if satisfied is not None else None,
        "final": {key: rows[-1][key] for key in ("nll", "kl", "loss", "multiplier")},
        "units": "nats per sample",
    }

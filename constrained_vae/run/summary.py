"""What a run's training log says at the end: ``RUN/summary.json``'s final and tail-averaged figures."""

from __future__ import annotations

import math
from typing import Any

from constrained_vae.core.objectives.base import ObjectiveSettings
from constrained_vae.errors import RunFolderError
from constrained_vae.run.settings import RunConfig

TAIL_FRACTION = 0.1  # summary figures average the rows of the last 10% of steps
CONSTRAINT_TOLERANCE = 0.05  # a budget is met when its tail term ≤ budget·(1 + 5%)
# A learned multiplier has settled when the mean of its logged values over the last quarter of the
# run's steps is within SETTLE_TOLERANCE of their mean over the quarter before (relative to that
# mean, or to MULTIPLIER_FLOOR when smaller), each quarter holding at least SETTLE_MIN_ROWS rows.
SETTLE_TOLERANCE = 0.05
SETTLE_MIN_ROWS = 3
# A budget is inactive when its tail term ≤ INACTIVE_FRACTION·budget while the tail λ ≤ MULTIPLIER_FLOOR:
# λ sits at its floor (0 for the additive rules, 1e-6 for the log rules) and the budget never binds.
INACTIVE_FRACTION = 0.5
MULTIPLIER_FLOOR = 1e-3
STILL_MOVING = "still moving"
TOO_FEW_ROWS = "too few rows to judge"


def tail_start(last_step: int) -> int:
    """The step after which a run of ``last_step`` steps is in its tail (the last :data:`TAIL_FRACTION`)."""
    return last_step - max(1, math.ceil(TAIL_FRACTION * last_step))


def multiplier_drift(rows: list[dict[str, float]]) -> float | None:
    """The relative change of the logged multiplier from the third to the last quarter of the run's steps.

    ``(m₄ − m₃) / max(|m₃|, MULTIPLIER_FLOOR)``, where m₃ and m₄ are the means of the rows logged
    in steps (S/2, 3S/4] and (3S/4, S] of a run of S steps; None when either quarter holds fewer
    than :data:`SETTLE_MIN_ROWS` rows (too few to judge).
    """
    last = rows[-1]["step"]
    third = [row["multiplier"] for row in rows if last / 2 < row["step"] <= 3 * last / 4]
    fourth = [row["multiplier"] for row in rows if row["step"] > 3 * last / 4]
    if min(len(third), len(fourth)) < SETTLE_MIN_ROWS:
        return None
    m3, m4 = sum(third) / len(third), sum(fourth) / len(fourth)
    return (m4 - m3) / max(abs(m3), MULTIPLIER_FLOOR)


def multiplier_verdict(drift: float | None) -> tuple[bool, str]:
    """(settled, verdict) for a :func:`multiplier_drift`: settled when |drift| ≤ :data:`SETTLE_TOLERANCE`;
    a drift of None (too few rows) is not settled."""
    if drift is None:
        return False, TOO_FEW_ROWS
    settled = abs(drift) <= SETTLE_TOLERANCE
    return settled, "settled" if settled else STILL_MOVING


def multiplier_remark(summary: dict[str, Any], symbol: str = "λ") -> str | None:
    """``λ still moving: -25% over the last quarter of steps``, ``too few rows to judge whether λ
    settled``, or None for a settled multiplier and for a summary without a verdict (no learned
    multiplier, or written before the verdict was kept)."""
    verdict, drift = summary.get("multiplier_verdict"), summary.get("multiplier_drift")
    if verdict == STILL_MOVING and drift is not None:
        return f"{symbol} {STILL_MOVING}: {100 * drift:+.0f}% over the last quarter of steps"
    if verdict == STILL_MOVING:
        return f"{symbol} {STILL_MOVING}"
    if verdict == TOO_FEW_ROWS:
        return f"{TOO_FEW_ROWS} whether {symbol} settled"
    return None


def format_spread(
    mean: float,
    spread: float,
    count: int | None = None,
    *,
    needed: int = 2,
    unit: str = "row",
    mean_format: str = ".4g",
    spread_format: str = ".2g",
) -> str:
    """``mean ± spread``: ``—`` without a finite mean, the mean alone without a finite spread (one seed), and
    ``mean ± n/a (1 row)`` when ``count`` (the ``unit``s the spread was taken over; None: not known) is
    below ``needed``, where a spread of 0 would read as settled."""
    if not math.isfinite(mean):
        return "—"
    if count is not None and count < needed:
        return f"{mean:{mean_format}} ± n/a ({count} {unit}{'' if count == 1 else 's'})"
    return f"{mean:{mean_format}} ± {spread:{spread_format}}" if math.isfinite(spread) else f"{mean:{mean_format}}"


def format_multiplier(summary: dict[str, Any]) -> str:
    """The tail λ ± its spread over the tail's rows, ``± n/a (N rows)`` when the tail holds fewer than
    :data:`SETTLE_MIN_ROWS` (the settled rule's "too few rows"); a summary written before ``tail_rows``
    was kept gets its spread."""
    mean, spread = summary["multiplier"], summary["multiplier_std"]
    return format_spread(
        mean, spread, summary.get("tail_rows"), needed=SETTLE_MIN_ROWS, mean_format=".4f", spread_format=".4f"
    )


def constraint_status(summary: dict[str, Any]) -> str | None:
    """``met``, ``NOT met``, ``inactive`` or None (no budget) of a summary; one written before the
    status was kept gets ``met`` / ``NOT met`` from ``constraint_satisfied``."""
    if summary.get("constraint_status") is not None:
        return summary["constraint_status"]
    satisfied = summary.get("constraint_satisfied")
    return None if satisfied is None else ("met" if satisfied else "NOT met")


def summarise(config: RunConfig, rows: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """Final and tail-averaged figures; the tail is the rows logged in the last 10% of steps.

    ``tail_steps`` is the number of steps those rows average (a row averages the
    steps since the row before it), so it can exceed 10% when rows are sparse; ``tail_rows``
    is the number of those rows (``multiplier_std`` is their spread).
    ``constraint_satisfied`` says whether the tail term the objective's budget bounds (KL ≤ ε,
    NLL ≤ κ) is within :data:`CONSTRAINT_TOLERANCE` of it; None for an objective without one.
    ``constraint_status`` is ``met``, ``NOT met`` or ``inactive`` (met, but with the tail term
    ≤ :data:`INACTIVE_FRACTION` of the budget and the learned λ at its floor), with
    ``constraint_note`` saying so in words for an inactive budget. For an objective with a learned
    multiplier, ``multiplier_drift`` (:func:`multiplier_drift`), ``multiplier_settled`` and
    ``multiplier_verdict`` (``settled``, ``still moving``, ``too few rows to judge``) say whether
    it settled; None for the others.
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
    drift = settled = verdict = None
    if objective.learns_multiplier:
        drift = multiplier_drift(rows)
        settled, verdict = multiplier_verdict(drift)
    status, note = _constraint_status(objective, satisfied, {"kl": kl, "nll": nll}, multiplier)
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
        "tail_rows": len(tail),
        "kl": kl,
        "nll": nll,
        "elbo": -(nll + kl),
        "multiplier": multiplier,
        "multiplier_std": multiplier_std,
        "constraint_satisfied": satisfied,
        "constraint_tolerance": CONSTRAINT_TOLERANCE if satisfied is not None else None,
        "constraint_status": status,
        "constraint_note": note,
        "multiplier_drift": drift,
        "multiplier_settled": settled,
        "multiplier_verdict": verdict,
        "final": {key: rows[-1][key] for key in ("nll", "kl", "loss", "multiplier")},
        "units": "nats per sample",
    }


def _constraint_status(
    objective: ObjectiveSettings, satisfied: bool | None, tail: dict[str, float], multiplier: float
) -> tuple[str | None, str | None]:
    """(``met`` / ``NOT met`` / ``inactive`` / None, the words for an inactive budget or None).

    λ is the reported tail multiplier, or its inverse where the objective reports 1/λ (GECO's β).
    """
    if satisfied is None:
        return None, None
    if not satisfied:
        return "NOT met", None
    if objective.learns_multiplier:
        inverse = objective.reports_inverse_multiplier
        lam = (1 / multiplier if multiplier > 0 else math.inf) if inverse else multiplier
        bounded, budget = tail[objective.bounded_term], objective.budget_value
        if bounded <= INACTIVE_FRACTION * budget and lam <= MULTIPLIER_FLOOR:
            term = f"{objective.bounded_term.upper()} {bounded:.2f} ≪ {objective.budget_symbol} = {budget:g}"
            collapse = "; the posterior may have collapsed" if objective.bounded_term == "kl" else ""
            return "inactive", f"{objective.budget_kind} inactive: {term}, λ at its floor{collapse}"
    return "met", None

"""How well a multiplier rule tracks its budget: settling step, λ oscillation, error against β*.

Read from ordinary run folders (``metrics.csv`` rows are means over ``log_every``
steps), so the numbers are those a user's runs would show:

* **settle step** — the first logged step from which every later row's KL is within
  ``tolerance``·ε of ε (GECO: the NLL within ``tolerance``·κ of κ); None when the last
  row is not.
* **oscillation** — std / mean of the multiplier (the effective β) over the rows of the
  last 10% of steps. Not defined for ``capacity``, whose per-step KL weight is ±γ
  (it is None there, and so is the λ error).
* **λ error** — (tail mean of the multiplier − β*) / β*, where β*(ε) is known
  (linear-Gaussian data, :mod:`constrained_vae.core.linear_gaussian`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from constrained_vae.core.objectives import OBJECTIVES
from constrained_vae.run import folder
from constrained_vae.run.summary import tail_start

SETTLE_TOLERANCE = 0.02  # |KL − ε| ≤ 2% of ε


def settle_step(steps: Sequence[float], values: Sequence[float], target: float, tolerance: float) -> int | None:
    """The first step from which every value is within ``tolerance``·target of ``target`` (None if the last is not)."""
    settled: int | None = None
    for step, value in zip(steps, values, strict=True):
        if abs(value - target) <= tolerance * abs(target):
            settled = int(step) if settled is None else settled
        else:
            settled = None
    return settled


@dataclass
class Tracking:
    """One run's tracking figures (nats per sample; the multiplier is the effective β)."""

    setting: str
    mode: str
    dual_update: str | None
    dual_lr: float | None
    epsilon: float | None
    kappa: float | None
    steps: int
    settle_step: int | None
    oscillation: float | None
    kl: float
    nll: float
    multiplier: float
    beta_star: float | None
    lambda_error: float | None

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def track(
    run_dir: str | Path, beta_star: float | None = None, *, setting: str = "", tolerance: float = SETTLE_TOLERANCE
) -> Tracking:
    """The tracking figures of a finished run folder; ``setting`` names it in tables (default: the folder)."""
    config = folder.read_config(run_dir)
    objective = config.objective_settings
    rows = folder.read_metrics(run_dir)
    summary = folder.read_summary(run_dir)
    steps = [row["step"] for row in rows]
    bounded = [row[objective.bounded_term] for row in rows]
    settled = settle_step(steps, bounded, objective.budget_value, tolerance)
    last = steps[-1]
    tail = [row["multiplier"] for row in rows if row["step"] > tail_start(int(last))]
    mean = sum(tail) / len(tail)
    std = math.sqrt(sum((m - mean) ** 2 for m in tail) / len(tail))
    oscillation = std / abs(mean) if mean else math.inf
    error = None if beta_star is None else (summary["multiplier"] - beta_star) / beta_star
    if not objective.reports_effective_beta:  # capacity's ±γ
        oscillation = error = None
    return Tracking(
        setting=setting or Path(run_dir).name,
        mode=config.objective_name,
        dual_update=config.dual_update,
        dual_lr=config.dual_lr,
        epsilon=config.epsilon,
        kappa=config.kappa,
        steps=int(last),
        settle_step=settled,
        oscillation=oscillation,
        kl=summary["kl"],
        nll=summary["nll"],
        multiplier=summary["multiplier"],
        beta_star=beta_star,
        lambda_error=error,
    )


def markdown_table(results: Sequence[Tracking]) -> str:
    """One row per setting and budget: settle step, oscillation, KL, NLL, β and its error against β*."""
    lines = [
        "| setting | ε (κ) | β* | settled at step | β osc. (std/mean) | KL | NLL | β (tail) | β error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        budget = f"{r.epsilon:g}" if r.kappa is None else f"κ {r.kappa:g}"
        settled = "never" if r.settle_step is None else f"{r.settle_step}"
        star = "–" if r.beta_star is None else f"{r.beta_star:g}"
        error = "–" if r.lambda_error is None else f"{100 * r.lambda_error:+.1f}%"
        oscillation = "–" if r.oscillation is None else f"{r.oscillation:.3f}"
        beta = f"{r.multiplier:.4g}" if OBJECTIVES[r.mode].reports_effective_beta else "±γ"
        lines.append(
            f"| {r.setting} | {budget} | {star} | {settled} | {oscillation} | {r.kl:.3f} | {r.nll:.2f} "
            f"| {beta} | {error} |"
        )
    return "\n".join(lines)


def summary_table(results: Sequence[Tracking]) -> str:
    """One row per setting over its budgets: how many settled, the worst settle step, oscillation and |error|."""
    lines = [
        "| setting | budgets settled | worst settle step | worst β osc. | worst |β error| |",
        "|---|---|---|---|---|",
    ]
    by_setting: dict[str, list[Tracking]] = {}
    for r in results:
        by_setting.setdefault(r.setting, []).append(r)
    for name, rows in by_setting.items():
        settled = [r.settle_step for r in rows if r.settle_step is not None]
        worst = "never" if len(settled) < len(rows) else str(max(settled))
        errors = [abs(r.lambda_error) for r in rows if r.lambda_error is not None]
        error = f"{100 * max(errors):.1f}%" if errors else "–"
        oscillations = [r.oscillation for r in rows if r.oscillation is not None]
        oscillation = f"{max(oscillations):.3f}" if oscillations else "–"
        lines.append(f"| {name} | {len(settled)}/{len(rows)} | {worst} | {oscillation} | {error} |")
    return "\n".join(lines)

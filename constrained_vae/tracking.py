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
  (linear-Gaussian data, :mod:`constrained_vae.linear_gaussian`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from constrained_vae import runs

SETTLE_TOLERANCE = 0.02  # |KL − ε| ≤ 2% of ε
TAIL_FRACTION = 0.1


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
    config = runs.read_config(run_dir)
    rows = runs.read_metrics(run_dir)
    summary = runs.read_summary(run_dir)
    steps = [row["step"] for row in rows]
    if config.kappa is not None:
        settled = settle_step(steps, [row["nll"] for row in rows], config.kappa, tolerance)
    else:
        settled = settle_step(steps, [row["kl"] for row in rows], config.epsilon, tolerance)
    last = steps[-1]
    tail = [row["multiplier"] for row in rows if row["step"] > last * (1 - TAIL_FRACTION)]
    mean = sum(tail) / len(tail)
    std = math.sqrt(sum((m - mean) ** 2 for m in tail) / len(tail))
    oscillation = std / abs(mean) if mean else math.inf
    error = None if beta_star is None else (summary["multiplier"] - beta_star) / beta_star
    if config.mode == "capacity":  # its multiplier is ±γ, not an effective β
        oscillation = error = None
    return Tracking(
        setting=setting or Path(run_dir).name,
        mode=config.mode,
        dual_update=config.dual_update,
        dual_lr=config.dual_lr if config.mode in ("constrained", "geco") else None,
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
        beta = "±γ" if r.mode == "capacity" else f"{r.multiplier:.4g}"
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


def write_figure(folders: dict[str, tuple[Path, Path]], budgets: tuple[float, float], path: str | Path) -> Path:
    """λ(t) (effective β) and KL(t)/ε for each setting, at a tight and a loose budget, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True, constrained_layout=True)
    for column, budget in enumerate(budgets):
        for name, pair in folders.items():
            folder = Path(pair[column])
            if not (folder / runs.METRICS).exists():
                continue
            rows = runs.read_metrics(folder)
            steps = [row["step"] for row in rows]
            color = f"C{list(folders).index(name) % 10}"
            if runs.read_config(folder).mode != "capacity":  # its ±γ is no effective β: KL panel only
                axes[0, column].plot(steps, [row["multiplier"] for row in rows], lw=1.2, color=color, label=name)
            axes[1, column].plot(steps, [row["kl"] / budget for row in rows], lw=1.2, color=color, label=name)
        axes[0, column].set_title(f"ε = {budget:g} nats ({'tight' if column == 0 else 'loose'})")
        axes[0, column].set_yscale("symlog", linthresh=1e-3)
        axes[0, column].set_ylabel("effective β (λ; 0 shown at the bottom)")
        axes[1, column].axhspan(1 - SETTLE_TOLERANCE, 1 + SETTLE_TOLERANCE, color="0.85", zorder=0)
        axes[1, column].axhline(1.0, color="k", lw=0.8)
        axes[1, column].set_ylim(0, 2)
        axes[1, column].set_ylabel("KL / ε")
        axes[1, column].set_xlabel("step")
    axes[1, 1].legend(fontsize=7, ncol=2, loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""The figure of ``benchmarks/dual_tracking.py``: λ(t) and KL(t)/ε of each multiplier rule."""

from __future__ import annotations

from pathlib import Path

from constrained_vae.analysis.tracking import SETTLE_TOLERANCE
from constrained_vae.plots.figure import new_figure, save_figure
from constrained_vae.run import folder


def write_figure(folders: dict[str, tuple[Path, Path]], budgets: tuple[float, float], path: str | Path) -> Path:
    """λ(t) (effective β) and KL(t)/ε for each setting, at a tight and a loose budget, side by side."""
    fig = new_figure(figsize=(12, 7.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    for column, budget in enumerate(budgets):
        for name, pair in folders.items():
            run_dir = Path(pair[column])
            if not (run_dir / folder.TRAINING_LOG).exists():
                continue
            rows = folder.read_metrics(run_dir)
            steps = [row["step"] for row in rows]
            color = f"C{list(folders).index(name) % 10}"
            if folder.read_config(run_dir).objective_type.reports_effective_beta:  # capacity's ±γ: KL panel only
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
    return save_figure(fig, path, (path.suffix.lstrip(".") or "png",))[0]

"""Figures and the CSV table of a sweep's ε ↔ β analysis (``SWEEP/analysis/``).

1. ``effective_beta``: effective β against ε (log–log), the three estimates with
   seed bands, and the closed form when there is one;
2. ``rate_distortion``: NLL against KL for constrained and fixed-β runs, with the
   fitted curve through the constrained runs (and the closed form D(R));
3. ``training_curves``: KL and λ against training step for every ε;
4. ``disentanglement`` (when runs have ``metrics.json``): scores against ε and β.

Each is written as PNG and PDF (:func:`~constrained_vae.plots.figure.save_figure`). Units: nats per sample.
An ε whose runs did not meet their constraint is marked in every figure and table: its λ is a lower bound on the
effective β (see :mod:`constrained_vae.analysis.epsilon_beta`). Legends list only what is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.axes
import matplotlib.lines
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from constrained_vae.analysis.epsilon_beta import (
    ESTIMATES,
    dual_flags,
    fit_rate_distortion,
    format_estimate,
    missed_constraint,
    tradeoff_table,
)
from constrained_vae.analysis.sweep_table import Sweep, load_sweep
from constrained_vae.plots.axes import legend, log_axis_ticked_at, multiplier_axis, plain_log_y, ratio_axis
from constrained_vae.plots.figure import new_figure, save_figure
from constrained_vae.run import folder
from constrained_vae.run.summary import CONSTRAINT_TOLERANCE

UNMET = f"constraint not met (tail KL > {1 + CONSTRAINT_TOLERANCE:g} ε)"

ESTIMATE_STYLE = {
    "dual": dict(label="dual: converged λ", color="C0", marker="o"),
    "inverse_fixed": dict(label="inverse fixed-β: β with KL(β) = ε", color="C1", marker="s"),
    "slope": dict(label="slope: −dNLL/dKL of the constrained R–D fit", color="C2", marker="^"),
}
TABLE_COLUMNS = [
    *("epsilon", "beta_dual", "beta_dual_std", "beta_inverse_fixed", "beta_inverse_fixed_std"),
    *("beta_slope", "beta_slope_std", "beta_closed_form", "error_dual", "error_inverse_fixed", "error_slope"),
    *("n_seeds", "kl", "nll", "constraint_satisfied", "constraint_met"),
    # λ of the runs the dual estimate rests on: settled (empty where their summaries do not say), inactive budget
    *("multiplier_settled", "constraint_inactive"),
]


def _title(sweep: Sweep) -> str:
    dataset = sweep.settings.get("dataset", "?")
    extra = f", spectrum {sweep.settings['spectrum']}" if dataset == "linear-gaussian" else ""
    return f"{dataset}{extra}, {sweep.runs['seed'].nunique()} seed(s)"


UNCONVERGED_STYLE = {  # open markers around a dual estimate that is no settled effective β, by reason
    "unmet": dict(marker="o", markeredgecolor="red", label=f"{UNMET}: dual λ is a lower bound"),
    "moving": dict(marker="D", markeredgecolor="darkorange", label="λ still moving: dual λ not settled"),
    "inactive": dict(marker="s", markeredgecolor="grey", label="constraint inactive (KL ≪ ε, λ at its floor)"),
}


def mark_unconverged(ax: matplotlib.axes.Axes, table: pd.DataFrame, prefix: str = "", what: str = "") -> None:
    """Ring the dual estimates of a :func:`tradeoff_table` (columns under ``prefix``) that are no settled
    effective β (:func:`~constrained_vae.analysis.epsilon_beta.dual_flags`), one legend entry per reason
    drawn, ``what`` appended to its label."""
    eps, dual = table["epsilon"].to_numpy(float), table[f"{prefix}beta_dual"].to_numpy(float)
    for reason, rows in dual_flags(table, prefix).items():
        if rows.any():
            style = UNCONVERGED_STYLE[reason]
            ax.plot(
                eps[rows],
                dual[rows],
                linestyle="none",
                markersize=11,
                markerfacecolor="none",
                markeredgewidth=1.5,
                **(style | {"label": style["label"] + what}),
            )


def plot_effective_beta(sweep: Sweep, table: pd.DataFrame) -> Figure:
    """Effective β against ε: the estimates that have values, seed bands, and rings round the dual
    estimates that are no settled effective β (:func:`mark_unconverged`)."""
    fig = new_figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    eps = table["epsilon"].to_numpy()
    flagged = any(rows.any() for rows in dual_flags(table).values())
    for name, style in ESTIMATE_STYLE.items():
        mean, std = table[f"beta_{name}"].to_numpy(), table[f"beta_{name}_std"].to_numpy()
        ok = np.isfinite(mean)
        if not ok.any():  # nothing to draw (e.g. no fixed-β runs): no legend entry either
            continue
        if name == "dual" and flagged:
            style = style | {"label": "dual: λ at the end of training (ringed: not settled)"}
        ax.plot(eps[ok], mean[ok], linestyle="-", markersize=5, **style)
        band = ok & np.isfinite(std)
        ax.fill_between(
            eps[band],
            np.maximum(mean[band] - std[band], 1e-12),
            mean[band] + std[band],
            color=style["color"],
            alpha=0.2,
        )
    mark_unconverged(ax, table)
    beta_star = sweep.closed_form()
    if beta_star is not None:
        grid = np.geomspace(eps.min(), eps.max(), 200)
        ax.plot(grid, [beta_star(e) for e in grid], "k--", linewidth=1, label="closed form β*(ε)")
    plain_log_y(ax)
    log_axis_ticked_at(ax, eps)  # the swept budgets
    ax.set_xlabel("KL budget ε (nats per sample)")
    ax.set_ylabel("effective β (nats of NLL per nat of KL)")
    ax.set_title(f"Effective β of a KL budget — {_title(sweep)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    legend(ax, fontsize=8)
    return fig


def plot_rate_distortion(sweep: Sweep) -> Figure:
    """NLL against KL of every run, the fit through the constrained runs, the closed form D(R)."""
    fig = new_figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    constrained, fixed = sweep.constrained, sweep.fixed
    if len(fixed):
        points = ax.scatter(
            fixed["kl"],
            fixed["nll"],
            c=np.log(fixed["beta"]),
            cmap="autumn",
            marker="s",
            s=30,
            edgecolors="k",
            linewidths=0.4,
            label="fixed-β runs",
            zorder=3,
        )
        colorbar = fig.colorbar(points, ax=ax)
        ticks = sorted(fixed["beta"].unique())
        colorbar.set_ticks(np.log(ticks))
        colorbar.set_ticklabels([f"{b:g}" for b in ticks])
        colorbar.set_label("β (fixed-β runs)")
    if len(constrained):
        ax.scatter(
            constrained["kl"],
            constrained["nll"],
            marker="o",
            s=30,
            facecolors="none",
            edgecolors="C0",
            label="constrained runs (one per ε and seed)",
            zorder=4,
        )
        unmet = constrained[missed_constraint(constrained)]
        if len(unmet):
            ax.scatter(
                unmet["kl"],
                unmet["nll"],
                marker="o",
                s=110,
                facecolors="none",
                edgecolors="red",
                label=UNMET,
                zorder=5,
            )
        by_eps = constrained.groupby("epsilon")[["kl", "nll"]].mean()
        if len(by_eps) >= 3:
            fit = fit_rate_distortion(by_eps["kl"].values, by_eps["nll"].values)
            grid = np.linspace(*fit.kl_range, 200)
            ax.plot(grid, fit.nll(grid), "C0-", linewidth=1.2, label="fit: a + Σ b·exp(−c·KL), b ≥ 0")
    distortion = sweep.closed_form_distortion()
    if distortion is not None:
        kls = sweep.runs["kl"]
        grid = np.linspace(max(kls.min(), 1e-3), kls.max(), 200)
        ax.plot(grid, [distortion(k) for k in grid], "k--", linewidth=1, label="closed form D(R)")
    ax.set_xlabel("rate: KL(q(z|x) || p(z)) (nats per sample)")
    ax.set_ylabel("distortion: NLL (nats per sample)")
    ax.set_title(f"Rate–distortion — {_title(sweep)}", fontsize=10)
    ax.grid(True, alpha=0.3)
    legend(ax, fontsize=8)
    return fig


def plot_training_curves(sweep: Sweep) -> Figure:
    """KL/ε (1 = the constraint is tight) and λ against step, one colour per ε, one line per seed."""
    fig = new_figure(figsize=(7.5, 6.4))
    ax_kl, ax_lam = fig.subplots(2, 1, sharex=True)
    constrained = sweep.constrained.sort_values(["epsilon", "seed"])
    epsilons = sorted(constrained["epsilon"].unique())
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(epsilons), 1)))
    final_lambdas, lambdas, final_ratios = [], [], []
    unmet = set(constrained.loc[missed_constraint(constrained), "epsilon"])
    for eps, color in zip(epsilons, colors, strict=True):
        for i, name in enumerate(constrained[constrained["epsilon"] == eps]["name"]):
            rows = pd.DataFrame(folder.read_metrics(sweep.path / name))
            label = (f"ε = {eps:g}" + (" (not met)" if eps in unmet else "")) if i == 0 else None
            ax_kl.plot(rows["step"], rows["kl"] / eps, color=color, linewidth=0.9, alpha=0.8, label=label)
            ax_lam.plot(rows["step"], rows["multiplier"], color=color, linewidth=0.9, alpha=0.8)
            final_lambdas.append(float(rows["multiplier"].iloc[-1]))
            lambdas.append(rows["multiplier"].to_numpy(float))
            final_ratios.append(float(rows["kl"].iloc[-1]) / eps)
    ax_kl.axhline(1.0, color="k", linestyle=":", linewidth=0.8)
    ratio_axis(ax_kl, final_ratios)
    ax_kl.set_ylabel("KL / ε (KL in nats per sample)")
    ax_kl.set_title(f"Constraint KL ≤ ε and multiplier λ during training — {_title(sweep)}", fontsize=10)
    legend(ax_kl, fontsize=7, ncol=2, loc="best")
    multiplier_axis(ax_lam, final_lambdas, np.concatenate(lambdas) if lambdas else np.array([]))
    ax_lam.set_ylabel("λ (nats of NLL per nat of KL)")
    ax_lam.set_xlabel("training step")
    for ax in (ax_kl, ax_lam):
        ax.grid(True, alpha=0.3)
    return fig


DISENTANGLEMENT_SCORES = {
    "betavae_score.eval_accuracy": "BetaVAE metric (eval accuracy)",
    "factorvae_score.eval_accuracy": "FactorVAE metric (eval accuracy)",
    "mig.mig": "MIG",
    "dci.disentanglement": "DCI disentanglement",
    "sap_score.sap": "SAP score",
    "modularity_explicitness.modularity_score": "Modularity",
    "modularity_explicitness.explicitness_score_test": "Explicitness (test ROC-AUC)",
}
MARKERS = "os^Dvp*"  # one per entry of DISENTANGLEMENT_SCORES


def disentanglement_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in DISENTANGLEMENT_SCORES if c in frame.columns and frame[c].notna().any()]


def plot_disentanglement(sweep: Sweep) -> Figure | None:
    columns = disentanglement_columns(sweep.runs)
    if not columns:
        return None
    fig = new_figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, frame, key, label in (
        (axes[0], sweep.constrained, "epsilon", "KL budget ε (nats per sample)"),
        (axes[1], sweep.fixed, "beta", "β (fixed-β runs)"),
    ):
        for i, column in enumerate(columns):
            scored = frame[frame[column].notna()]
            if not len(scored):
                continue
            grouped = scored.groupby(key)[column]
            ax.errorbar(
                grouped.mean().index,
                grouped.mean(),
                yerr=grouped.std().fillna(0),
                marker=MARKERS[i],
                capsize=3,
                label=DISENTANGLEMENT_SCORES[column],
            )
        log_axis_ticked_at(ax, sorted(frame[key].unique()))
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    for ax in axes:
        ax.axhline(0.2, color="grey", linestyle=":", linewidth=1)
    axes[0].set_ylim(0, 1.02)
    axes[0].set_ylabel("score (1 = best)")
    handles, labels = axes[0 if len(sweep.constrained) else 1].get_legend_handles_labels()
    handles.append(matplotlib.lines.Line2D([], [], color="grey", linestyle=":", linewidth=1))
    labels.append("chance of the BetaVAE and FactorVAE metrics (MIG, DCI, SAP: 0; explicitness: 0.5)")
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.25)
    fig.suptitle(f"Disentanglement against ε and β — {_title(sweep)}", fontsize=10)
    return fig


def write_tradeoff_analysis(sweep: Sweep | str | Path) -> tuple[pd.DataFrame, list[Path]]:
    """Write ``SWEEP/analysis/tradeoff.csv`` and the figures; return the table and paths.

    ``sweep`` is a loaded :class:`Sweep` or a sweep folder to load.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    table = tradeoff_table(sweep)  # refuses a sweep it cannot map before anything is written
    out_dir = sweep.path / "analysis"
    out_dir.mkdir(exist_ok=True)
    csv_path = out_dir / "tradeoff.csv"
    table[TABLE_COLUMNS].to_csv(csv_path, index=False, float_format="%.6g")
    sweep.runs.to_csv(out_dir / "runs.csv", index=False, float_format="%.6g")
    paths = [csv_path, out_dir / "runs.csv"]
    both = ("png", "pdf")
    paths += save_figure(plot_effective_beta(sweep, table), out_dir / "effective_beta", both)
    paths += save_figure(plot_rate_distortion(sweep), out_dir / "rate_distortion", both)
    if len(sweep.constrained):
        paths += save_figure(plot_training_curves(sweep), out_dir / "training_curves", both)
    figure = plot_disentanglement(sweep)
    if figure is not None:
        paths += save_figure(figure, out_dir / "disentanglement", both)
    return table, paths


def format_table(table: pd.DataFrame) -> str:
    """The tradeoff table as Markdown, estimates as mean ± seed std, errors in %.

    The last column says whether the constraint was met at each ε. Where it was not, the dual
    β and its error are lower bounds (λ was still rising), written with ``≥``, and a note
    under the table says so.
    """
    has_closed_form = table["beta_closed_form"].notna().any()
    head = ["ε (nats)", "β dual", "β inverse fixed-β", "β slope"]
    if has_closed_form:
        head += ["β* closed form", "err dual", "err inverse", "err slope"]
    head.append("constraint met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pct(value: float) -> str:
        return "—" if not math.isfinite(value) else f"{100 * value:+.1f}%"

    for row in table.itertuples():
        bound = "" if row.constraint_met else "≥ "
        cells = [f"{row.epsilon:g}"]
        for name in ESTIMATES:
            mean, std = getattr(row, f"beta_{name}"), getattr(row, f"beta_{name}_std")
            cells.append((bound if name == "dual" and math.isfinite(mean) else "") + format_estimate(mean, std))
        if has_closed_form:
            cells += [
                f"{row.beta_closed_form:.4g}",
                (bound if math.isfinite(row.error_dual) else "") + pct(row.error_dual),
            ]
            cells += [pct(row.error_inverse_fixed), pct(row.error_slope)]
        unmet = round((1 - row.constraint_satisfied) * row.n_seeds)
        cells.append("yes" if row.constraint_met else f"**no** ({unmet} of {row.n_seeds} seeds)")
        lines.append("| " + " | ".join(cells) + " |")
    if not table["constraint_met"].all():
        lines.append(f"\n≥: {UNMET}; λ had not settled, so the dual β and its error are lower bounds, not estimates.")
    return "\n".join(lines)

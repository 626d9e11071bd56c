"""The figures of a study and ``STUDY/analysis/`` (:func:`write_study_analysis`).

Writes into ``STUDY/analysis/``: ``study_table.csv``, ``pairs.csv``, ``paired.csv`` and
``epsilon_beta_map.csv`` (:mod:`constrained_vae.analysis.study`); figures: every score against KL
for both families; KL/ε and λ against step (:func:`~constrained_vae.plots.tradeoff.plot_training_curves`);
the effective β of both maps; the latent traversals of the best run of each family
(:func:`~constrained_vae.plots.run_figures.write_figures`); and ``report.md``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import matplotlib.ticker
import pandas as pd
from matplotlib.figure import Figure

from constrained_vae.analysis.epsilon_beta import missed_constraint
from constrained_vae.analysis.study import (
    DEFAULT_SELECT_BY,
    FAMILIES,
    best_runs,
    check_select_by,
    epsilon_beta_map,
    format_report,
    load_study,
    matched_pairs,
    paired_comparison,
    quantities,
    score_columns,
    study_table,
    study_warnings,
)
from constrained_vae.analysis.sweep_table import Sweep, load_sweep
from constrained_vae.plots.figure import new_figure, save_figure
from constrained_vae.plots.run_figures import FIGURES_DIR, write_figures
from constrained_vae.plots.tradeoff import DISENTANGLEMENT_SCORES, UNMET, mark_unconverged, plot_training_curves

ANALYSIS_DIR = "analysis"


def plot_scores_against_kl(sweep: Sweep) -> Figure | None:
    """Each score against the tail KL (nats per sample): every run, and the seed mean ± std of each point."""
    columns = score_columns(sweep.runs)
    if not columns:
        return None
    cols = min(3, len(columns))
    rows = math.ceil(len(columns) / cols)
    fig = new_figure(figsize=(4.2 * cols, 3.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, column in zip(axes.flat, columns, strict=False):
        for (mode, key, symbol), (color, marker) in zip(FAMILIES, (("C0", "s"), ("C1", "o")), strict=True):
            family = sweep.runs[sweep.runs["mode"] == mode]
            if not len(family):
                continue
            ax.scatter(family["kl"], family[column], color=color, marker=marker, s=12, alpha=0.35)
            missed = family[missed_constraint(family)] if mode == "constrained" else family.iloc[:0]
            if len(missed):  # over budget: its KL is not the budget's
                ax.scatter(
                    missed["kl"],
                    missed[column],
                    marker="o",
                    s=70,
                    facecolors="none",
                    edgecolors="red",
                    label=f"{UNMET}: run over its budget",
                    zorder=4,
                )
            means = family.groupby(key)[["kl", column]].agg(["mean", "std"]).sort_values(("kl", "mean"))
            ax.errorbar(
                means[("kl", "mean")],
                means[(column, "mean")],
                xerr=means[("kl", "std")].fillna(0),
                yerr=means[(column, "std")].fillna(0),
                color=color,
                marker=marker,
                capsize=2,
                label=f"{mode} (one point per {symbol}, seed mean ± std)",
            )
        ax.set_xlabel("KL (nats per sample)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        ax.set_title(DISENTANGLEMENT_SCORES.get(column, column), fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(columns) :]:
        ax.set_visible(False)
    entries = {}  # every entry drawn on any panel, once
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    handles, labels = list(entries.values()), list(entries)
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_maps(table: pd.DataFrame) -> Figure:
    """Effective β against ε (log–log): the study's dual and inverse-fixed estimates, and the reference's; a dual
    estimate that is no settled effective β is ringed as in ``tradeoff_curves.py`` (:func:`mark_unconverged`)."""
    fig = new_figure(figsize=(6, 4.2))
    ax = fig.subplots()
    for prefix, style, what in (("", "-", "this study"), ("ref_", "--", "reference sweep")):
        for estimate, marker in (("beta_dual", "o"), ("beta_inverse_fixed", "s")):
            column = prefix + estimate
            if column not in table or not table[column].notna().any():
                continue
            shown = table[table[column].notna()]
            ax.errorbar(
                shown["epsilon"],
                shown[column],
                yerr=shown[column + "_std"].fillna(0),
                linestyle=style,
                marker=marker,
                capsize=2,
                label=f"{estimate.removeprefix('beta_')} ({what})",
            )
    mark_unconverged(ax, table)
    if "ref_beta_dual" in table:
        mark_unconverged(ax, table, "ref_", " (reference sweep)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("KL budget ε (nats per sample)")
    ax.set_ylabel("effective β")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def write_study_analysis(
    study_dir: str | Path,
    *,
    reference: Sweep | str | Path | None = None,
    select_by: str | None = None,
    traversals: bool = True,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[str, list[Path], list[str]]:
    """Write ``STUDY/analysis/`` (see the module docstring); return a Markdown report, the paths written and
    the warnings (:func:`~constrained_vae.analysis.study.study_warnings`). ``reference`` is a sweep to
    compare the ε ↔ β map with (loaded, or its folder). Bad input (no study, a reference that is no sweep,
    a ``select_by`` that is no score of the runs) is refused before anything is written; ``select_by``
    None picks by the default score when the runs hold it, else draws no traversals."""
    record, sweep = load_study(study_dir)
    reference_sweep = load_sweep(Path(reference)) if isinstance(reference, (str, Path)) else reference
    select_by = check_select_by(sweep, select_by)
    matched = {beta: float(eps) for beta, eps in record["matched_epsilon"].items()}
    table = study_table(sweep, matched)
    pairs = matched_pairs(sweep, matched)
    comparison = paired_comparison(pairs, quantities(sweep.runs), seed=seed)
    maps = epsilon_beta_map(sweep, reference_sweep)
    warnings = study_warnings(sweep, reference_sweep)
    if traversals and select_by is None:  # no score to pick the best runs by: said, not skipped silently
        scores = score_columns(sweep.runs)
        choose = f"choose one of {', '.join(scores)} with --select-by" if scores else "see experiments/evaluate.py"
        warnings.append(f"no traversal figures: the runs hold no {DEFAULT_SELECT_BY} score to pick by; {choose}")
    out_dir = Path(study_dir) / ANALYSIS_DIR
    out_dir.mkdir(exist_ok=True)
    paths = []
    for frame, name in ((table, "study_table"), (pairs, "pairs"), (comparison, "paired"), (maps, "epsilon_beta_map")):
        paths.append(out_dir / f"{name}.csv")
        frame.to_csv(paths[-1], index=False, float_format="%.6g")
    figure = plot_scores_against_kl(sweep)
    if figure is not None:
        paths += save_figure(figure, out_dir / "scores_against_kl")
    if len(sweep.constrained):
        paths += save_figure(plot_training_curves(sweep), out_dir / "training_curves")
    paths += save_figure(plot_maps(maps), out_dir / "effective_beta")
    best = best_runs(sweep, select_by) if traversals and select_by is not None else {}
    for mode, name in best.items():
        run_dir = sweep.path / name
        write_figures(run_dir, device=device)
        paths.append(out_dir / f"traversals-{mode}.png")
        shutil.copyfile(run_dir / FIGURES_DIR / "latent_traversals.png", paths[-1])
    report = format_report(
        record, sweep, table, comparison, maps, best, select_by or "", pairs=pairs, warnings=warnings
    )
    paths.append(out_dir / "report.md")
    paths[-1].write_text(report + "\n")
    return report, paths, warnings

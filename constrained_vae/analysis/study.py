"""The analysis of a study (:mod:`constrained_vae.sweeps.study`): its table, the paired comparison, the map.

- the study table: one row per point (fixed β or constrained ε): mean and std over seeds of KL,
  NLL (nats per sample), λ (β for fixed runs) and every disentanglement score, and for an ε how many
  of its runs missed their budget, had λ still moving, or had the budget inactive, by the rules of
  :mod:`constrained_vae.analysis.epsilon_beta` (the same code ``tradeoff_curves.py`` applies);
- the paired comparison: constrained minus fixed at matched KL, the same seed on both sides: for
  each β (its runs against the runs at its matched ε) and pooled over every β, the mean
  difference, a percentile bootstrap interval (:data:`CONFIDENCE`, resampling pairs) and a
  two-sided sign test (ties dropped). A pair whose constrained run missed its budget, or had it
  inactive (KL ≪ ε), is left out (its KL is not matched to the fixed run's), and named with the reason;
- the ε ↔ β map: the three effective-β estimates of each ε
  (:func:`~constrained_vae.analysis.epsilon_beta.tradeoff_table`), next to those of a reference
  sweep (the 3,000-step map) when one is given.

A dual λ whose constraint was not met is a lower bound on the effective β and is written ``≥ λ``;
one still moving, or whose budget was inactive, is named so beside it.

:mod:`constrained_vae.plots.study` draws its figures and writes ``STUDY/analysis/``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from constrained_vae.analysis.epsilon_beta import (
    dual_flags,
    format_estimate,
    inactive_constraint,
    missed_constraint,
    sweep_warnings,
    tradeoff_table,
    unsettled_multiplier,
)
from constrained_vae.analysis.sweep_table import Sweep, load_sweep
from constrained_vae.errors import SweepError
from constrained_vae.run.presets import PRESETS
from constrained_vae.run.summary import CONSTRAINT_TOLERANCE
from constrained_vae.sweeps.study import SWEEP_DIR, read_study

CONFIDENCE = 0.95
NUM_BOOTSTRAP = 10_000
DEFAULT_SELECT_BY = "betavae_score.eval_accuracy"  # the β-VAE paper's metric picks the best run of each family
BASE_QUANTITIES = ("kl", "nll", "multiplier")
FAMILIES = (("fixed-beta", "beta", "β"), ("constrained", "epsilon", "ε"))
MAP_COLUMNS = (
    "epsilon",
    "beta_dual",
    "beta_dual_std",
    "beta_inverse_fixed",
    "beta_inverse_fixed_std",
    "beta_slope",
    "beta_slope_std",
    "kl",
    "constraint_met",
    "multiplier_settled",
    "constraint_inactive",
)


def score_columns(frame: pd.DataFrame) -> list[str]:
    """The disentanglement scores in a runs table (``metric.key`` columns with a value)."""
    return [c for c in frame.columns if "." in c and frame[c].notna().any()]


def quantities(frame: pd.DataFrame) -> list[str]:
    """KL, NLL, λ and every score: what the study table and the paired comparison report."""
    return [*BASE_QUANTITIES, *score_columns(frame)]


def point_flags(group: pd.DataFrame) -> dict[str, int | str]:
    """How many of one ε's constrained runs missed their budget (``n_unmet``), met it with λ not settled
    (``n_unsettled``) or with the budget inactive (``n_inactive``), and a ``note`` saying so in words
    (empty when none did)."""
    unmet, unsettled, inactive = missed_constraint(group), unsettled_multiplier(group), inactive_constraint(group)
    unsettled &= ~unmet  # a missed budget says more than a moving λ
    n = len(group)
    of = (lambda k: f", {k} of {n} seeds") if n > 1 else (lambda k: "")
    notes = []
    if unmet.any():
        eps = float(group["epsilon"].iloc[0])
        ratios = sorted(float(kl) / eps for kl in group.loc[unmet, "kl"])
        ratio = (
            f"{ratios[0]:.3g}"
            if math.isclose(ratios[0], ratios[-1], rel_tol=5e-3)
            else f"{ratios[0]:.3g}–{ratios[-1]:.3g}"
        )
        notes.append(f"constraint not met (KL {ratio} ε{of(int(unmet.sum()))}): λ is a lower bound")
    if unsettled.any():
        judged = group.loc[unsettled, "multiplier_drift"].notna().any()
        notes.append(
            ("λ still moving" if judged else "λ not settled (too few rows to judge)") + of(int(unsettled.sum()))
        )
    if inactive.any():
        notes.append(f"constraint inactive (KL ≪ ε, λ at its floor{of(int(inactive.sum()))})")
    return {
        "n_unmet": int(unmet.sum()),
        "n_unsettled": int(unsettled.sum()),
        "n_inactive": int(inactive.sum()),
        "note": "; ".join(notes),
    }


def study_table(sweep: Sweep, matched: dict[str, float]) -> pd.DataFrame:
    """One row per point: family, β or ε, the β an ε was matched to, seeds, mean and std of each quantity,
    and for an ε its runs' verdicts (:func:`point_flags`; zero and empty for a β)."""
    rows = []
    matched_to = {eps: float(beta) for beta, eps in matched.items()}
    for mode, key, _ in FAMILIES:
        family = sweep.runs[sweep.runs["mode"] == mode]
        for value, group in family.groupby(key):
            row = {"mode": mode, "value": float(value), "matched_to_beta": math.nan, "n_seeds": len(group)}
            row |= {"n_unmet": 0, "n_unsettled": 0, "n_inactive": 0, "note": ""}
            if mode == "constrained":
                row["matched_to_beta"] = matched_to.get(float(value), math.nan)
                row |= point_flags(group)
            for name in quantities(sweep.runs):
                row[f"{name}_mean"] = float(group[name].mean())
                row[f"{name}_std"] = float(group[name].std()) if len(group) > 1 else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def bootstrap_interval(
    differences: np.ndarray, *, confidence: float = CONFIDENCE, num: int = NUM_BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``differences`` (pairs resampled with replacement)."""
    rng = np.random.default_rng(seed)
    means = rng.choice(differences, size=(num, differences.size), replace=True).mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def sign_test(differences: np.ndarray) -> tuple[int, int, float]:
    """Positive and negative differences and the two-sided sign-test p-value (ties dropped; NaN if all tie)."""
    positive, negative = int((differences > 0).sum()), int((differences < 0).sum())
    if positive + negative == 0:
        return positive, negative, math.nan
    return positive, negative, float(binomtest(positive, positive + negative, 0.5).pvalue)


def matched_pairs(sweep: Sweep, matched: dict[str, float]) -> pd.DataFrame:
    """One row per (β, seed) with both runs: each quantity of the fixed run and of the constrained run at
    the β's matched ε, as ``fixed.NAME`` and ``constrained.NAME``, the constrained run's name, and
    ``left_out``: why the pair is left out of the comparison (its constrained run missed its budget, or
    its budget was inactive, so the KLs are not matched), empty for a pair compared."""
    names = quantities(sweep.runs)
    fixed = sweep.fixed.set_index(["beta", "seed"])
    missed = set(sweep.constrained.loc[missed_constraint(sweep.constrained), "name"])
    inactive = set(sweep.constrained.loc[inactive_constraint(sweep.constrained), "name"])
    constrained = sweep.constrained.set_index(["epsilon", "seed"])
    bound = 1 + CONSTRAINT_TOLERANCE
    rows = []
    for beta_text, eps in matched.items():
        beta = float(beta_text)
        for seed in sorted(sweep.runs["seed"].unique()):
            if (beta, seed) not in fixed.index or (eps, seed) not in constrained.index:
                continue
            run_name, kl = constrained.loc[(eps, seed), "name"], float(constrained.loc[(eps, seed), "kl"])
            fixed_kl = float(fixed.loc[(beta, seed), "kl"])
            left_out = ""
            if run_name in missed:
                left_out = (
                    f"its constrained run {run_name} missed its budget: KL {kl:.3g} > {bound:g} ε = {bound * eps:.3g} "
                    f"against the fixed run's {fixed_kl:.3g}, so the KLs are not matched"
                )
            elif run_name in inactive:
                left_out = (
                    f"its constrained run {run_name} had its budget inactive: KL {kl:.3g} ≪ ε = {eps:g} "
                    f"(λ at its floor) against the fixed run's {fixed_kl:.3g}, so the KLs are not matched"
                )
            row = {"beta": beta, "epsilon": eps, "seed": int(seed), "constrained.name": run_name, "left_out": left_out}
            for name in names:
                row[f"fixed.{name}"] = float(fixed.loc[(beta, seed), name])
                row[f"constrained.{name}"] = float(constrained.loc[(eps, seed), name])
            rows.append(row)
    return pd.DataFrame(rows)


def paired_comparison(pairs: pd.DataFrame, names: Sequence[str], *, seed: int = 0) -> pd.DataFrame:
    """Constrained minus fixed for each quantity, per β and pooled (``beta`` NaN): the mean difference (in the
    quantity's units), its bootstrap interval and a sign test; pairs with a ``left_out`` reason are not compared."""
    rows = []
    if "left_out" in pairs:  # pairs whose KLs are not matched are not compared
        pairs = pairs[pairs["left_out"].fillna("") == ""]
    groups = [*pairs.groupby("beta"), (math.nan, pairs)] if len(pairs) else []
    for beta, group in groups:
        for name in names:
            differences = (group[f"constrained.{name}"] - group[f"fixed.{name}"]).dropna().to_numpy(float)
            if not differences.size:
                continue
            low, high = bootstrap_interval(differences, seed=seed)
            positive, negative, p_value = sign_test(differences)
            rows.append(
                {
                    "beta": float(beta),
                    "epsilon": float(group["epsilon"].iloc[0]) if beta == beta else math.nan,
                    "quantity": name,
                    "n_pairs": differences.size,
                    "mean_difference": float(differences.mean()),
                    "ci_low": low,
                    "ci_high": high,
                    "n_positive": positive,
                    "n_negative": negative,
                    "sign_test_p": p_value,
                }
            )
    return pd.DataFrame(rows)


def epsilon_beta_map(sweep: Sweep, reference: Sweep | None) -> pd.DataFrame:
    """The effective-β estimates of each ε of the study, and of ``reference`` (``ref_`` columns), side by side."""
    table = tradeoff_table(sweep)[list(MAP_COLUMNS)]
    if reference is None:
        return table
    ref = tradeoff_table(reference)[list(MAP_COLUMNS)].add_prefix("ref_").rename(columns={"ref_epsilon": "epsilon"})
    return table.merge(ref, on="epsilon", how="outer").sort_values("epsilon").reset_index(drop=True)


def best_runs(sweep: Sweep, select_by: str) -> dict[str, str]:
    """Family → the name of its run with the highest ``select_by`` score (families without one left out)."""
    best = {}
    for mode, _, _ in FAMILIES:
        family = sweep.runs[sweep.runs["mode"] == mode]
        if select_by in family.columns and family[select_by].notna().any():
            best[mode] = str(family.loc[family[select_by].idxmax(), "name"])
    return best


def check_select_by(sweep: Sweep, select_by: str | None) -> str | None:
    """The score that picks each family's best run: ``select_by`` when the runs hold it (SweepError naming the
    scores they hold when they do not); for None, :data:`DEFAULT_SELECT_BY` when they hold it, else None
    (no traversals)."""
    scores = score_columns(sweep.runs)
    if select_by is None:
        return DEFAULT_SELECT_BY if DEFAULT_SELECT_BY in scores else None
    if select_by not in scores:
        held = (
            f"one of {', '.join(scores)}" if scores else "none: its runs hold no scores (see experiments/evaluate.py)"
        )
        raise SweepError(f"--select-by {select_by!r} is no score of the study's runs; choose {held}")
    return select_by


def load_study(study_dir: str | Path) -> tuple[dict, Sweep]:
    """The study record and its sweep; SweepError when the folder holds no study with matched ε."""
    study_dir = Path(study_dir)
    record = read_study(study_dir)
    if record is None or not record.get("matched_epsilon"):
        raise SweepError(f"{study_dir} holds no study whose fixed-β runs have finished (see experiments/study.py)")
    return record, load_sweep(study_dir / SWEEP_DIR)


def schedule_note(record: dict, sweep: Sweep) -> str:
    """The steps trained, against the preset's published schedule when the study used a preset."""
    steps = sorted(int(s) for s in sweep.runs["steps"].unique())
    preset = sweep.settings.get("preset")
    trained = f"{', '.join(f'{s:,}' for s in steps)} steps per run"
    if preset is None:
        return f"{trained} (no published preset)"
    published = PRESETS[preset]["steps"]
    if steps == [published]:
        return f"{trained}: the published schedule of {preset}"
    return f"{trained}: SHORTENED from {preset}'s published {published:,}"


def study_warnings(sweep: Sweep, reference: Sweep | None = None) -> list[str]:
    """The warnings of the study's sweep (:func:`~constrained_vae.analysis.epsilon_beta.sweep_warnings`,
    as ``tradeoff_curves.py`` gives them), then the reference sweep's, each of those prefixed."""
    lines = sweep_warnings(sweep)
    if reference is not None:
        lines += [f"reference sweep {reference.path}: {line}" for line in sweep_warnings(reference)]
    return lines


def _map_cells(maps: pd.DataFrame, columns: Sequence[str]) -> list[list[str]]:
    """The map's rows as cells: ``≥`` before a dual λ whose constraint was not met, and a last cell naming
    every dual estimate that is no settled effective β (:func:`~constrained_vae.analysis.epsilon_beta.dual_flags`)."""
    said = {
        "unmet": "constraint not met: λ a lower bound",
        "moving": "λ still moving",
        "inactive": "constraint inactive",
    }
    flags = {prefix: dual_flags(maps, prefix) for prefix in ("", "ref_") if f"{prefix}beta_dual" in maps}
    rows = []
    for i, row in enumerate(maps[list(columns)].itertuples(index=False)):
        cells = []
        for column, value in zip(columns, row, strict=True):
            text = f"{value:.4g}" if math.isfinite(value) else "—"
            prefix = column.removesuffix("beta_dual")
            if column.endswith("beta_dual") and prefix in flags and flags[prefix]["unmet"][i]:
                text = f"≥ {text}"
            cells.append(text)
        notes = [
            f"{said[reason]}{' (reference)' if prefix else ''}"
            for prefix, by_reason in flags.items()
            for reason, rows_flagged in by_reason.items()
            if rows_flagged[i]
        ]
        rows.append([*cells, "; ".join(notes)])
    return rows


def format_report(
    record: dict,
    sweep: Sweep,
    table: pd.DataFrame,
    comparison: pd.DataFrame,
    maps: pd.DataFrame,
    best: dict[str, str],
    select_by: str,
    *,
    pairs: pd.DataFrame | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """The study as Markdown: the schedule, the table (``≥`` before a λ whose constraint was not met, a note
    per point), the warnings, the pooled paired comparison and the pairs it left out, the map, the best runs."""
    names = quantities(sweep.runs)
    lines = [f"# Study {Path(sweep.path).parent}", "", f"Schedule: {schedule_note(record, sweep)}.", ""]
    lines += ["| point | seeds | " + " | ".join(names) + " | note |", "|---" * (len(names) + 3) + "|"]
    for row in table.to_dict("records"):
        symbol = "β" if row["mode"] == "fixed-beta" else "ε"
        matched = f" (KL of β={row['matched_to_beta']:g})" if math.isfinite(row["matched_to_beta"]) else ""
        cells = [format_estimate(row[f"{n}_mean"], row[f"{n}_std"]) for n in names]
        if row.get("n_unmet"):  # λ was still rising when the runs ended: a lower bound on the effective β
            cells[names.index("multiplier")] = "≥ " + cells[names.index("multiplier")]
        note = row.get("note") if isinstance(row.get("note"), str) else ""
        lines.append(
            f"| {symbol} = {row['value']:g}{matched} | {row['n_seeds']} | " + " | ".join(cells) + f" | {note} |"
        )
    if warnings:
        lines += ["", *(f"- warning: {line}" for line in warnings)]
    pooled = comparison[comparison["beta"].isna()] if len(comparison) else comparison
    lines += ["", f"Constrained − fixed at matched KL, same seeds, pooled over β ({CONFIDENCE:.0%} bootstrap):", ""]
    if len(pooled):
        lines += [
            "| quantity | pairs | mean difference | interval | + / − | sign test p |",
            "|---|---|---|---|---|---|",
        ]
    else:
        lines.append("No pair left to compare.")
    for row in pooled.itertuples(index=False):
        lines.append(
            f"| {row.quantity} | {row.n_pairs} | {row.mean_difference:.4g} | [{row.ci_low:.4g}, {row.ci_high:.4g}] "
            f"| {row.n_positive} / {row.n_negative} | {row.sign_test_p:.3g} |"
        )
    left_out = pairs[pairs["left_out"].fillna("") != ""] if pairs is not None and "left_out" in pairs else []
    if len(left_out):
        lines += ["", f"Left out of the paired comparison ({len(left_out)} of {len(pairs)} pairs):"]
        lines += [
            f"- β = {row.beta:g} ↔ ε = {row.epsilon:g}, seed {row.seed}: {row.left_out}"
            for row in left_out.itertuples(index=False)
        ]
    lines += ["", "Effective β of each ε (dual; inverse fixed-β; `ref_`: the reference sweep):", ""]
    columns = ("epsilon", "beta_dual", "beta_inverse_fixed", "ref_beta_dual", "ref_beta_inverse_fixed")
    shown = [c for c in columns if c in maps]
    lines += ["| " + " | ".join(shown) + " | note |", "|---" * (len(shown) + 1) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in _map_cells(maps, shown)]
    if best:
        lines += ["", f"Best run of each family by {select_by}: " + ", ".join(f"{m} {n}" for m, n in best.items())]
    return "\n".join(lines)

"""The analysis of a study (:mod:`constrained_vae.study`): tables, the paired comparison, figures.

Writes into ``STUDY/analysis/``:

- ``study_table.csv``: one row per point (fixed β or constrained ε): mean and std over
  seeds of KL, NLL (nats per sample), λ (β for fixed runs) and every disentanglement score;
- ``paired.csv``: constrained minus fixed at matched KL, the same seed on both sides: for
  each β (its runs against the runs at its matched ε) and pooled over every β, the mean
  difference, a percentile bootstrap interval (:data:`CONFIDENCE`, resampling pairs) and a
  two-sided sign test (ties dropped);
- ``epsilon_beta_map.csv``: the three effective-β estimates of each ε
  (:func:`~constrained_vae.tradeoff.tradeoff_table`), next to those of a reference sweep
  (the 3,000-step map) when one is given;
- figures: every score against KL for both families; KL/ε and λ against step
  (:func:`~constrained_vae.tradeoff_figures.plot_training_curves`); the effective β of both
  maps; the latent traversals of the best run of each family (:func:`~constrained_vae.figures.write_figures`).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
from scipy.stats import binomtest

from constrained_vae import runs
from constrained_vae.cli import EXIT_USER_ERROR, ArgumentParser
from constrained_vae.errors import SweepError, UserInputError
from constrained_vae.figures import FIGURES_DIR, write_figures
from constrained_vae.presets import PRESETS
from constrained_vae.study import SWEEP_DIR, read_study
from constrained_vae.tradeoff import Sweep, _run_row, tradeoff_table
from constrained_vae.tradeoff_figures import DISENTANGLEMENT_SCORES, plot_training_curves

ANALYSIS_DIR = "analysis"
CONFIDENCE = 0.95
NUM_BOOTSTRAP = 10_000
DEFAULT_SELECT_BY = "betavae_score.eval_accuracy"  # the β-VAE paper's metric picks the best run of each family
BASE_QUANTITIES = ("kl", "nll", "multiplier")
FAMILIES = (("fixed-beta", "beta", "β"), ("constrained", "epsilon", "ε"))
MAP_COLUMNS = ("epsilon", "beta_dual", "beta_dual_std", "beta_inverse_fixed", "beta_inverse_fixed_std",
               "beta_slope", "beta_slope_std", "kl", "constraint_met")  # fmt: skip


def score_columns(frame: pd.DataFrame) -> list[str]:
    """The disentanglement scores in a runs table (``metric.key`` columns with a value)."""
    return [c for c in frame.columns if "." in c and frame[c].notna().any()]


def quantities(frame: pd.DataFrame) -> list[str]:
    """KL, NLL, λ and every score: what the study table and the paired comparison report."""
    return [*BASE_QUANTITIES, *score_columns(frame)]


def study_table(sweep: Sweep, matched: dict[str, float]) -> pd.DataFrame:
    """One row per point: family, β or ε, the β an ε was matched to, seeds, mean and std of each quantity."""
    rows = []
    matched_to = {eps: float(beta) for beta, eps in matched.items()}
    for mode, key, _ in FAMILIES:
        family = sweep.runs[sweep.runs["mode"] == mode]
        for value, group in family.groupby(key):
            row = {"mode": mode, "value": float(value), "matched_to_beta": math.nan, "n_seeds": len(group)}
            if mode == "constrained":
                row["matched_to_beta"] = matched_to.get(float(value), math.nan)
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
    the β's matched ε, as ``fixed.NAME`` and ``constrained.NAME``."""
    names = quantities(sweep.runs)
    fixed = sweep.fixed.set_index(["beta", "seed"])
    constrained = sweep.constrained.set_index(["epsilon", "seed"])
    rows = []
    for beta_text, eps in matched.items():
        beta = float(beta_text)
        for seed in sorted(sweep.runs["seed"].unique()):
            if (beta, seed) not in fixed.index or (eps, seed) not in constrained.index:
                continue
            row = {"beta": beta, "epsilon": eps, "seed": int(seed)}
            for name in names:
                row[f"fixed.{name}"] = float(fixed.loc[(beta, seed), name])
                row[f"constrained.{name}"] = float(constrained.loc[(eps, seed), name])
            rows.append(row)
    return pd.DataFrame(rows)


def paired_comparison(pairs: pd.DataFrame, names: Sequence[str], *, seed: int = 0) -> pd.DataFrame:
    """Constrained minus fixed for each quantity, per β and pooled (``beta`` NaN): the mean difference (in the
    quantity's units), its bootstrap interval and a sign test."""
    rows = []
    groups = [*pairs.groupby("beta"), (math.nan, pairs)] if len(pairs) else []
    for beta, group in groups:
        for name in names:
            differences = (group[f"constrained.{name}"] - group[f"fixed.{name}"]).dropna().to_numpy(float)
            if not differences.size:
                continue
            low, high = bootstrap_interval(differences, seed=seed)
            positive, negative, p_value = sign_test(differences)
            rows.append({
                "beta": float(beta), "epsilon": float(group["epsilon"].iloc[0]) if beta == beta else math.nan,
                "quantity": name, "n_pairs": differences.size, "mean_difference": float(differences.mean()),
                "ci_low": low, "ci_high": high, "n_positive": positive, "n_negative": negative,
                "sign_test_p": p_value,
            })  # fmt: skip
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


# --- figures ---------------------------------------------------------------------------------


def plot_scores_against_kl(sweep: Sweep) -> plt.Figure | None:
    """Each score against the tail KL (nats per sample): every run, and the seed mean ± std of each point."""
    columns = score_columns(sweep.runs)
    if not columns:
        return None
    cols = min(3, len(columns))
    rows = math.ceil(len(columns) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, column in zip(axes.flat, columns, strict=False):
        for (mode, key, symbol), (color, marker) in zip(FAMILIES, (("C0", "s"), ("C1", "o")), strict=True):
            family = sweep.runs[sweep.runs["mode"] == mode]
            if not len(family):
                continue
            ax.scatter(family["kl"], family[column], color=color, marker=marker, s=12, alpha=0.35)
            means = family.groupby(key)[["kl", column]].agg(["mean", "std"]).sort_values(("kl", "mean"))
            ax.errorbar(
                means[("kl", "mean")], means[(column, "mean")], xerr=means[("kl", "std")].fillna(0),
                yerr=means[(column, "std")].fillna(0), color=color, marker=marker, capsize=2,
                label=f"{mode} (one point per {symbol}, seed mean ± std)",
            )  # fmt: skip
        ax.set_xlabel("KL (nats per sample)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        ax.set_title(DISENTANGLEMENT_SCORES.get(column, column), fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(columns) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_maps(table: pd.DataFrame) -> plt.Figure:
    """Effective β against ε (log–log): the study's dual and inverse-fixed estimates, and the reference's."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for prefix, style, what in (("", "-", "this study"), ("ref_", "--", "reference sweep")):
        for estimate, marker in (("beta_dual", "o"), ("beta_inverse_fixed", "s")):
            column = prefix + estimate
            if column not in table or not table[column].notna().any():
                continue
            shown = table[table[column].notna()]
            ax.errorbar(
                shown["epsilon"], shown[column], yerr=shown[column + "_std"].fillna(0), linestyle=style,
                marker=marker, capsize=2, label=f"{estimate.removeprefix('beta_')} ({what})",
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("KL budget ε (nats per sample)")
    ax.set_ylabel("effective β")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def _save(fig: plt.Figure, out_dir: Path, name: str) -> Path:
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


# --- the whole analysis ------------------------------------------------------------------------


# Settings that only the constrained objective uses: config.resolved() fills them for fixed-β runs too, with
# other defaults (dual_lr) or none (dual_update), so the two families of one sweep differ in them.
OBJECTIVE_ONLY = ("dual_lr", "dual_update", "dual_kp", "dual_ema", "multiplier_init")


def load_study_sweep(sweep_dir: Path) -> Sweep:
    """The study's sweep as :func:`~constrained_vae.tradeoff.load_sweep` reads it, except that the fixed-β and
    constrained runs may differ in :data:`OBJECTIVE_ONLY` (load_sweep refuses them as a mixed-up sweep today);
    within a family, and across families in every other setting, the runs must agree. The shared settings
    are the constrained runs'."""
    rows, settings, unfinished = [], {}, []
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / runs.CONFIG).exists()):
        if not (run_dir / runs.SUMMARY).exists():
            unfinished.append(run_dir.name)
            continue
        row, run_settings = _run_row(run_dir)
        for key, value in run_settings.items():
            where = (row["mode"], key) if key in OBJECTIVE_ONLY else key
            if where in settings and settings[where] != value:
                raise SweepError(f"mixed-up sweep {sweep_dir}: runs differ in {key} ({settings[where]!r} vs "
                                 f"{value!r} in {run_dir.name})")  # fmt: skip
            settings[where] = value
        rows.append(row)
    if not rows:
        raise SweepError(f"no finished runs in {sweep_dir} (expected run folders with summary.json)")
    shared = {key: value for key, value in settings.items() if isinstance(key, str)}
    shared |= {key[1]: value for key, value in settings.items() if isinstance(key, tuple) and key[0] == "constrained"}
    return Sweep(sweep_dir, pd.DataFrame(rows), shared, unfinished)


def load_study(study_dir: str | Path) -> tuple[dict, Sweep]:
    """The study record and its sweep; SweepError when the folder holds no study with matched ε."""
    study_dir = Path(study_dir)
    record = read_study(study_dir)
    if record is None or not record.get("matched_epsilon"):
        raise SweepError(f"{study_dir} holds no study whose fixed-β runs have finished (see experiments/study.py)")
    return record, load_study_sweep(study_dir / SWEEP_DIR)


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


def write_study_analysis(
    study_dir: str | Path,
    *,
    reference: str | Path | None = None,
    select_by: str = DEFAULT_SELECT_BY,
    traversals: bool = True,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[str, list[Path]]:
    """Write ``STUDY/analysis/`` (see the module docstring); return a Markdown report and the paths written."""
    record, sweep = load_study(study_dir)
    matched = {beta: float(eps) for beta, eps in record["matched_epsilon"].items()}
    out_dir = Path(study_dir) / ANALYSIS_DIR
    out_dir.mkdir(exist_ok=True)
    table = study_table(sweep, matched)
    pairs = matched_pairs(sweep, matched)
    comparison = paired_comparison(pairs, quantities(sweep.runs), seed=seed)
    reference_sweep = load_study_sweep(Path(reference)) if reference is not None else None
    maps = epsilon_beta_map(sweep, reference_sweep)
    paths = []
    for frame, name in ((table, "study_table"), (pairs, "pairs"), (comparison, "paired"), (maps, "epsilon_beta_map")):
        paths.append(out_dir / f"{name}.csv")
        frame.to_csv(paths[-1], index=False, float_format="%.6g")
    figure = plot_scores_against_kl(sweep)
    if figure is not None:
        paths.append(_save(figure, out_dir, "scores_against_kl"))
    if len(sweep.constrained):
        paths.append(_save(plot_training_curves(sweep), out_dir, "training_curves"))
    paths.append(_save(plot_maps(maps), out_dir, "effective_beta"))
    best = best_runs(sweep, select_by) if traversals else {}
    for mode, name in best.items():
        run_dir = sweep.path / name
        write_figures(run_dir, device=device)
        paths.append(out_dir / f"traversals-{mode}.png")
        shutil.copyfile(run_dir / FIGURES_DIR / "latent_traversals.png", paths[-1])
    report = format_report(record, sweep, table, comparison, maps, best, select_by)
    paths.append(out_dir / "report.md")
    paths[-1].write_text(report + "\n")
    return report, paths


def _cell(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.4g} ± {std:.2g}" if math.isfinite(std) else f"{mean:.4g}"


def format_report(
    record: dict, sweep: Sweep, table: pd.DataFrame, comparison: pd.DataFrame, maps: pd.DataFrame,
    best: dict[str, str], select_by: str,
) -> str:  # fmt: skip
    """The study as Markdown: the schedule, the table, the pooled paired comparison, the map, the best runs."""
    names = quantities(sweep.runs)
    lines = [f"# Study {Path(sweep.path).parent}", "", f"Schedule: {schedule_note(record, sweep)}.", ""]
    lines += ["| point | seeds | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for row in table.to_dict("records"):
        symbol = "β" if row["mode"] == "fixed-beta" else "ε"
        matched = f" (KL of β={row['matched_to_beta']:g})" if math.isfinite(row["matched_to_beta"]) else ""
        cells = [_cell(row[f"{n}_mean"], row[f"{n}_std"]) for n in names]
        lines.append(f"| {symbol} = {row['value']:g}{matched} | {row['n_seeds']} | " + " | ".join(cells) + " |")
    pooled = comparison[comparison["beta"].isna()] if len(comparison) else comparison
    lines += ["", f"Constrained − fixed at matched KL, same seeds, pooled over β ({CONFIDENCE:.0%} bootstrap):", ""]
    lines += ["| quantity | pairs | mean difference | interval | + / − | sign test p |", "|---|---|---|---|---|---|"]
    for row in pooled.itertuples(index=False):
        lines.append(
            f"| {row.quantity} | {row.n_pairs} | {row.mean_difference:.4g} | [{row.ci_low:.4g}, {row.ci_high:.4g}] "
            f"| {row.n_positive} / {row.n_negative} | {row.sign_test_p:.3g} |"
        )
    lines += ["", "Effective β of each ε (dual; inverse fixed-β; `ref_`: the reference sweep):", ""]
    shown = [c for c in ("epsilon", "beta_dual", "beta_inverse_fixed", "ref_beta_dual", "ref_beta_inverse_fixed")
             if c in maps]  # fmt: skip
    lines += ["| " + " | ".join(shown) + " |", "|---" * len(shown) + "|"]
    for row in maps[shown].itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4g}" if math.isfinite(v) else "—" for v in row) + " |")
    if best:
        lines += ["", f"Best run of each family by {select_by}: " + ", ".join(f"{m} {n}" for m, n in best.items())]
    return "\n".join(lines)


# --- the command line --------------------------------------------------------------------------


def analysis_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="analysis/study.py", description="The study's table, paired comparison, ε ↔ β map and figures."
    )
    parser.add_argument("study", metavar="STUDY", help="the folder of experiments/study.py --out")
    parser.add_argument("--reference", metavar="SWEEP", help="a sweep whose ε ↔ β map to compare (the 3,000-step one)")
    parser.add_argument(
        "--select-by", default=DEFAULT_SELECT_BY, help=f"the score that picks each family's best run for its "
        f"traversals (default: {DEFAULT_SELECT_BY})",
    )  # fmt: skip
    parser.add_argument("--no-traversals", action="store_true", help="skip the traversal figures")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device of the traversals' decoder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    return parser


def analysis_main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, write the analysis, print the report; 2 for bad input."""
    args = analysis_parser().parse_args(argv)
    try:
        report, paths = write_study_analysis(
            args.study, reference=args.reference, select_by=args.select_by, traversals=not args.no_traversals,
            device=args.device, seed=args.seed,
        )  # fmt: skip
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(report)
    print(f"\nwrote {len(paths)} files into {Path(args.study) / ANALYSIS_DIR}")
    return 0


__all__ = ["analysis_main", "paired_comparison", "study_table", "write_study_analysis"]

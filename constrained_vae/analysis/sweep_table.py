"""A sweep folder as a table: one row per finished run (its settings, tail figures and scores), and the
settings its runs share."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from constrained_vae.core import linear_gaussian
from constrained_vae.errors import SweepError, UserInputError
from constrained_vae.run import folder
from constrained_vae.run.settings import RESUMABLE_OVERRIDES
from constrained_vae.run.summary import constraint_status

# Settings that may differ between the runs of one sweep; all others must agree.
GRID_SETTINGS = ("epsilon", "beta", "seed", "mode")
HOW_COMPUTED = tuple(key for key in RESUMABLE_OVERRIDES if key != "steps")


@dataclass
class Sweep:
    """The finished runs of a sweep folder, one row each, and their shared settings."""

    path: Path
    runs: pd.DataFrame
    settings: dict
    unfinished: list[str] = field(default_factory=list)  # run folders without summary.json, left out
    unfinished_epsilons: list[float] = field(default_factory=list)  # the budgets of the unfinished constrained runs
    degenerate: list[str] = field(default_factory=list)  # runs left out for a budget ≤ 0, each with its budget

    def unfinished_warning(self) -> str | None:
        """A line naming the runs the analysis leaves out (unfinished, or with a budget ≤ 0), or None."""
        parts = []
        if self.unfinished:
            parts.append(
                f"{len(self.unfinished)} unfinished run(s) of {self.path} left out (no {folder.SUMMARY_FILE}): "
                + ", ".join(self.unfinished)
            )
        if self.degenerate:
            parts.append(
                f"{len(self.degenerate)} run(s) of {self.path} left out for a budget of 0 or less, where "
                "λ → ∞ and KL/ε or 1/β is undefined: " + ", ".join(self.degenerate)
            )
        return "; ".join(parts) or None

    @property
    def constrained(self) -> pd.DataFrame:
        return self.runs[self.runs["mode"] == "constrained"]

    @property
    def fixed(self) -> pd.DataFrame:
        return self.runs[self.runs["mode"] == "fixed-beta"]

    def closed_form(self) -> Callable[[float], float] | None:
        """β*(ε) for a linear-Gaussian sweep with fixed σ, else None."""
        if self.settings.get("dataset") != "linear-gaussian" or self.settings.get("learn_sigma"):
            return None
        spectrum, sigma = self.settings["spectrum"], self.settings["sigma"]
        return lambda eps: linear_gaussian.beta_for_rate(eps, spectrum, sigma)

    def closed_form_distortion(self) -> Callable[[float], float] | None:
        """D(R) of the closed form (the optimal NLL at rate R), else None."""
        beta_star = self.closed_form()
        if beta_star is None:
            return None
        spectrum, sigma = self.settings["spectrum"], self.settings["sigma"]
        return lambda kl: linear_gaussian.distortion(beta_star(kl), spectrum, sigma)


def degenerate_budget(run_dir: Path) -> str | None:
    """``ε = 0`` or ``β = -1`` where the run's config or summary records a budget ≤ 0 (a record older than
    its refusal), else None."""
    for name in (folder.CONFIG_FILE, folder.SUMMARY_FILE):
        try:
            values = json.loads((run_dir / name).read_text())
        except (OSError, ValueError):
            continue
        for key, symbol in (("epsilon", "ε"), ("beta", "β")):
            value = values.get(key) if isinstance(values, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
                return f"{symbol} = {value:g}"
    return None


def run_row(run_dir: Path) -> tuple[dict, dict]:
    config = folder.read_config(run_dir)
    summary = folder.read_summary(run_dir)
    row = {
        "name": run_dir.name,
        "mode": config.objective_name,
        "epsilon": config.epsilon,
        "beta": config.beta,
        "seed": config.seed,
        "kl": summary["kl"],
        "nll": summary["nll"],
        "elbo": summary["elbo"],
        "multiplier": summary["multiplier"],
        "multiplier_std": summary["multiplier_std"],
        "constraint_satisfied": summary["constraint_satisfied"],
        # None where the summary predates these keys (unknown, not unsettled) or the objective learns no λ
        "constraint_status": constraint_status(summary),
        "multiplier_settled": summary.get("multiplier_settled"),
        "multiplier_drift": summary.get("multiplier_drift"),
        "steps": summary["steps"],
    }
    evaluated = folder.read_scores(run_dir) or {}  # disentanglement scores, when evaluated
    protocols = evaluated.get("protocols", {})
    for metric, values in evaluated.get("scores", {}).items():
        if isinstance(values, dict):
            settings = protocols.get(metric, {})
            for key, value in values.items():
                # numbers only: a flag, or a protocol setting echoed in the scores (e.g. num_bins), is no score
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in settings:
                    row[f"{metric}.{key}"] = float(value)
    return row, {k: v for k, v in config.to_dict().items() if k not in GRID_SETTINGS}


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Read every run folder under ``sweep_dir`` into one table.

    Raises :class:`SweepError` for a missing or empty folder, or runs that differ
    in anything but ε, β and seed (a mixed-up sweep).
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise SweepError(f"{sweep_dir} is not a folder")
    rows, settings, unfinished, unfinished_epsilons, degenerate = [], {}, [], [], []
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / folder.CONFIG_FILE).exists()):
        budget = degenerate_budget(run_dir)
        if budget is not None:
            degenerate.append(f"{run_dir.name} ({budget})")
            continue
        if not (run_dir / folder.SUMMARY_FILE).exists():
            unfinished.append(run_dir.name)
            try:
                config = folder.read_config(run_dir)
            except UserInputError:
                continue
            if config.objective_name == "constrained":
                unfinished_epsilons.append(config.epsilon)
            continue
        try:
            row, run_settings = run_row(run_dir)
        except (UserInputError, KeyError, json.JSONDecodeError) as error:
            raise SweepError(f"{run_dir}: unreadable run ({error})") from None
        for key, value in run_settings.items():
            if value is None:  # a setting this run's objective does not use (a fixed-β run's dual rule)
                continue
            if key in HOW_COMPUTED:  # a re-run of the sweep may change these: they are not what a run computes
                continue
            if key in settings and settings[key] != value:
                differ = f"{settings[key]!r} vs {value!r} in {run_dir.name}"
                raise SweepError(f"mixed-up sweep {sweep_dir}: runs differ in {key} ({differ})")
            settings[key] = value
        rows.append(row)
    if not rows:
        raise SweepError(f"no finished runs in {sweep_dir} (expected run folders with summary.json)")
    return Sweep(sweep_dir, pd.DataFrame(rows), settings, unfinished, unfinished_epsilons, degenerate)

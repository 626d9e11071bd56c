"""The ε ↔ β map: three estimates of the effective β of a KL budget ε.

Given a sweep (run folders of constrained runs at several ε and fixed-β runs at
several β, over seeds), for each ε:

1. **dual** — the converged multiplier λ of the constrained runs at that ε (the
   tail mean of each run; mean and std over seeds).
2. **inverse fixed-β** — the β at which fixed-β runs reach KL = ε: the seed-mean
   KL(β) is made monotone (isotonic regression, decreasing) and interpolated in
   log–log space with a PCHIP (shape-preserving cubic); the spread is the std of
   the same estimate made from each seed's runs alone.
3. **slope** — −dNLL/dKL of the rate–distortion curve traced by the constrained
   runs, at KL = ε. The fit is a non-negative combination of decaying exponentials
   plus a constant, ``NLL(R) ≈ a + Σ_j b_j·exp(−c_j·R)`` with ``b_j ≥ 0`` on a fixed
   log-spaced grid of rates ``c_j`` (non-negative least squares): a completely
   monotone function, hence decreasing and convex by construction, and exact in
   form for the linear-Gaussian curve within one water-filling segment. The
   estimate uses all seeds' points; the spread is the std of per-seed fits.

At a KKT point the three agree (λ* = −dNLL/dKL = the β whose optimum has KL = ε).
Where they do not — non-convexity, an amortisation gap, unconverged runs — the
table shows it. An estimate that would need extrapolation is left empty (NaN): the
inverse estimate outside the range of KLs the fixed-β runs reached, and the slope
at the smallest and largest constrained KL (a one-sided derivative is not
identified by a shape-constrained fit).

For ``linear-gaussian`` sweeps the closed form β*(ε) of
:mod:`constrained_vae.linear_gaussian` is a fourth column, with relative errors.

A constrained run whose tail KL ended above ε·(1 + ``runs.CONSTRAINT_TOLERANCE``)
did not meet its constraint: λ was still rising (dual ascent raises λ while KL > ε,
and KL(β) decreases in β), so its λ is a lower bound on the effective β, not an
estimate. ``constraint_met`` is False for an ε whose dual estimate rests on such a
run, at that ε or, between swept budgets, at either neighbour; :func:`unmet_warning`
says so in words. All KL, NLL, ε, β in nats per sample.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator
from scipy.optimize import nnls
from sklearn.isotonic import IsotonicRegression

from constrained_vae import linear_gaussian, runs
from constrained_vae.errors import SweepError, UserInputError

# Settings that may differ between the runs of one sweep; all others must agree.
GRID_SETTINGS = ("epsilon", "beta", "seed", "mode")
ESTIMATES = ("dual", "inverse_fixed", "slope")


@dataclass
class Sweep:
    """The finished runs of a sweep folder, one row each, and their shared settings."""

    path: Path
    runs: pd.DataFrame
    settings: dict
    unfinished: list[str] = field(default_factory=list)

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


def _run_row(run_dir: Path) -> tuple[dict, dict]:
    config = runs.read_config(run_dir)
    summary = runs.read_summary(run_dir)
    row = {
        "name": run_dir.name,
        "mode": config.mode,
        "epsilon": config.epsilon,
        "beta": config.beta,
        "seed": config.seed,
        "kl": summary["kl"],
        "nll": summary["nll"],
        "elbo": summary["elbo"],
        "multiplier": summary["multiplier"],
        "multiplier_std": summary["multiplier_std"],
        "constraint_satisfied": summary["constraint_satisfied"],
        "steps": summary["steps"],
    }
    evaluated = runs.read_scores(run_dir) or {}  # disentanglement scores, when evaluated
    for metric, values in evaluated.get("scores", {}).items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, (int, float)):
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
    rows, settings, unfinished = [], {}, []
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / runs.CONFIG).exists()):
        if not (run_dir / runs.SUMMARY).exists():
            unfinished.append(run_dir.name)
            continue
        try:
            row, run_settings = _run_row(run_dir)
        except (UserInputError, KeyError, json.JSONDecodeError) as error:
            raise SweepError(f"{run_dir}: unreadable run ({error})") from None
        for key, value in run_settings.items():
            if value is None:  # a setting this run's objective does not use (a fixed-β run's dual rule)
                continue
            if key in settings and settings[key] != value:
                differ = f"{settings[key]!r} vs {value!r} in {run_dir.name}"
                raise SweepError(f"mixed-up sweep {sweep_dir}: runs differ in {key} ({differ})")
            settings[key] = value
        rows.append(row)
    if not rows:
        raise SweepError(f"no finished runs in {sweep_dir} (expected run folders with summary.json)")
    return Sweep(sweep_dir, pd.DataFrame(rows), settings, unfinished)


# --- the three estimators, on plain arrays ----------------------------------------


def inverse_fixed_beta(betas: np.ndarray, kls: np.ndarray, epsilon: float) -> float:
    """The β at which KL(β) = ε, from fixed-β runs; NaN outside the KLs reached.

    KL(β) is fitted as a decreasing function of β (isotonic regression on log KL
    against log β), then log β is interpolated against log KL with a PCHIP.
    """
    betas, kls = np.asarray(betas, float), np.asarray(kls, float)
    keep = (betas > 0) & (kls > 0) & np.isfinite(kls)
    if keep.sum() < 2 or not epsilon > 0:
        return math.nan
    log_beta, log_kl = np.log(betas[keep]), np.log(kls[keep])
    order = np.argsort(log_beta)
    monotone = IsotonicRegression(increasing=False).fit_transform(log_beta[order], log_kl[order])
    # Interpolate log β as a function of log KL over the strictly decreasing knots.
    x, y = monotone[::-1], log_beta[order][::-1]
    x, first = np.unique(x, return_index=True)
    y = y[first]
    target = math.log(epsilon)
    if x.size < 2 or not (x[0] <= target <= x[-1]):
        return math.nan
    return float(math.exp(PchipInterpolator(x, y)(target)))


@dataclass
class RateDistortionFit:
    """NLL(R) ≈ a + Σ_j b_j·exp(−c_j·(R − R₀)), b_j ≥ 0: decreasing and convex in R.

    R₀ (``shift``) is the smallest fitted KL; keeping it avoids overflowing exp(c·R₀).
    """

    offset: float
    weights: np.ndarray
    rates: np.ndarray
    shift: float
    kl_range: tuple[float, float]

    def nll(self, kl: np.ndarray | float) -> np.ndarray:
        kl = np.atleast_1d(np.asarray(kl, float))
        return self.offset + np.exp(-np.outer(kl - self.shift, self.rates)) @ self.weights

    def slope(self, kl: float) -> float:
        """−dNLL/dKL at ``kl`` (the effective β); NaN at or outside the fitted range's ends."""
        lo, hi = self.kl_range
        if not (lo < kl < hi):
            return math.nan
        return float((self.weights * self.rates * np.exp(-self.rates * (kl - self.shift))).sum())


def fit_rate_distortion(kls: np.ndarray, nlls: np.ndarray, num_rates: int = 80) -> RateDistortionFit:
    """Fit the rate–distortion curve through (KL, NLL) points by non-negative least squares.

    The decay rates c_j are log-spaced between 0.05 and 50 over the span of the KLs,
    so the fit does not depend on the units' scale.
    """
    kls, nlls = np.asarray(kls, float), np.asarray(nlls, float)
    keep = np.isfinite(kls) & np.isfinite(nlls)
    kls, nlls = kls[keep], nlls[keep]
    if kls.size < 3 or np.ptp(kls) <= 0:
        raise SweepError("a rate–distortion fit needs at least 3 runs at different KLs")
    rates = np.geomspace(0.05, 50.0, num_rates) / float(np.ptp(kls))
    shift = float(kls.min())
    basis = np.exp(-np.outer(kls - shift, rates))
    design = np.column_stack([np.ones_like(kls), -np.ones_like(kls), basis])
    coef, _ = nnls(design, nlls)
    return RateDistortionFit(float(coef[0] - coef[1]), coef[2:], rates, shift, (shift, float(kls.max())))


def slope_estimate(kls: np.ndarray, nlls: np.ndarray, epsilon: float) -> float:
    """−dNLL/dKL at KL = ε from constrained runs' (KL, NLL); NaN at the range's ends."""
    if len(kls) < 3:
        return math.nan
    return fit_rate_distortion(kls, nlls).slope(epsilon)


# --- the table ------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) of the finite values; the std is NaN for one value."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan


def format_estimate(mean: float, std: float) -> str:
    """``mean ± std`` (4 and 2 significant digits); the mean alone when there is no spread (one seed),
    ``—`` when there is no estimate."""
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.4g} ± {std:.2g}" if math.isfinite(std) else f"{mean:.4g}"


def _bracket(values: np.ndarray, at: float) -> list[int]:
    """Indices into ``values`` an interpolation at ``at`` rests on: the value equal to ``at``,
    else the nearest below and the nearest above (none outside the range)."""
    values = np.asarray(values, float)
    equal = np.flatnonzero(np.isclose(values, at))
    if equal.size:
        return [int(equal[0])]
    below, above = np.flatnonzero(values < at), np.flatnonzero(values > at)
    if not below.size or not above.size:
        return []
    return [int(below[np.argmax(values[below])]), int(above[np.argmin(values[above])])]


def dual_support(sweep: Sweep, epsilon: float) -> list[float]:
    """The swept ε the dual estimate at ``epsilon`` rests on: ``epsilon`` itself when swept, else
    the swept budgets on either side of it (empty outside the swept range)."""
    swept = np.sort(sweep.constrained["epsilon"].unique())
    return [float(swept[i]) for i in _bracket(swept, epsilon)]


def missed_constraint(runs_table: pd.DataFrame) -> pd.Series:
    """Which constrained runs (rows of ``Sweep.constrained``) ended with tail KL > ε·(1 + tolerance)."""
    return runs_table["constraint_satisfied"].astype(float) < 1


@dataclass(frozen=True)
class UnmetConstraint:
    """The runs at one swept ε that ended with tail KL > ε·(1 + tolerance)."""

    epsilon: float
    n_unmet: int
    n_runs: int
    kl_ratios: tuple[float, ...]  # tail KL / ε of each run that did not meet the constraint


def unmet_constraints(sweep: Sweep, epsilons: list[float] | None = None) -> list[UnmetConstraint]:
    """The swept ε (of ``epsilons``; default all) at which some seed's run did not meet its constraint."""
    constrained = sweep.constrained
    out = []
    for eps, group in constrained.groupby("epsilon"):
        if epsilons is not None and not np.isclose(epsilons, eps).any():
            continue
        unmet = group[missed_constraint(group)]
        if len(unmet):
            ratios = tuple(sorted(float(kl) / float(eps) for kl in unmet["kl"]))
            out.append(UnmetConstraint(float(eps), len(unmet), len(group), ratios))
    return out


def unmet_warning(unmet: list[UnmetConstraint]) -> str | None:
    """One line naming the ε whose runs did not meet the constraint and what that makes of λ there."""
    if not unmet:
        return None
    parts = []
    for u in unmet:
        lo, hi = u.kl_ratios[0], u.kl_ratios[-1]
        ratio = f"{lo:.3g} ε" if math.isclose(lo, hi, rel_tol=5e-3) else f"{lo:.3g}–{hi:.3g} ε"
        seeds = f", {u.n_unmet} of {u.n_runs} seeds" if u.n_runs > 1 else ""
        parts.append(f"ε = {u.epsilon:g} (KL {ratio}{seeds})")
    bound = 1 + runs.CONSTRAINT_TOLERANCE
    return (
        f"constraint not met, tail KL > {bound:g} ε, at {'; '.join(parts)}: λ had not settled and was still "
        "rising, so the dual estimate there (and any λ interpolated through it) is a lower bound on the "
        "effective β, not an estimate; train those runs longer or with a larger dual lr"
    )


def estimate_beta(sweep: Sweep, epsilon: float) -> dict[str, float]:
    """The three estimates (and their seed spreads) of the effective β at ``epsilon``.

    An ε between swept budgets gets the dual estimate by log–log PCHIP of λ(ε).
    ``constraint_met`` is False when a run at ``epsilon``, or between swept budgets a run at
    either neighbouring ε, did not meet its constraint (the dual estimate is then a lower bound);
    ``constraint_satisfied`` is the fraction of runs at exactly ``epsilon`` that met it.
    """
    constrained, fixed = sweep.constrained, sweep.fixed
    at_eps = constrained[np.isclose(constrained["epsilon"], epsilon)]
    dual, dual_std = _mean_std(list(at_eps["multiplier"]))
    if not len(at_eps):  # between swept budgets: interpolate λ(ε) in log–log, per seed for the spread
        by_eps_lambda = constrained.groupby("epsilon")["multiplier"].mean()
        dual = _loglog_interpolate(by_eps_lambda.index.values, by_eps_lambda.values, epsilon)
        per_seed = [_loglog_interpolate(g["epsilon"].values, g["multiplier"].values, epsilon)
                    for _, g in constrained.groupby("seed")]  # fmt: skip
        dual_std = _mean_std(per_seed)[1]
    by_beta = fixed.groupby("beta")["kl"].mean()
    inverse = inverse_fixed_beta(by_beta.index.values, by_beta.values, epsilon)
    per_seed_inverse = [inverse_fixed_beta(g["beta"].values, g["kl"].values, epsilon) for _, g in fixed.groupby("seed")]
    by_eps = constrained.groupby("epsilon")[["kl", "nll"]].mean()
    slope, per_seed_slope = math.nan, []
    if len(by_eps) and by_eps.index.min() < epsilon < by_eps.index.max():  # interior of the swept budgets
        slope = slope_estimate(by_eps["kl"].values, by_eps["nll"].values, epsilon)
        per_seed_slope = [
            slope_estimate(g["kl"].values, g["nll"].values, epsilon) for _, g in constrained.groupby("seed")
        ]
    return {
        "epsilon": epsilon,
        "beta_dual": dual,
        "beta_dual_std": dual_std,
        "beta_inverse_fixed": inverse,
        "beta_inverse_fixed_std": _mean_std(per_seed_inverse)[1],
        "beta_slope": slope,
        "beta_slope_std": _mean_std(per_seed_slope)[1],
        "n_seeds": len(at_eps),
        "kl": float(at_eps["kl"].mean()) if len(at_eps) else math.nan,
        "nll": float(at_eps["nll"].mean()) if len(at_eps) else math.nan,
        "constraint_satisfied": float(at_eps["constraint_satisfied"].astype(float).mean()) if len(at_eps) else math.nan,
        "constraint_met": not unmet_constraints(sweep, dual_support(sweep, epsilon)),
    }


def tradeoff_table(sweep: Sweep) -> pd.DataFrame:
    """One row per swept ε: the three estimates, their spreads, the closed form and errors."""
    epsilons = sorted(sweep.constrained["epsilon"].unique())
    if not epsilons:
        raise SweepError(f"{sweep.path} has no constrained runs: nothing to map ε to β for")
    table = pd.DataFrame([estimate_beta(sweep, eps) for eps in epsilons])
    beta_star = sweep.closed_form()
    table["beta_closed_form"] = [beta_star(e) for e in epsilons] if beta_star else math.nan
    for name in ESTIMATES:
        table[f"error_{name}"] = table[f"beta_{name}"] / table["beta_closed_form"] - 1
    return table


def epsilon_for_beta(sweep: Sweep, beta: float) -> dict[str, float]:
    """The KL budget a fixed β amounts to: KL of fixed-β runs at β (log–log PCHIP over
    the seed-mean KL(β)), and the ε whose constrained runs' λ equals β (log–log PCHIP
    over the seed-mean λ(ε)). NaN where β is outside what the sweep covers.
    ``epsilon_dual_constraint_met`` is False when the swept ε that ``epsilon_dual`` is read
    between include one whose runs did not meet their constraint (λ there is a lower bound)."""
    if not (math.isfinite(beta) and beta > 0):
        raise SweepError(f"--beta must be a positive number, got {beta}")
    by_beta = sweep.fixed.groupby("beta")["kl"].mean()
    by_eps = sweep.constrained.groupby("epsilon")["multiplier"].mean()
    return {
        "beta": beta,
        "epsilon_fixed": _loglog_interpolate(by_beta.index.values, by_beta.values, beta),
        "epsilon_dual": _loglog_interpolate(by_eps.values, by_eps.index.values, beta),
        "epsilon_dual_constraint_met": not unmet_constraints(sweep, lambda_support(sweep, beta)),
    }


def lambda_support(sweep: Sweep, beta: float) -> list[float]:
    """The swept ε that the ε whose λ equals ``beta`` is read between (by seed-mean λ; the
    ε whose λ is ``beta`` when there is one; empty outside the range of positive λ)."""
    by_eps = sweep.constrained.groupby("epsilon")["multiplier"].mean()
    by_eps = by_eps[by_eps > 0]  # as the log–log interpolation sees them
    return [float(by_eps.index[i]) for i in _bracket(by_eps.values, beta)]


def _loglog_interpolate(x: np.ndarray, y: np.ndarray, at: float) -> float:
    keep = (np.asarray(x) > 0) & (np.asarray(y) > 0)
    x, y = np.log(np.asarray(x, float)[keep]), np.log(np.asarray(y, float)[keep])
    order = np.argsort(x)
    x, first = np.unique(x[order], return_index=True)
    y = y[order][first]
    if x.size < 2 or not (x[0] <= math.log(at) <= x[-1]):
        return math.nan
    return float(math.exp(PchipInterpolator(x, y)(math.log(at))))


def swept_range(sweep: Sweep) -> dict[str, tuple[float, float]]:
    """The ε range of the constrained runs and the KL range the fixed-β runs reached."""
    out = {}
    if len(sweep.constrained):
        out["epsilon"] = (float(sweep.constrained["epsilon"].min()), float(sweep.constrained["epsilon"].max()))
    if len(sweep.fixed):
        out["fixed_kl"] = (float(sweep.fixed["kl"].min()), float(sweep.fixed["kl"].max()))
        out["beta"] = (float(sweep.fixed["beta"].min()), float(sweep.fixed["beta"].max()))
    return out

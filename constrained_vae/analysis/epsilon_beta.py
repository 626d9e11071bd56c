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
:mod:`constrained_vae.core.linear_gaussian` is a fourth column, with relative errors.

A constrained run whose tail KL ended above ε·(1 + ``CONSTRAINT_TOLERANCE``)
did not meet its constraint: λ was still rising (dual ascent raises λ while KL > ε,
and KL(β) decreases in β), so its λ is a lower bound on the effective β, not an
estimate. ``constraint_met`` is False for an ε whose dual estimate rests on such a
run, at that ε or, between swept budgets, at either neighbour; :func:`unmet_warning`
says so in words. A met constraint whose λ was still moving when the run ended
(``multiplier_settled`` false in its summary, :mod:`constrained_vae.run.summary`) is no settled
effective β either (:func:`unsettled_warning`), and a budget that was inactive (tail KL ≪ ε with
λ at its floor) never bound at all (:func:`inactive_warning`). All KL, NLL, ε, β in nats per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator
from scipy.optimize import nnls
from sklearn.isotonic import IsotonicRegression

from constrained_vae.analysis.sweep_table import Sweep
from constrained_vae.errors import SweepError
from constrained_vae.run.summary import CONSTRAINT_TOLERANCE, INACTIVE_FRACTION, SETTLE_TOLERANCE, format_spread

ESTIMATES = ("dual", "inverse_fixed", "slope")


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
    # log β as a function of log KL over the decreasing knots (of tied knots, the largest β)
    return _pchip_in_logs(monotone[::-1], log_beta[order][::-1], math.log(epsilon))


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
    ``—`` when there is no estimate (:func:`~constrained_vae.run.summary.format_spread`)."""
    return format_spread(mean, std)


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
    bound = 1 + CONSTRAINT_TOLERANCE
    return (
        f"constraint not met, tail KL > {bound:g} ε, at {'; '.join(parts)}: λ had not settled and was still "
        "rising, so the dual estimate there (and any λ interpolated through it) is a lower bound on the "
        "effective β, not an estimate; train those runs longer or with a larger dual lr"
    )


def _flagged(runs_table: pd.DataFrame, column: str, flag: object) -> pd.Series:
    """Which rows have ``flag`` in ``column`` (none where the column is missing: old summaries)."""
    if column not in runs_table:
        return pd.Series(False, index=runs_table.index)
    return runs_table[column].map(lambda value: value is not None and not pd.isna(value) and value == flag)


def unsettled_multiplier(runs_table: pd.DataFrame) -> pd.Series:
    """Which constrained runs' λ had not settled (``multiplier_settled`` false in their summary:
    still moving, or too few rows to judge); a summary without the verdict is not flagged."""
    return _flagged(runs_table, "multiplier_settled", False)


def inactive_constraint(runs_table: pd.DataFrame) -> pd.Series:
    """Which constrained runs ended with their budget inactive (tail KL ≪ ε, λ at its floor)."""
    return _flagged(runs_table, "constraint_status", "inactive")


@dataclass(frozen=True)
class FlaggedRuns:
    """The runs at one swept ε whose summary flags them (λ still moving, or budget inactive)."""

    epsilon: float
    n_flagged: int
    n_runs: int
    values: tuple[float, ...]  # λ's drift (still moving) or tail KL (inactive) of each flagged run


def _flagged_runs(
    sweep: Sweep, which: Callable[[pd.DataFrame], pd.Series], value: str, epsilons: list[float] | None
) -> list[FlaggedRuns]:
    out = []
    for eps, group in sweep.constrained.groupby("epsilon"):
        if epsilons is not None and not np.isclose(epsilons, eps).any():
            continue
        flagged = group[which(group)]
        if len(flagged):
            values = tuple(sorted(float(v) for v in flagged[value] if v is not None and not pd.isna(v)))
            out.append(FlaggedRuns(float(eps), len(flagged), len(group), values))
    return out


def unsettled_multipliers(sweep: Sweep, epsilons: list[float] | None = None) -> list[FlaggedRuns]:
    """The swept ε (of ``epsilons``; default all) at which some seed's λ had not settled."""
    return _flagged_runs(sweep, unsettled_multiplier, "multiplier_drift", epsilons)


def inactive_constraints(sweep: Sweep, epsilons: list[float] | None = None) -> list[FlaggedRuns]:
    """The swept ε (of ``epsilons``; default all) at which some seed's budget was inactive."""
    return _flagged_runs(sweep, inactive_constraint, "kl", epsilons)


def _seeds(runs: FlaggedRuns) -> str:
    return f", {runs.n_flagged} of {runs.n_runs} seeds" if runs.n_runs > 1 else ""


def unsettled_warning(unsettled: list[FlaggedRuns]) -> str | None:
    """One line naming the ε whose λ was still moving when the runs ended (None when there are none)."""
    if not unsettled:
        return None
    parts = []
    for u in unsettled:
        said = [f"drift {', '.join(f'{100 * d:+.0f}%' for d in u.values)}"] if u.values else []
        said += ["too few rows to judge"] if len(u.values) < u.n_flagged else []
        parts.append(f"ε = {u.epsilon:g} ({'; '.join(said)}{_seeds(u)})")
    moving = "λ still moving" if any(u.values for u in unsettled) else "λ not settled"
    return (
        f"{moving} at {'; '.join(parts)}: a settled λ's mean changes by at most {100 * SETTLE_TOLERANCE:g}% from "
        "the third to the last quarter of steps, so the dual estimate there is not a settled effective β; "
        "train those runs longer"
    )


def inactive_warning(inactive: list[FlaggedRuns]) -> str | None:
    """One line naming the ε whose budget never bound (None when there are none)."""
    if not inactive:
        return None
    parts = [f"ε = {u.epsilon:g} (KL {', '.join(f'{kl:.3g}' for kl in u.values)}{_seeds(u)})" for u in inactive]
    return (
        f"constraint inactive at {'; '.join(parts)}: tail KL ≤ {INACTIVE_FRACTION:g} ε with λ at its floor, so the "
        "budget never bound and the posterior may have collapsed; λ there is no effective β of ε"
    )


def sweep_warnings(sweep: Sweep) -> list[str]:
    """The lines an analysis of ``sweep`` warns with: the ε whose constraint was not met, those where it
    was met with λ still moving, those whose budget was inactive, and the runs it left out."""
    unmet = unmet_constraints(sweep)
    moving = [u for u in unsettled_multipliers(sweep) if u.epsilon not in {m.epsilon for m in unmet}]
    lines = (
        unmet_warning(unmet),
        unsettled_warning(moving),
        inactive_warning(inactive_constraints(sweep)),
        sweep.unfinished_warning(),
    )
    return [line for line in lines if line]


def _verdict(flags: list[FlaggedRuns], runs: pd.DataFrame, column: str) -> bool | None:
    """False when some run is flagged, True when every run has the verdict, None when none has one."""
    if flags:
        return False
    known = runs[column].map(lambda v: v is not None and not pd.isna(v)) if column in runs else []
    return True if len(runs) and all(known) else None


def estimate_beta(sweep: Sweep, epsilon: float) -> dict[str, float]:
    """The three estimates (and their seed spreads) of the effective β at ``epsilon``.

    An ε between swept budgets gets the dual estimate by log–log PCHIP of λ(ε).
    ``constraint_met`` is False when a run at ``epsilon``, or between swept budgets a run at
    either neighbouring ε, did not meet its constraint (the dual estimate is then a lower bound);
    ``constraint_satisfied`` is the fraction of runs at exactly ``epsilon`` that met it.
    ``multiplier_settled`` is False when λ of a run the dual estimate rests on had not settled
    (:data:`~constrained_vae.run.summary.SETTLE_TOLERANCE`), True when every such run's λ settled,
    None when their summaries do not say; ``constraint_inactive`` is True when such a run's budget
    was inactive (tail KL ≪ ε with λ at its floor).
    """
    constrained, fixed = sweep.constrained, sweep.fixed
    at_eps = constrained[np.isclose(constrained["epsilon"], epsilon)]
    support = dual_support(sweep, epsilon)
    support_runs = constrained[constrained["epsilon"].map(lambda e: bool(np.isclose(support, e).any()))]
    dual, dual_std = _mean_std(list(at_eps["multiplier"]))
    if not len(at_eps):  # between swept budgets: interpolate λ(ε) in log–log, per seed for the spread
        by_eps_lambda = constrained.groupby("epsilon")["multiplier"].mean()
        dual = _loglog_interpolate(by_eps_lambda.index.values, by_eps_lambda.values, epsilon)
        per_seed = [
            _loglog_interpolate(g["epsilon"].values, g["multiplier"].values, epsilon)
            for _, g in constrained.groupby("seed")
        ]
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
        "multiplier_settled": _verdict(unsettled_multipliers(sweep, support), support_runs, "multiplier_settled"),
        "constraint_inactive": bool(inactive_constraints(sweep, support)),
    }


def _is(value: object, flag: bool) -> bool:
    """Whether a table cell holds the verdict ``flag`` (a missing verdict, None or NaN, holds neither)."""
    return value is not None and not pd.isna(value) and bool(value) is flag


def dual_flags(table: pd.DataFrame, prefix: str = "") -> dict[str, np.ndarray]:
    """Which rows of a :func:`tradeoff_table` (columns under ``prefix``) hold a dual estimate that is no
    settled effective β, by reason: ``unmet`` (constraint not met: λ a lower bound), ``moving`` (met, λ
    still moving or too few rows to judge) and ``inactive`` (the budget never bound); rows without a dual
    estimate are in none."""
    known = np.isfinite(table[f"{prefix}beta_dual"].to_numpy(float))
    unmet = known & table[f"{prefix}constraint_met"].map(lambda v: _is(v, False)).to_numpy(bool)
    moving = known & ~unmet & table[f"{prefix}multiplier_settled"].map(lambda v: _is(v, False)).to_numpy(bool)
    inactive = known & table[f"{prefix}constraint_inactive"].map(lambda v: _is(v, True)).to_numpy(bool)
    return {"unmet": unmet, "moving": moving, "inactive": inactive}


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
    between include one whose runs did not meet their constraint (λ there is a lower bound), and
    ``epsilon_dual_multiplier_settled`` is False when they include one whose λ had not settled."""
    if not (math.isfinite(beta) and beta > 0):
        raise SweepError(f"--beta must be a positive number, got {beta}")
    by_beta = sweep.fixed.groupby("beta")["kl"].mean()
    by_eps = sweep.constrained.groupby("epsilon")["multiplier"].mean()
    return {
        "beta": beta,
        "epsilon_fixed": _loglog_interpolate(by_beta.index.values, by_beta.values, beta),
        "epsilon_dual": _loglog_interpolate(by_eps.values, by_eps.index.values, beta),
        "epsilon_dual_constraint_met": not unmet_constraints(sweep, lambda_support(sweep, beta)),
        "epsilon_dual_multiplier_settled": not unsettled_multipliers(sweep, lambda_support(sweep, beta)),
    }


def lambda_support(sweep: Sweep, beta: float) -> list[float]:
    """The swept ε that the ε whose λ equals ``beta`` is read between (by seed-mean λ; the
    ε whose λ is ``beta`` when there is one; empty outside the range of positive λ)."""
    by_eps = sweep.constrained.groupby("epsilon")["multiplier"].mean()
    by_eps = by_eps[by_eps > 0]  # as the log–log interpolation sees them
    return [float(by_eps.index[i]) for i in _bracket(by_eps.values, beta)]


def _loglog_interpolate(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """y(at) by a PCHIP of log y against log x through the positive points; NaN outside their range."""
    keep = (np.asarray(x) > 0) & (np.asarray(y) > 0)
    x, y = np.log(np.asarray(x, float)[keep]), np.log(np.asarray(y, float)[keep])
    order = np.argsort(x)
    return _pchip_in_logs(x[order], y[order], math.log(at))


def _pchip_in_logs(log_x: np.ndarray, log_y: np.ndarray, log_at: float) -> float:
    """exp of the PCHIP through (log_x, log_y) at ``log_at``, the first of tied knots kept; NaN outside the knots."""
    x, first = np.unique(log_x, return_index=True)
    y = log_y[first]
    if x.size < 2 or not (x[0] <= log_at <= x[-1]):
        return math.nan
    return float(math.exp(PchipInterpolator(x, y)(log_at)))


def swept_range(sweep: Sweep) -> dict[str, tuple[float, float]]:
    """The ε range of the constrained runs and the KL range the fixed-β runs reached."""
    out = {}
    if len(sweep.constrained):
        out["epsilon"] = (float(sweep.constrained["epsilon"].min()), float(sweep.constrained["epsilon"].max()))
    if len(sweep.fixed):
        out["fixed_kl"] = (float(sweep.fixed["kl"].min()), float(sweep.fixed["kl"].max()))
        out["beta"] = (float(sweep.fixed["beta"].min()), float(sweep.fixed["beta"].max()))
    return out

"""The ε ↔ β estimators on run tables whose answer is known, and the analysis scripts."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from constrained_vae.analysis.epsilon_beta import (
    epsilon_for_beta,
    fit_rate_distortion,
    inverse_fixed_beta,
    slope_estimate,
    tradeoff_table,
)
from constrained_vae.analysis.sweep_table import Sweep, load_sweep
from constrained_vae.core.linear_gaussian import beta_for_rate, distortion, rate
from constrained_vae.errors import SweepError
from constrained_vae.plots.tradeoff import write_tradeoff_analysis
from constrained_vae.run import folder
from constrained_vae.run.loop import train
from constrained_vae.run.settings import RunConfig

ROOT = Path(__file__).resolve().parents[1]
SPECTRUM = [16.0, 8.0, 4.0, 2.0, 1.0]
EPSILONS = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0]
BETAS = [0.3, 0.45, 0.7, 1.0, 1.5, 2.2, 3.3, 5.0, 7.5]


def synthetic_sweep(noise: float = 0.0, seeds=(0, 1, 2), rng_seed: int = 0) -> Sweep:
    """Run tables sampled from the linear-Gaussian closed form with noise of ``noise`` nats."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for seed in seeds:
        for eps in EPSILONS:
            beta = beta_for_rate(eps, SPECTRUM)
            rows.append(
                dict(
                    name=f"eps{eps:g}-seed{seed}",
                    mode="constrained",
                    epsilon=eps,
                    beta=None,
                    seed=seed,
                    kl=eps + rng.normal(0, noise / 5),
                    nll=distortion(beta, SPECTRUM) + rng.normal(0, noise),
                    multiplier=beta * (1 + rng.normal(0, noise)),
                    constraint_satisfied=True,
                )
            )
        for beta in BETAS:
            rows.append(
                dict(
                    name=f"beta{beta:g}-seed{seed}",
                    mode="fixed-beta",
                    epsilon=None,
                    beta=beta,
                    seed=seed,
                    kl=rate(beta, SPECTRUM) + rng.normal(0, noise),
                    nll=distortion(beta, SPECTRUM),
                    multiplier=beta,
                    constraint_satisfied=None,
                )
            )
    settings = dict(dataset="linear-gaussian", spectrum=SPECTRUM, sigma=1.0, learn_sigma=False)
    return Sweep(Path("synthetic"), pd.DataFrame(rows), settings)


def test_the_three_estimates_recover_the_closed_form_without_noise():
    table = tradeoff_table(synthetic_sweep(noise=0.0))
    assert list(table["epsilon"]) == EPSILONS
    np.testing.assert_allclose(table["beta_dual"], table["beta_closed_form"], rtol=1e-12)
    # Log–log PCHIP across the water-filling kinks of R(β) on a ×1.5 β grid: up to ~2.6% off.
    np.testing.assert_allclose(table["beta_inverse_fixed"], table["beta_closed_form"], rtol=0.03)
    interior = table.iloc[1:-1]
    np.testing.assert_allclose(interior["beta_slope"], interior["beta_closed_form"], rtol=0.03)


def test_estimates_stay_within_5_percent_under_realistic_noise():
    """0.01 nats of noise on NLL and KL (as seen in real linear-Gaussian runs), 3 seeds."""
    for rng_seed in range(5):
        table = tradeoff_table(synthetic_sweep(noise=0.01, rng_seed=rng_seed))
        for name in ("dual", "inverse_fixed", "slope"):
            errors = table[f"error_{name}"].dropna().abs()
            assert len(errors) >= len(EPSILONS) - 2
            assert errors.max() < 0.05, (name, rng_seed, errors.max())
        assert (table["beta_slope_std"].iloc[1:-1] > 0).all()


def test_slope_is_left_empty_at_the_ends_of_the_swept_range():
    table = tradeoff_table(synthetic_sweep())
    assert math.isnan(table["beta_slope"].iloc[0]) and math.isnan(table["beta_slope"].iloc[-1])


@given(st.floats(0.5, 5.0), st.floats(0.2, 3.0), st.floats(-20, 20))
def test_the_fit_recovers_an_exponential_rd_curve(b, c, a):
    kl = np.linspace(1.0, 6.0, 7)
    fit = fit_rate_distortion(kl, a + b * np.exp(-c * kl))
    for x in kl[1:-1]:
        assert fit.slope(x) == pytest.approx(b * c * math.exp(-c * x), rel=0.02, abs=1e-3 * b * c)


@given(st.lists(st.tuples(st.floats(0.1, 50), st.floats(-100, 100)), min_size=3, max_size=12))
def test_the_fit_is_decreasing_and_convex_whatever_the_points(points):
    kl = np.array([p[0] for p in points])
    nll = np.array([p[1] for p in points])
    if np.ptp(kl) < 1e-3:
        return
    fit = fit_rate_distortion(kl, nll)
    grid = np.linspace(kl.min(), kl.max(), 50)
    values = fit.nll(grid)
    assert np.all(np.diff(values) <= 1e-9 * (1 + np.abs(values[:-1])))
    assert np.all(np.diff(values, 2) >= -1e-7 * (1 + np.abs(values[1:-1])))


def test_inverse_fixed_beta_is_monotone_interpolation_and_refuses_to_extrapolate():
    betas = np.array([0.5, 1.0, 2.0, 4.0])
    kls = 10.0 / betas  # KL ∝ 1/β: exact in log–log
    assert inverse_fixed_beta(betas, kls, 7.0) == pytest.approx(10.0 / 7.0, rel=1e-9)
    assert math.isnan(inverse_fixed_beta(betas, kls, 30.0))  # KL above the largest reached
    assert math.isnan(inverse_fixed_beta(betas, kls, 1.0))  # below the smallest
    noisy = kls * np.array([1.0, 1.0, 1.3, 1.0])  # a non-monotone point is pooled by isotonic regression
    assert 0.5 < inverse_fixed_beta(betas, noisy, 7.0) < 4.0
    assert math.isnan(slope_estimate(np.array([1.0, 2.0]), np.array([3.0, 2.0]), 1.5))


def test_epsilon_for_beta_inverts_both_families():
    sweep = synthetic_sweep()
    result = epsilon_for_beta(sweep, 2.0)
    assert result["epsilon_fixed"] == pytest.approx(rate(2.0, SPECTRUM), rel=0.02)
    assert result["epsilon_dual"] == pytest.approx(rate(2.0, SPECTRUM), rel=0.02)
    assert math.isnan(epsilon_for_beta(sweep, 100.0)["epsilon_fixed"])
    with pytest.raises(SweepError):
        epsilon_for_beta(sweep, -1.0)


# --- real run folders -------------------------------------------------------------


TINY = dict(dataset="linear-gaussian", spectrum=[4.0, 2.0, 1.0], num_samples=256, steps=30, batch_size=32, log_every=5)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("sweep")
    for eps in (0.5, 1.0, 1.5, 2.0):
        train(RunConfig(epsilon=eps, **TINY), sweep / f"eps{eps:g}-seed0", progress=False)
    for beta in (0.5, 1.0, 2.0, 4.0):
        train(RunConfig(beta=beta, **TINY), sweep / f"beta{beta:g}-seed0", progress=False)
    return sweep


def test_write_tradeoff_analysis_writes_the_table_and_figures(tiny_sweep):
    _, paths = write_tradeoff_analysis(tiny_sweep)
    out = tiny_sweep / "analysis"
    for name in ("effective_beta", "rate_distortion", "training_curves"):
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 5_000
            assert out / f"{name}.{ext}" in paths
    csv = pd.read_csv(out / "tradeoff.csv")
    for column in ("epsilon", "beta_dual", "beta_inverse_fixed", "beta_slope", "beta_closed_form", "constraint_met"):
        assert column in csv.columns
    assert list(csv["epsilon"]) == [0.5, 1.0, 1.5, 2.0]
    assert (out / "effective_beta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "effective_beta.pdf").read_bytes()[:5] == b"%PDF-"


def test_disentanglement_scores_are_picked_up_when_present(tiny_sweep):
    scores = {"scores": {"mig": {"mig": 0.3}, "dci": {"disentanglement": 0.5}}}
    (tiny_sweep / "eps1-seed0" / "metrics.json").write_text(json.dumps(scores))
    sweep = load_sweep(tiny_sweep)
    assert sweep.runs.set_index("name").loc["eps1-seed0", "mig.mig"] == 0.3
    _, paths = write_tradeoff_analysis(tiny_sweep)
    assert tiny_sweep / "analysis" / "disentanglement.png" in paths
    (tiny_sweep / "eps1-seed0" / "metrics.json").unlink()


def script(name, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / "analysis" / name), *map(str, args)], capture_output=True, text=True
    )


def test_epsilon_to_beta_answers_inside_the_range_and_refuses_outside(tiny_sweep):
    done = script("epsilon_to_beta.py", tiny_sweep, "--epsilon", "1")
    assert done.returncode == 0, done.stderr
    assert "dual" in done.stdout and "closed form" in done.stdout
    outside = script("epsilon_to_beta.py", tiny_sweep, "--epsilon", "50")
    assert outside.returncode == 2 and "outside what the sweep covers" in outside.stderr
    inverse = script("epsilon_to_beta.py", tiny_sweep, "--beta", "1.5")
    assert inverse.returncode == 0 and "nats" in inverse.stdout


def test_bad_sweep_folders_are_refused(tmp_path, tiny_sweep):
    (tmp_path / "empty").mkdir()
    done = script("tradeoff_curves.py", tmp_path / "empty")
    assert done.returncode == 2 and "no finished runs" in done.stderr
    assert script("tradeoff_curves.py", tmp_path / "missing").returncode == 2
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for run in ("eps1-seed0", "beta1-seed0"):
        (mixed / run).mkdir()
        for f in (folder.CONFIG_FILE, folder.SUMMARY_FILE, folder.TRAINING_LOG):
            (mixed / run / f).write_bytes((tiny_sweep / run / f).read_bytes())
    train(RunConfig(epsilon=2.0, **(TINY | {"spectrum": [9.0, 1.0]})), mixed / "eps2-seed0", progress=False)
    with pytest.raises(SweepError, match=r"mixed-up sweep.*spectrum"):
        load_sweep(mixed)
    done = script("tradeoff_curves.py", mixed)
    assert done.returncode == 2 and "mixed-up" in done.stderr


def test_runs_that_differ_only_in_how_they_were_computed_are_one_sweep(tmp_path, tiny_sweep):
    for run in ("eps1-seed0", "beta1-seed0"):
        (tmp_path / run).mkdir()
        for f in (folder.CONFIG_FILE, folder.SUMMARY_FILE, folder.TRAINING_LOG):
            (tmp_path / run / f).write_bytes((tiny_sweep / run / f).read_bytes())
    # a re-run of the sweep may change the logging and the threads of the points still to train
    train(RunConfig(epsilon=2.0, **(TINY | {"log_every": 10, "threads": 1})), tmp_path / "eps2-seed0", progress=False)
    assert sorted(load_sweep(tmp_path).runs["name"]) == ["beta1-seed0", "eps1-seed0", "eps2-seed0"]


@pytest.fixture(scope="module")
def small_linear_gaussian_sweep(tmp_path_factory):
    """A real, converged linear-Gaussian sweep at small size (10 runs of 1,500 steps, ~15 s)."""
    sweep = tmp_path_factory.mktemp("lg-sweep")
    settings = dict(
        dataset="linear-gaussian",
        spectrum=[9.0, 3.0, 1.0],
        num_samples=4000,
        steps=1500,
        log_every=50,
        checkpoint_every=1500,
    )
    for eps in (0.5, 1.0, 1.5, 2.0):
        train(RunConfig(epsilon=eps, **settings), sweep / f"eps{eps:g}-seed0", progress=False)
    for beta in (0.6, 0.9, 1.3, 2.0, 3.0, 4.5):
        train(RunConfig(beta=beta, **settings), sweep / f"beta{beta:g}-seed0", progress=False)
    return sweep


def test_trained_linear_gaussian_estimates_agree_with_the_closed_form(small_linear_gaussian_sweep):
    """All three estimates from real training runs land near β*(ε) (the sweep of docs/epsilon-beta.md is the
    full-size version: 63 runs, every estimate within 3.1%)."""
    table = tradeoff_table(load_sweep(small_linear_gaussian_sweep)).set_index("epsilon")
    assert list(table.index) == [0.5, 1.0, 1.5, 2.0]
    for eps, row in table.iterrows():
        assert row["beta_closed_form"] == pytest.approx(beta_for_rate(eps, [9.0, 3.0, 1.0]))
        assert abs(row["error_dual"]) < 0.08, (eps, row["beta_dual"])
        assert abs(row["error_inverse_fixed"]) < 0.08, (eps, row["beta_inverse_fixed"])
        assert row["constraint_satisfied"]
    interior = table.loc[[1.0, 1.5]]
    assert interior["error_slope"].abs().max() < 0.08
    assert table.loc[[0.5, 2.0], "beta_slope"].isna().all()  # no one-sided slopes at the ends


def test_unfinished_runs_are_reported_and_never_interpolated_across(tmp_path, tiny_sweep):
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, sweep)
    (sweep / "eps1-seed0" / folder.SUMMARY_FILE).unlink()
    curves = script("tradeoff_curves.py", sweep)
    assert curves.returncode == 0 and "1 unfinished run(s)" in curves.stderr and "eps1-seed0" in curves.stderr
    answer = script("epsilon_to_beta.py", sweep, "--epsilon", "1.2")
    assert answer.returncode == 0 and "unfinished" in answer.stderr
    dual = next(line for line in answer.stdout.splitlines() if "dual" in line)
    assert "not interpolated: the runs at swept ε = 1 have not finished" in dual
    assert "interpolated between" not in answer.stdout


def test_a_sweep_of_fixed_beta_alone_is_refused_without_writing_an_analysis_folder(tmp_path, tiny_sweep):
    for beta in (0.5, 1.0):
        shutil.copytree(tiny_sweep / f"beta{beta:g}-seed0", tmp_path / f"beta{beta:g}-seed0")
    done = script("tradeoff_curves.py", tmp_path)
    assert done.returncode == 2 and "no constrained runs" in done.stderr
    assert not (tmp_path / "analysis").exists()

"""The closed form of the linear β-VAE, and constrained training against it."""

import math

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

from constrained_vae.core.linear_gaussian import active_dimensions, beta_for_rate, distortion, rate
from constrained_vae.data.synthetic import linear_gaussian
from constrained_vae.errors import ConfigError
from constrained_vae.run.loop import train
from constrained_vae.run.settings import RunConfig

spectra = st.lists(st.floats(0.01, 100.0), min_size=1, max_size=8)


def test_rate_by_hand():
    # s = (16, 8, 4, 2, 1), β = 2, σ = 1: kept 16, 8, 4 → ½(log 8 + log 4 + log 2) = ½ log 64.
    assert rate(2.0, [16, 8, 4, 2, 1]) == pytest.approx(0.5 * math.log(64))
    assert active_dimensions(2.0, [16, 8, 4, 2, 1]) == 3
    # σ scales the water level: βσ² = 2 · 0.25 = 0.5 keeps all five, ½ log(16·8·4·2·1 / 0.5⁵).
    assert rate(2.0, [16, 8, 4, 2, 1], sigma=0.5) == pytest.approx(0.5 * math.log(1024 * 2**5))
    assert active_dimensions(2.0, [16, 8, 4, 2, 1], sigma=0.5) == 5


@given(spectra, st.floats(1e-3, 50.0), st.floats(0.1, 3.0))
def test_beta_for_rate_inverts_rate(spectrum, epsilon, sigma):
    beta = beta_for_rate(epsilon, spectrum, sigma)
    assert rate(beta, spectrum, sigma) == pytest.approx(epsilon, rel=1e-9)
    assert 0 < beta * sigma**2 < max(spectrum)


@given(spectra, st.floats(0.01, 20.0), st.floats(1.001, 3.0))
def test_rate_is_non_increasing_and_distortion_non_decreasing_in_beta(spectrum, beta, factor):
    assert rate(beta * factor, spectrum) <= rate(beta, spectrum)
    assert distortion(beta * factor, spectrum) >= distortion(beta, spectrum)


@given(spectra, st.floats(0.05, 20.0))
def test_slope_of_the_rate_distortion_curve_is_minus_beta(spectrum, epsilon):
    """−dD/dR = β at R = ε: the KKT multiplier of the constrained problem."""
    h = 1e-5 * epsilon
    beta_lo, beta_hi = beta_for_rate(epsilon + h, spectrum), beta_for_rate(epsilon - h, spectrum)
    slope = (distortion(beta_hi, spectrum) - distortion(beta_lo, spectrum)) / (2 * h)
    assert slope == pytest.approx(beta_for_rate(epsilon, spectrum), rel=1e-4)


def test_bad_arguments():
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError):
            beta_for_rate(bad, [1.0])
    with pytest.raises(ConfigError):
        rate(1.0, [1.0, -2.0])


def test_linear_gaussian_data_has_the_asked_spectrum():
    data = linear_gaussian([16.0, 4.0, 1.0], 50_000, seed=3).data.double().numpy()
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(data.T)))[::-1]
    np.testing.assert_allclose(eigenvalues, [16, 4, 1], rtol=0.03)
    again = linear_gaussian([16.0, 4.0, 1.0], 10, seed=3).data
    assert (again == linear_gaussian([16.0, 4.0, 1.0], 10, seed=3).data).all()


FAST_CASES = [([16.0, 8.0, 4.0, 2.0, 1.0], 2.0), ([9.0, 3.0, 1.0], 0.5), ([9.0, 3.0, 1.0], 2.5)]
SLOW_CASES = [([16.0, 8.0, 4.0, 2.0, 1.0], e) for e in (0.5, 1.0, 3.0, 5.0)] + [
    ([25.0, 20.0, 10.0, 5.0, 2.0, 1.0, 0.5, 0.25], e) for e in (2.0, 4.0, 6.0)
]


def check_constrained_training_hits_the_closed_form(tmp_path, spectrum, epsilon):
    summary = train(RunConfig(epsilon=epsilon, dataset="linear-gaussian", spectrum=spectrum), tmp_path, progress=False)
    beta_star = beta_for_rate(epsilon, spectrum)
    assert summary["multiplier"] == pytest.approx(beta_star, rel=0.05)
    assert summary["kl"] == pytest.approx(epsilon, rel=0.02)
    assert summary["nll"] == pytest.approx(distortion(beta_star, spectrum), rel=0.02)
    assert summary["constraint_satisfied"]


@pytest.mark.parametrize(("spectrum", "epsilon"), FAST_CASES)
def test_constrained_training_ends_at_the_closed_form_multiplier(tmp_path, spectrum, epsilon):
    check_constrained_training_hits_the_closed_form(tmp_path, spectrum, epsilon)


@pytest.mark.slow
@pytest.mark.parametrize(("spectrum", "epsilon"), SLOW_CASES)
def test_constrained_training_ends_at_the_closed_form_multiplier_more_cases(tmp_path, spectrum, epsilon):
    check_constrained_training_hits_the_closed_form(tmp_path, spectrum, epsilon)

"""Closed-form rate–distortion of the linear β-VAE on Gaussian data.

Data x ∈ R^D with covariance eigenvalues ``s_i`` (the spectrum); a linear VAE
with a Gaussian decoder of fixed noise σ² trained on ``NLL + β·KL``. Dividing the
loss by β shows it is a VAE (probabilistic PCA) with noise variance τ² = βσ².
At its optimum each direction with ``s_i > βσ²`` is kept, with

* KL ``½·log(s_i / (βσ²))`` nats and reconstruction residual variance ``βσ²``;

and every other direction is dropped (KL 0, residual ``s_i``). Hence

    R(β) = Σ_i ½·max(0, log(s_i / (βσ²)))                        (reverse water-filling)
    D(β) = Σ_i min(s_i, βσ²) / (2σ²) + (D/2)·log(2πσ²)          (expected NLL, nats)

and −dD/dR = β: the constrained problem ``min NLL s.t. KL ≤ ε`` has the KKT
multiplier λ* = β*(ε), the β with R(β) = ε. All quantities are in nats per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from constrained_vae.errors import ConfigError


def _spectrum(spectrum: Sequence[float]) -> np.ndarray:
    s = np.asarray(spectrum, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ConfigError(f"spectrum must be a non-empty list of positive numbers, got {list(spectrum)}")
    return s


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value}")


def rate(beta: float, spectrum: Sequence[float], sigma: float = 1.0) -> float:
    """R(β): the optimal KL in nats per sample at β, for decoder noise σ."""
    _check_positive("beta", beta)
    _check_positive("sigma", sigma)
    s = _spectrum(spectrum)
    return float(0.5 * np.maximum(0.0, np.log(s / (beta * sigma**2))).sum())


def distortion(beta: float, spectrum: Sequence[float], sigma: float = 1.0) -> float:
    """D(β): the optimal expected Gaussian NLL in nats per sample at β."""
    _check_positive("beta", beta)
    _check_positive("sigma", sigma)
    s = _spectrum(spectrum)
    residual = np.minimum(s, beta * sigma**2).sum()
    return float(residual / (2 * sigma**2) + 0.5 * s.size * math.log(2 * math.pi * sigma**2))


def beta_for_rate(epsilon: float, spectrum: Sequence[float], sigma: float = 1.0) -> float:
    """β*(ε): the β whose optimal rate is ε nats, the inverse of :func:`rate`.

    R is continuous and strictly decreasing on (0, max(s)/σ²), so the inverse is
    unique for every ε > 0. With the k largest eigenvalues active,
    ``log(βσ²) = (Σ_{i≤k} log s_i − 2ε) / k``; the right k is the one whose β lies
    inside that segment of the water-filling.
    """
    _check_positive("epsilon", epsilon)
    _check_positive("sigma", sigma)
    log_s = np.sort(np.log(_spectrum(spectrum)))[::-1]
    for k in range(1, log_s.size + 1):
        log_noise = (log_s[:k].sum() - 2.0 * epsilon) / k  # log(βσ²)
        next_log_s = log_s[k] if k < log_s.size else -math.inf
        if next_log_s <= log_noise <= log_s[k - 1]:
            return float(math.exp(log_noise) / sigma**2)
    raise AssertionError("unreachable: water-filling always has a consistent active set")


def active_dimensions(beta: float, spectrum: Sequence[float], sigma: float = 1.0) -> int:
    """How many latent directions carry information at β (those with s_i > βσ²)."""
    _check_positive("beta", beta)
    return int((_spectrum(spectrum) > beta * sigma**2).sum())

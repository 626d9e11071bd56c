"""Small datasets that need no download: scikit-learn's digits and linear-Gaussian data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from constrained_vae.data.base import TensorDataset
from constrained_vae.errors import ConfigError


def load_digits() -> TensorDataset:
    """scikit-learn's 1,797 8×8 digits as flat 64-vectors scaled to [0, 1] (Bernoulli)."""
    from sklearn.datasets import load_digits as sklearn_digits

    pixels = sklearn_digits().data.astype(np.float32) / 16.0
    return TensorDataset("digits", torch.from_numpy(pixels), likelihood="bernoulli")


def random_orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def linear_gaussian(spectrum: Sequence[float], num_samples: int, seed: int) -> TensorDataset:
    """``num_samples`` rows of x = R·diag(√s)·g, g ~ N(0, I), R orthogonal from ``seed``.

    The population covariance is R·diag(s)·Rᵀ, with eigenvalues ``spectrum``.
    """
    s = np.asarray(spectrum, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ConfigError(f"spectrum must be positive numbers, got {list(spectrum)}")
    rng = np.random.default_rng(seed)
    rotation = random_orthogonal(s.size, rng)
    g = rng.standard_normal((num_samples, s.size))
    x = (g * np.sqrt(s)) @ rotation.T
    return TensorDataset("linear-gaussian", torch.from_numpy(x.astype(np.float32)), likelihood="gaussian")

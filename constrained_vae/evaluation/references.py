"""Reference representations that calibrate the metrics: the oracle, a rotated oracle, chance,
and a hand-made code of rendered sprites (``benchmarks/metric_baselines.py`` prints their scores)."""

from __future__ import annotations

import math

import numpy as np
import torch

from constrained_vae.evaluation.metrics.sampling import RepresentationFn


class FactorGrid:
    """A toy factor dataset whose observations are the factor classes themselves: float64
    ``[n, n_factors]``, drawn uniformly over the grid of ``factor_sizes``. Fast (nothing is rendered);
    with :func:`oracle_representation` and :func:`random_representation` it calibrates the metrics."""

    def __init__(self, factor_sizes: list[int]) -> None:
        self.factor_sizes = [int(size) for size in factor_sizes]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, size, n) for size in self.factor_sizes], axis=1).astype(np.int64)

    def observations(self, factors: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(factors, dtype=np.float64))


def oracle_representation(
    factor_sizes: list[int], *, seed: int = 0, noise: float = 1e-3, rotate: bool = False
) -> RepresentationFn:
    """Codes ``[n, n_factors]`` read off :class:`FactorGrid` observations: each factor's class mapped
    to (class + ½) / size ∈ (0, 1), plus Gaussian noise of std ``noise`` (a 40-class factor's classes
    are 0.025 apart), then shifted, rescaled by a random positive factor in [0.5, 5] and permuted, so
    that code j holds one factor. With ``rotate``, the standardised codes are first mixed by a random
    rotation, so that every code holds every factor (as informative, not disentangled).

    The noise is drawn from a generator the function keeps: build a new one to repeat a sequence.
    """
    rng = np.random.default_rng(seed)
    sizes = np.asarray(factor_sizes, dtype=np.float64)
    permutation = rng.permutation(sizes.size)
    scales, shifts = rng.uniform(0.5, 5.0, sizes.size), rng.normal(size=sizes.size)
    rotation = np.linalg.qr(rng.normal(size=(sizes.size, sizes.size)))[0]

    def representation(observations: torch.Tensor) -> np.ndarray:
        codes = (observations.numpy() + 0.5) / sizes + noise * rng.normal(size=observations.shape)
        if rotate:
            codes = ((codes - 0.5) * math.sqrt(12.0)) @ rotation  # uniform(0, 1) → unit variance, then mix
        return (codes * scales + shifts)[:, permutation]

    return representation


def random_representation(code_dim: int, *, seed: int = 0) -> RepresentationFn:
    """Codes ``[n, code_dim]`` of independent N(0, 1) noise, whatever the observations (chance level)."""
    rng = np.random.default_rng(seed)
    return lambda observations: rng.normal(size=(observations.shape[0], code_dim))


def sprite_centroid(images: torch.Tensor) -> np.ndarray:
    """A hand-made representation of rendered sprites ``[n, 1, H, W]``: centre of mass (x, y, in
    pixels) and area (pixels), float64 ``[n, 3]``. It knows position and scale, not shape or
    orientation: a reference between the oracle and chance on real images."""
    pixels = images[:, 0].double()
    area = pixels.sum(dim=(1, 2))
    grid = torch.arange(pixels.shape[-1], dtype=torch.float64)
    x = (pixels.sum(dim=1) * grid).sum(dim=1) / area
    y = (pixels.sum(dim=2) * grid).sum(dim=1) / area
    return torch.stack([x, y, area], dim=1).numpy()

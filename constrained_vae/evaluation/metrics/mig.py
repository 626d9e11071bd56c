"""Mutual Information Gap (Chen et al., "Isolating Sources of Disentanglement in Variational
Autoencoders", NeurIPS 2018, Eq. 4), at disentanglement_lib's protocol (``mig.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import mutual_info_score

from constrained_vae.evaluation.metrics.sampling import (
    FactorSource,
    RepresentationFn,
    check_ints,
    labelled_codes,
)


def histogram_discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Each column of ``codes`` ``[n, d]`` cut into ``num_bins`` equal-width bins over its own
    range: int ``[n, d]`` bin numbers 1..num_bins (disentanglement_lib's histogram discretizer)."""
    binned = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, j], bins=num_bins)
        binned[:, j] = np.digitize(codes[:, j], edges[:-1])
    return binned


def mutual_information(binned: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mutual information (nats) of each discrete code with each factor: ``[code_dim, n_factors]``."""
    return np.array(
        [
            [mutual_info_score(factors[:, f], binned[:, j]) for f in range(factors.shape[1])]
            for j in range(binned.shape[1])
        ]
    )


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> dict[str, Any]:
    """MIG of codes ``[n, code_dim]`` against factor classes int ``[n, n_factors]``.

    Each code dimension is discretised into ``num_bins`` equal-width bins (:func:`histogram_discretize`)
    and its mutual information with each factor's class is taken (sklearn ``mutual_info_score``,
    nats). For each factor: the gap between the two code dimensions with the most information about
    it, divided by the factor's entropy; MIG is the mean over factors. With one code dimension the
    runner-up's information is taken as 0.
    """
    check_ints(2, num_bins=num_bins)
    info = mutual_information(histogram_discretize(codes, num_bins), factors)
    entropy = np.array([mutual_info_score(factors[:, f], factors[:, f]) for f in range(factors.shape[1])])
    if (entropy <= 0).any():
        constant = [int(f) for f in np.flatnonzero(entropy <= 0)]
        raise ValueError(f"factor(s) {constant} took a single value in {len(factors)} samples; raise num_train")
    ranked = np.sort(info, axis=0)[::-1]
    runner_up = ranked[1] if ranked.shape[0] > 1 else np.zeros(factors.shape[1])
    per_factor = (ranked[0] - runner_up) / entropy
    return {"mig": float(per_factor.mean()), "mig_per_factor": per_factor.tolist()}


def mig(
    representation_fn: RepresentationFn,
    dataset: FactorSource,
    *,
    seed: int = 0,
    num_train: int = 10000,
    num_bins: int = 20,
) -> dict[str, Any]:
    """MIG on ``num_train`` random observations (:func:`mig_from_codes`). Defaults follow
    disentanglement_lib's ``mig.py`` (10,000 points, 20 bins).

    With 20 bins a factor of more than 20 classes cannot be fully captured by one binned code: even
    a perfect code scores log 20 / log 40 ≈ 0.81 on a 40-class factor. Invariant to permutations and
    to positive rescaling (and shifts) of code dimensions.

    Returns ``mig`` and ``mig_per_factor`` (list, in the dataset's factor order).
    """
    check_ints(num_train=num_train)
    check_ints(2, num_bins=num_bins)
    factors, codes = labelled_codes(representation_fn, dataset, num_train, np.random.default_rng(seed))
    return mig_from_codes(codes, factors, num_bins)

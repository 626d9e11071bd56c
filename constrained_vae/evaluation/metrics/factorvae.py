"""The FactorVAE metric (Kim & Mnih, "Disentangling by Factorising", ICML 2018, Section 4), at
disentanglement_lib's protocol (``factor_vae.py``)."""

from __future__ import annotations

import math

import numpy as np

from constrained_vae.evaluation.metrics.sampling import (
    FactorSource,
    RepresentationFn,
    check_ints,
    codes_of,
    factor_sizes_of,
    groups_per_call,
    sample_factors,
)


def factorvae_votes(
    representation_fn: RepresentationFn,
    dataset: FactorSource,
    sizes: np.ndarray,
    rng: np.random.Generator,
    batch_size: int,
    num_points: int,
    scale: np.ndarray,
    active: np.ndarray,
) -> np.ndarray:
    """Votes int64 ``[n_factors, code_dim]``: for each point, the factor k held fixed over a batch
    of ``batch_size`` and the active code dimension of least variance after dividing by ``scale``."""
    votes = np.zeros((sizes.size, scale.size), dtype=np.int64)
    active_dims = np.flatnonzero(active)
    for start in range(0, num_points, groups_per_call(batch_size)):
        k = min(groups_per_call(batch_size), num_points - start)
        fixed = rng.integers(sizes.size, size=k)
        factors = sample_factors(dataset, k * batch_size, rng, sizes).reshape(k, batch_size, -1)
        factors[np.arange(k), :, fixed] = factors[np.arange(k), :1, fixed]
        codes = codes_of(representation_fn, dataset, factors.reshape(k * batch_size, -1)).reshape(k, batch_size, -1)
        normalised = codes[:, :, active_dims] / scale[active_dims]
        least_varying = active_dims[np.argmin(normalised.var(axis=1, ddof=1), axis=1)]
        np.add.at(votes, (fixed, least_varying), 1)
    return votes


def majority_vote_accuracy(votes: np.ndarray, factor_of_dim: np.ndarray) -> float:
    """Fraction of ``votes`` ``[n_factors, code_dim]`` whose factor is ``factor_of_dim[dim]``."""
    return float(votes[factor_of_dim, np.arange(votes.shape[1])].sum() / votes.sum())


def factorvae_from_votes(train_votes: np.ndarray, eval_votes: np.ndarray) -> dict[str, float]:
    """The majority-vote classifier on votes ``[n_factors, code_dim]`` (:func:`factorvae_votes`): each
    code dimension is mapped to the factor it got most training votes for; the accuracies are the
    fractions of training and evaluation votes it gets right."""
    factor_of_dim = np.argmax(train_votes, axis=0)
    return {
        "train_accuracy": majority_vote_accuracy(train_votes, factor_of_dim),
        "eval_accuracy": majority_vote_accuracy(eval_votes, factor_of_dim),
    }


def factorvae_score(
    representation_fn: RepresentationFn,
    dataset: FactorSource,
    *,
    seed: int = 0,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
) -> dict[str, float]:
    """The FactorVAE metric.

    Each code dimension is divided by its standard deviation, estimated on
    ``num_variance_estimate`` random observations; dimensions whose standard deviation is below
    ``prune_threshold`` (collapsed to a constant) are dropped. Each point: pick a factor k, draw
    ``batch_size`` factor vectors that share k's value, and vote for the (kept) dimension whose
    normalised codes vary least over the batch. The classifier maps each dimension to the factor it
    got most training votes for (majority vote); accuracy is the fraction of votes it gets right.
    Chance is about 1/n_factors. Defaults and steps follow disentanglement_lib's ``factor_vae.py``
    with its study's settings (batch 64, 10,000 / 5,000 points, 10,000 for the variances, prune
    threshold 0.05).

    Invariant to permutations and to positive (indeed any non-zero) rescaling of code dimensions,
    as long as the rescaling keeps the same dimensions above ``prune_threshold``.

    Returns ``train_accuracy``, ``eval_accuracy`` and ``num_active_dims`` (dimensions kept). With
    no dimension kept (a collapsed or constant representation) there is nothing to classify with:
    both accuracies are NaN and ``undefined`` gives the reason (not 0, which is below chance).
    """
    check_ints(num_train=num_train, num_eval=num_eval)
    check_ints(2, batch_size=batch_size, num_variance_estimate=num_variance_estimate)  # variances need two codes
    if not (np.isfinite(prune_threshold) and prune_threshold >= 0):
        raise ValueError(f"prune_threshold must be a non-negative number, got {prune_threshold!r}")
    sizes = factor_sizes_of(dataset)
    rng = np.random.default_rng(seed)
    sample = codes_of(representation_fn, dataset, sample_factors(dataset, num_variance_estimate, rng, sizes))
    scale = sample.std(axis=0, ddof=1)
    active = (scale >= prune_threshold) & (scale > 0)
    if not active.any():  # no dimension to vote for: no classifier, not one at 0 accuracy
        reason = (
            f"no active code dimension: no code's standard deviation over {num_variance_estimate} observations "
            f"is positive and at least prune_threshold={prune_threshold:g} (largest: {scale.max():.3g})"
        )
        return {
            "train_accuracy": math.nan,
            "eval_accuracy": math.nan,
            "num_active_dims": 0,
            "undefined": {"train_accuracy": reason, "eval_accuracy": reason},
        }
    train_votes = factorvae_votes(representation_fn, dataset, sizes, rng, batch_size, num_train, scale, active)
    eval_votes = factorvae_votes(representation_fn, dataset, sizes, rng, batch_size, num_eval, scale, active)
    return factorvae_from_votes(train_votes, eval_votes) | {"num_active_dims": int(active.sum())}

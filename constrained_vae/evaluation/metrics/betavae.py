"""The BetaVAE metric (Higgins et al., "β-VAE: Learning Basic Visual Concepts with a Constrained
Variational Framework", ICLR 2017, Section 3), at disentanglement_lib's protocol (``beta_vae.py``)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from constrained_vae.evaluation.metrics.sampling import (
    FactorSource,
    RepresentationFn,
    check_ints,
    codes_of,
    factor_sizes_of,
    groups_per_call,
    sample_factors,
)


def betavae_points(
    representation_fn: RepresentationFn,
    dataset: FactorSource,
    sizes: np.ndarray,
    rng: np.random.Generator,
    batch_size: int,
    num_points: int,
) -> tuple[np.ndarray, np.ndarray]:
    """BetaVAE features ``[num_points, code_dim]`` (mean |z1 − z2| over ``batch_size`` pairs that
    share one factor) and labels ``[num_points]`` (the shared factor)."""
    features, labels = [], []
    for start in range(0, num_points, groups_per_call(2 * batch_size)):
        k = min(groups_per_call(2 * batch_size), num_points - start)
        fixed = rng.integers(sizes.size, size=k)
        first = sample_factors(dataset, k * batch_size, rng, sizes).reshape(k, batch_size, -1)
        second = sample_factors(dataset, k * batch_size, rng, sizes).reshape(k, batch_size, -1)
        second[np.arange(k), :, fixed] = first[np.arange(k), :, fixed]
        codes = codes_of(representation_fn, dataset, np.concatenate([first, second]).reshape(2 * k * batch_size, -1))
        codes = codes.reshape(2, k, batch_size, -1)
        features.append(np.abs(codes[0] - codes[1]).mean(axis=1))
        labels.append(fixed)
    return np.concatenate(features), np.concatenate(labels)


def betavae_from_features(
    train_features: np.ndarray, train_labels: np.ndarray, eval_features: np.ndarray, eval_labels: np.ndarray, seed: int
) -> dict[str, float]:
    """The metric's classifier on BetaVAE points (:func:`betavae_points`): a linear classifier
    (sklearn ``LogisticRegression``, C = 1, lbfgs) predicts the shared factor from the features;
    ``train_accuracy`` on its training points, ``eval_accuracy`` on the others."""
    if np.unique(train_labels).size < 2:  # one class only (tiny num_train): predict it
        return {"train_accuracy": 1.0, "eval_accuracy": float(np.mean(eval_labels == train_labels[0]))}
    classifier = LogisticRegression(max_iter=1000, random_state=seed).fit(train_features, train_labels)
    return {
        "train_accuracy": float(np.mean(classifier.predict(train_features) == train_labels)),
        "eval_accuracy": float(np.mean(classifier.predict(eval_features) == eval_labels)),
    }


def betavae_score(
    representation_fn: RepresentationFn,
    dataset: FactorSource,
    *,
    seed: int = 0,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
) -> dict[str, float]:
    """The BetaVAE metric.

    Each point: pick a factor k uniformly, draw ``batch_size`` pairs of factor vectors that agree
    on k (everything else independent), and take the mean over pairs of |z(x1) − z(x2)| per code
    dimension; a linear classifier predicts k from it (:func:`betavae_from_features`).
    ``num_train`` points train it, ``num_eval`` fresh points test it; chance is 1/n_factors.
    Defaults and steps follow disentanglement_lib's ``beta_vae.py`` (batch 64, 10,000 / 5,000
    points); there the classifier ran with sklearn's defaults of the day, here ``max_iter`` is
    raised to 1,000 so that it converges on unscaled features.

    Invariant to permutations of the code dimensions (up to solver round-off); not to rescaling
    (the classifier is L2-regularised).

    Returns ``train_accuracy`` and ``eval_accuracy``.
    """
    check_ints(batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    sizes = factor_sizes_of(dataset)
    rng = np.random.default_rng(seed)
    train_x, train_y = betavae_points(representation_fn, dataset, sizes, rng, batch_size, num_train)
    eval_x, eval_y = betavae_points(representation_fn, dataset, sizes, rng, batch_size, num_eval)
    return betavae_from_features(train_x, train_y, eval_x, eval_y, seed)

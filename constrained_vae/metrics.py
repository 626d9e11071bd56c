"""Disentanglement scores of a representation, given a dataset with ground-truth factors.

Each metric is one function ``f(representation_fn, dataset, *, seed=0, **protocol) -> dict``:

- ``representation_fn`` maps a batch of observations (a torch tensor ``[n, *sample_shape]``) to
  codes ``[n, code_dim]`` (numpy or torch), e.g. a VAE's posterior mean;
- ``dataset`` has ``factor_sizes`` (list of ints), ``sample_factors(n, rng)`` (int ``[n, n_factors]``
  class indices; ``rng`` a numpy Generator) and ``observations(factors)`` (the tensor batch with
  those factors) — :class:`~constrained_vae.data.base.FactorDataset`;
- the protocol's numbers are keyword arguments whose defaults are the published protocol as
  disentanglement_lib runs it (Locatello et al., ICML 2019,
  https://github.com/google-research/disentanglement_lib, ``evaluation/metrics/`` and
  ``config/unsupervised_study_v1/metric_configs/``);
- ``seed`` fixes everything random (the factors drawn, the classifiers): same seed, same scores.

Scores are fractions in [0, 1] (accuracies, normalised mutual information, 1 − normalised
entropy); a score that is undefined for the representation or the dataset is NaN, and the result's
``undefined`` maps it to the reason (e.g. a FactorVAE score with no active code dimension).
Every observation batch goes through ``representation_fn`` in chunks of at most
:data:`OBSERVATIONS_PER_CALL` (a constant, so the draws depend only on the seed and the protocol).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal, Protocol

import joblib
import numpy as np
import scipy.stats
import torch
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score

__all__ = [
    "DCI_PREDICTORS",
    "METRICS",
    "OBSERVATIONS_PER_CALL",
    "FactorGrid",
    "FactorSource",
    "RepresentationFn",
    "betavae_score",
    "completeness",
    "dci",
    "disentanglement",
    "factorvae_score",
    "histogram_discretize",
    "mig",
    "oracle_representation",
    "random_representation",
]

RepresentationFn = Callable[[torch.Tensor], "np.ndarray | torch.Tensor"]
OBSERVATIONS_PER_CALL = 2048  # observations rendered and encoded at once (bounds memory, not results)


class FactorSource(Protocol):
    """What the metrics need of a dataset (a subset of :class:`~constrained_vae.data.base.FactorDataset`)."""

    factor_sizes: list[int]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def observations(self, factors: np.ndarray) -> torch.Tensor: ...


# ---------------------------------------------------------------------------- validation and codes


def _check_ints(minimum: int = 1, **values: int) -> None:
    """ValueError unless every value is an integer ≥ ``minimum`` (protocol counts)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def _factor_sizes(dataset: FactorSource) -> np.ndarray:
    """The dataset's factor sizes as int64 ``[n_factors]``; each factor needs at least 2 classes."""
    sizes = getattr(dataset, "factor_sizes", None)
    if sizes is None or not hasattr(dataset, "sample_factors") or not hasattr(dataset, "observations"):
        raise ValueError(
            f"{type(dataset).__name__} has no ground-truth factors: the metrics need factor_sizes, "
            "sample_factors(n, rng) and observations(factors)"
        )
    sizes = np.asarray(sizes)
    if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer) or (sizes < 2).any():
        raise ValueError(f"factor_sizes must be a non-empty list of integers ≥ 2, got {list(sizes)}")
    return sizes.astype(np.int64)


def _sample_factors(dataset: FactorSource, n: int, rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    """``n`` factor rows from the dataset, checked: int64 ``[n, n_factors]``, each class in range."""
    factors = np.asarray(dataset.sample_factors(n, rng))
    if factors.shape != (n, sizes.size) or not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"sample_factors({n}) must return integers of shape {(n, sizes.size)}, got {factors.shape}")
    if (factors < 0).any() or (factors >= sizes).any():
        raise ValueError(f"sample_factors returned classes outside the factor sizes {sizes.tolist()}")
    return factors.astype(np.int64, copy=True)


def _as_codes(output: Any, rows: int) -> np.ndarray:
    """A representation's output as finite float64 ``[rows, code_dim]``, else ValueError."""
    if isinstance(output, torch.Tensor):
        output = output.detach().cpu().numpy()
    codes = np.asarray(output)
    if not (np.issubdtype(codes.dtype, np.floating) or np.issubdtype(codes.dtype, np.integer)):
        raise ValueError(f"representation_fn must return numbers, got dtype {codes.dtype}")
    if codes.ndim != 2 or codes.shape[1] < 1:
        raise ValueError(f"representation_fn must return codes of shape [n, code_dim], got {codes.shape}")
    if codes.shape[0] != rows:
        raise ValueError(f"representation_fn returned {codes.shape[0]} rows for a batch of {rows} observations")
    codes = codes.astype(np.float64)
    if not np.isfinite(codes).all():
        raise ValueError("representation_fn returned NaN or infinite codes")
    return codes


def _codes_of(representation_fn: RepresentationFn, dataset: FactorSource, factors: np.ndarray) -> np.ndarray:
    """Codes of the observations with ``factors`` (int ``[n, n_factors]``): float64 ``[n, code_dim]``."""
    chunks = []
    for start in range(0, factors.shape[0], OBSERVATIONS_PER_CALL):
        rows = factors[start : start + OBSERVATIONS_PER_CALL]
        codes = _as_codes(representation_fn(dataset.observations(rows)), rows.shape[0])
        if chunks and codes.shape[1] != chunks[0].shape[1]:
            raise ValueError(f"representation_fn changed its code size from {chunks[0].shape[1]} to {codes.shape[1]}")
        chunks.append(codes)
    return np.concatenate(chunks)


def _groups_per_call(group_size: int) -> int:
    """How many groups of ``group_size`` observations to encode at once."""
    return max(1, OBSERVATIONS_PER_CALL // group_size)


# ---------------------------------------------------------------------------- BetaVAE score


def _betavae_points(
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
    for start in range(0, num_points, _groups_per_call(2 * batch_size)):
        k = min(_groups_per_call(2 * batch_size), num_points - start)
        fixed = rng.integers(sizes.size, size=k)
        first = _sample_factors(dataset, k * batch_size, rng, sizes).reshape(k, batch_size, -1)
        second = _sample_factors(dataset, k * batch_size, rng, sizes).reshape(k, batch_size, -1)
        second[np.arange(k), :, fixed] = first[np.arange(k), :, fixed]
        codes = _codes_of(representation_fn, dataset, np.concatenate([first, second]).reshape(2 * k * batch_size, -1))
        codes = codes.reshape(2, k, batch_size, -1)
        features.append(np.abs(codes[0] - codes[1]).mean(axis=1))
        labels.append(fixed)
    return np.concatenate(features), np.concatenate(labels)


def betavae_score(
    representation_fn: RepresentationFn,
    dataset: FactorSource,
    *,
    seed: int = 0,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
) -> dict[str, float]:
    """The BetaVAE metric (Higgins et al., "β-VAE: Learning Basic Visual Concepts with a Constrained
    Variational Framework", ICLR 2017).

    Each point: pick a factor k uniformly, draw ``batch_size`` pairs of factor vectors that agree
    on k (everything else independent), and take the mean over pairs of |z(x1) − z(x2)| per code
    dimension; a linear classifier (sklearn ``LogisticRegression``, C = 1, lbfgs) predicts k from
    it. ``num_train`` points train it, ``num_eval`` fresh points test it; chance is 1/n_factors.
    Defaults and steps follow disentanglement_lib's ``beta_vae.py`` (batch 64, 10,000 / 5,000
    points); there the classifier ran with sklearn's defaults of the day, here ``max_iter`` is
    raised to 1,000 so that it converges on unscaled features.

    Invariant to permutations of the code dimensions (up to solver round-off); not to rescaling
    (the classifier is L2-regularised).

    Returns ``train_accuracy`` and ``eval_accuracy``.
    """
    _check_ints(batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    sizes = _factor_sizes(dataset)
    rng = np.random.default_rng(seed)
    train_x, train_y = _betavae_points(representation_fn, dataset, sizes, rng, batch_size, num_train)
    eval_x, eval_y = _betavae_points(representation_fn, dataset, sizes, rng, batch_size, num_eval)
    if np.unique(train_y).size < 2:  # one class only (tiny num_train): predict it
        return {"train_accuracy": 1.0, "eval_accuracy": float(np.mean(eval_y == train_y[0]))}
    classifier = LogisticRegression(max_iter=1000, random_state=seed).fit(train_x, train_y)
    return {
        "train_accuracy": float(np.mean(classifier.predict(train_x) == train_y)),
        "eval_accuracy": float(np.mean(classifier.predict(eval_x) == eval_y)),
    }


# ---------------------------------------------------------------------------- FactorVAE score


def _factorvae_votes(
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
    for start in range(0, num_points, _groups_per_call(batch_size)):
        k = min(_groups_per_call(batch_size), num_points - start)
        fixed = rng.integers(sizes.size, size=k)
        factors = _sample_factors(dataset, k * batch_size, rng, sizes).reshape(k, batch_size, -1)
        factors[np.arange(k), :, fixed] = factors[np.arange(k), :1, fixed]
        codes = _codes_of(representation_fn, dataset, factors.reshape(k * batch_size, -1)).reshape(k, batch_size, -1)
        normalised = codes[:, :, active_dims] / scale[active_dims]
        least_varying = active_dims[np.argmin(normalised.var(axis=1, ddof=1), axis=1)]
        np.add.at(votes, (fixed, least_varying), 1)
    return votes


def _majority_vote_accuracy(votes: np.ndarray, factor_of_dim: np.ndarray) -> float:
    """Fraction of ``votes`` ``[n_factors, code_dim]`` whose factor is ``factor_of_dim[dim]``."""
    return float(votes[factor_of_dim, np.arange(votes.shape[1])].sum() / votes.sum())


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
    """The FactorVAE metric (Kim & Mnih, "Disentangling by Factorising", ICML 2018).

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
    _check_ints(num_train=num_train, num_eval=num_eval)
    _check_ints(2, batch_size=batch_size, num_variance_estimate=num_variance_estimate)  # variances need two codes
    if not (np.isfinite(prune_threshold) and prune_threshold >= 0):
        raise ValueError(f"prune_threshold must be a non-negative number, got {prune_threshold!r}")
    sizes = _factor_sizes(dataset)
    rng = np.random.default_rng(seed)
    sample = _codes_of(representation_fn, dataset, _sample_factors(dataset, num_variance_estimate, rng, sizes))
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
    train_votes = _factorvae_votes(representation_fn, dataset, sizes, rng, batch_size, num_train, scale, active)
    factor_of_dim = np.argmax(train_votes, axis=0)
    eval_votes = _factorvae_votes(representation_fn, dataset, sizes, rng, batch_size, num_eval, scale, active)
    return {
        "train_accuracy": _majority_vote_accuracy(train_votes, factor_of_dim),
        "eval_accuracy": _majority_vote_accuracy(eval_votes, factor_of_dim),
        "num_active_dims": int(active.sum()),
    }


# ---------------------------------------------------------------------------- MIG


def histogram_discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Each column of ``codes`` ``[n, d]`` cut into ``num_bins`` equal-width bins over its own
    range: int ``[n, d]`` bin numbers 1..num_bins (disentanglement_lib's histogram discretizer)."""
    binned = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, j], bins=num_bins)
        binned[:, j] = np.digitize(codes[:, j], edges[:-1])
    return binned


def mig(
    representation_fn: RepresentationFn,
    dataset: FactorSource,
    *,
    seed: int = 0,
    num_train: int = 10000,
    num_bins: int = 20,
) -> dict[str, Any]:
    """Mutual Information Gap (Chen et al., "Isolating Sources of Disentanglement in Variational
    Autoencoders", NeurIPS 2018), as disentanglement_lib computes it.

    On ``num_train`` random observations, each code dimension is discretised into ``num_bins``
    equal-width bins (:func:`histogram_discretize`) and its mutual information with each factor's
    class is taken (sklearn ``mutual_info_score``, nats). For each factor: the gap between the two
    code dimensions with the most information about it, divided by the factor's entropy; MIG is the
    mean over factors. Defaults follow disentanglement_lib's ``mig.py`` (10,000 points, 20 bins).
    With one code dimension the runner-up's information is taken as 0.

    With 20 bins a factor of more than 20 classes cannot be fully captured by one binned code: even
    a perfect code scores log 20 / log 40 ≈ 0.81 on a 40-class factor. Invariant to permutations and
    to positive rescaling (and shifts) of code dimensions.

    Returns ``mig`` and ``mig_per_factor`` (list, in the dataset's factor order).
    """
    _check_ints(num_train=num_train)
    _check_ints(2, num_bins=num_bins)
    sizes = _factor_sizes(dataset)
    rng = np.random.default_rng(seed)
    factors = _sample_factors(dataset, num_train, rng, sizes)
    binned = histogram_discretize(_codes_of(representation_fn, dataset, factors), num_bins)
    info = np.array(
        [[mutual_info_score(factors[:, f], binned[:, j]) for f in range(sizes.size)] for j in range(binned.shape[1])]
    )
    entropy = np.array([mutual_info_score(factors[:, f], factors[:, f]) for f in range(sizes.size)])
    if (entropy <= 0).any():
        constant = [int(f) for f in np.flatnonzero(entropy <= 0)]
        raise ValueError(f"factor(s) {constant} took a single value in {num_train} samples; raise num_train")
    ranked = np.sort(info, axis=0)[::-1]
    runner_up = ranked[1] if ranked.shape[0] > 1 else np.zeros(sizes.size)
    per_factor = (ranked[0] - runner_up) / entropy
    return {"mig": float(per_factor.mean()), "mig_per_factor": per_factor.tolist()}


# ---------------------------------------------------------------------------- DCI


def disentanglement(importance: np.ndarray) -> float:
    """DCI disentanglement of an importance matrix ``[code_dim, n_factors]``: for each code,
    1 − entropy (base n_factors) of its importance over factors, weighted by the code's share of
    the total importance (Eastwood & Williams 2018). NaN with one factor: an entropy in base 1 is
    undefined (0/0), and so is the question of which factor a code is specific to."""
    if importance.shape[1] == 1:
        return math.nan
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
    weights = importance.sum(axis=1) if importance.sum() > 0 else np.ones(importance.shape[0])
    return float(np.sum(per_code * weights / weights.sum()))


def completeness(importance: np.ndarray) -> float:
    """DCI completeness of an importance matrix ``[code_dim, n_factors]``: for each factor,
    1 − entropy (base code_dim) of its importance over codes, weighted by the factor's share
    (Eastwood & Williams 2018). A single code dimension is complete by definition (1)."""
    if importance.shape[0] == 1:
        return 1.0
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
    weights = importance.sum(axis=0) if importance.sum() > 0 else np.ones(importance.shape[1])
    return float(np.sum(per_factor * weights / weights.sum()))


DCIPredictor = Literal["boosting", "forest"]
DCI_PREDICTORS: dict[str, tuple[type, dict[str, Any]]] = {
    # disentanglement_lib's ``GradientBoostingClassifier()``: scikit-learn's defaults, written out
    "boosting": (
        GradientBoostingClassifier,
        dict(n_estimators=100, learning_rate=0.1, max_depth=3, min_samples_leaf=1, subsample=1.0, max_features=None),
    ),
    "forest": (RandomForestClassifier, dict(n_estimators=50, min_samples_leaf=5, max_features=None)),
}


def _dci_fit(
    predictor: str,
    seed: int,
    train_codes: np.ndarray,
    train_labels: np.ndarray,
    test_codes: np.ndarray,
    test_labels: np.ndarray,
) -> tuple[np.ndarray, float, float]:
    """One factor's DCI classifier: its importances ``[code_dim]``, train and test accuracy."""
    classifier_type, settings = DCI_PREDICTORS[predictor]
    classifier = classifier_type(**settings, random_state=seed)
    with warnings.catch_warnings():  # factor classes are classes, however many there are
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        classifier.fit(train_codes, train_labels)
    return (
        np.abs(classifier.feature_importances_),
        float(np.mean(classifier.predict(train_codes) == train_labels)),
        float(np.mean(classifier.predict(test_codes) == test_labels)),
    )


def dci(
    representation_fn: RepresentationFn,
    dataset: FactorSource,
    *,
    seed: int = 0,
    num_train: int = 10000,
    num_test: int = 5000,
    predictor: DCIPredictor = "boosting",
    n_jobs: int = -1,
) -> dict[str, Any]:
    """Disentanglement, Completeness and Informativeness (Eastwood & Williams, "A Framework for the
    Quantitative Evaluation of Disentangled Representations", ICLR 2018), as disentanglement_lib's
    ``dci.py`` computes it (Locatello et al. 2019).

    One classifier per factor predicts its class from the codes of ``num_train`` random
    observations; the importance matrix ``R[code, factor]`` is each classifier's impurity-based
    ``feature_importances_`` (each column sums to 1). From it, :func:`disentanglement` and
    :func:`completeness`; informativeness is the classifiers' mean accuracy on ``num_test`` fresh
    observations (``informativeness``, = ``informativeness_test``; on the training points,
    ``informativeness_train``). Chance informativeness is the mean of 1/size over factors.

    The predictor (its settings: :data:`DCI_PREDICTORS`). The default, ``"boosting"``, is
    disentanglement_lib's: sklearn's ``GradientBoostingClassifier`` at its defaults (100 stages of
    depth-3 trees, learning rate 0.1, one tree per class per stage), so scores compare with
    published ones. It is slow on many-class factors: dSprites' 40 + 32 + 32 + 6 + 3 classes make
    11,300 trees; 10-D codes at the published size take 230 s on 2 CPU cores (414 s in series).
    ``"forest"`` is a random forest (sklearn ``RandomForestClassifier``) of 50 trees that, like the
    boosted trees, consider every code dimension at every split, with leaves of at least 5 points:
    one of the original paper's two regressors, 10 to 20 times faster (23 s), but its scores are not
    the published protocol's (on the rotated oracle, disentanglement 0.13 against 0.25). The
    factors' classifiers are fitted in parallel over ``n_jobs`` processes (joblib's convention: −1
    for every core), the factor with most classes first; the scores do not depend on ``n_jobs``.

    With one factor, disentanglement (1 − an entropy in base n_factors) is undefined: it is NaN and
    ``undefined`` says why (completeness and informativeness are defined).

    Invariant to positive rescaling (and shifts) of code dimensions: trees split on thresholds and
    every dimension is considered at every split. Invariant to permutations up to which of two
    equally good splits a tree takes first (measured: scores move by ~1e-3).

    Returns ``disentanglement``, ``completeness``, ``informativeness``, ``informativeness_train``,
    ``informativeness_test``, ``informativeness_per_factor`` (test accuracies),
    ``importance_matrix`` (``[code_dim][n_factors]`` nested lists), ``predictor_settings`` (the
    classifier and its keyword arguments) and, when a score is NaN, ``undefined`` (score → reason).
    """
    _check_ints(num_train=num_train, num_test=num_test)
    if predictor not in DCI_PREDICTORS:
        raise ValueError(f"predictor must be one of {', '.join(map(repr, DCI_PREDICTORS))}, got {predictor!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer (-1: every core), got {n_jobs!r}")
    sizes = _factor_sizes(dataset)
    rng = np.random.default_rng(seed)
    train_factors = _sample_factors(dataset, num_train, rng, sizes)
    test_factors = _sample_factors(dataset, num_test, rng, sizes)
    train_codes = _codes_of(representation_fn, dataset, train_factors)
    test_codes = _codes_of(representation_fn, dataset, test_factors)
    order = np.argsort(-sizes, kind="stable")  # most classes (longest fit) first: the workers end together
    fits = joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(_dci_fit)(predictor, seed, train_codes, train_factors[:, f], test_codes, test_factors[:, f])
        for f in order
    )
    importance = np.zeros((train_codes.shape[1], sizes.size))
    train_accuracy, test_accuracy = np.zeros(sizes.size), np.zeros(sizes.size)
    for f, (column, train_fraction, test_fraction) in zip(order, fits, strict=True):
        importance[:, f] = column
        train_accuracy[f], test_accuracy[f] = train_fraction, test_fraction
    classifier_type, settings = DCI_PREDICTORS[predictor]
    result = {
        "disentanglement": disentanglement(importance),
        "completeness": completeness(importance),
        "informativeness": float(np.mean(test_accuracy)),
        "informativeness_train": float(np.mean(train_accuracy)),
        "informativeness_test": float(np.mean(test_accuracy)),
        "informativeness_per_factor": test_accuracy.tolist(),
        "importance_matrix": importance.tolist(),
        "predictor_settings": {"classifier": f"sklearn.ensemble.{classifier_type.__name__}", **settings},
    }
    if sizes.size == 1:
        result["undefined"] = {
            "disentanglement": "one factor: disentanglement (1 − entropy in base n_factors of each code's "
            "importance over factors) needs at least two factors"
        }
    return result


# ---------------------------------------------------------------------------- reference representations


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


METRICS: dict[str, Callable[..., dict[str, Any]]] = {
    "betavae_score": betavae_score,
    "factorvae_score": factorvae_score,
    "mig": mig,
    "dci": dci,
}

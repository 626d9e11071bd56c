"""Disentanglement, Completeness and Informativeness (Eastwood & Williams, "A Framework for the
Quantitative Evaluation of Disentangled Representations", ICLR 2018, Section 3), at
disentanglement_lib's protocol (``dci.py``, Locatello et al. 2019)."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import joblib
import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

from constrained_vae.evaluation.metrics.sampling import (
    FactorSource,
    RepresentationFn,
    check_ints,
    factor_sizes_of,
    labelled_codes,
)

DCIPredictor = Literal["boosting", "forest"]
DCI_PREDICTORS: dict[str, tuple[type, dict[str, Any]]] = {
    # disentanglement_lib's ``GradientBoostingClassifier()``: scikit-learn's defaults, written out
    "boosting": (
        GradientBoostingClassifier,
        dict(n_estimators=100, learning_rate=0.1, max_depth=3, min_samples_leaf=1, subsample=1.0, max_features=None),
    ),
    "forest": (RandomForestClassifier, dict(n_estimators=50, min_samples_leaf=5, max_features=None)),
}


def disentanglement(importance: np.ndarray) -> float:
    """DCI disentanglement of an importance matrix ``[code_dim, n_factors]``: for each code,
    1 − entropy (base n_factors) of its importance over factors, weighted by the code's share of
    the total importance (Eastwood & Williams 2018, Eq. 1–2). NaN with one factor: an entropy in
    base 1 is undefined (0/0), and so is the question of which factor a code is specific to."""
    if importance.shape[1] == 1:
        return math.nan
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
    weights = importance.sum(axis=1) if importance.sum() > 0 else np.ones(importance.shape[0])
    return float(np.sum(per_code * weights / weights.sum()))


def completeness(importance: np.ndarray) -> float:
    """DCI completeness of an importance matrix ``[code_dim, n_factors]``: for each factor,
    1 − entropy (base code_dim) of its importance over codes, weighted by the factor's share
    (Eastwood & Williams 2018, Eq. 3). A single code dimension is complete by definition (1)."""
    if importance.shape[0] == 1:
        return 1.0
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
    weights = importance.sum(axis=0) if importance.sum() > 0 else np.ones(importance.shape[1])
    return float(np.sum(per_factor * weights / weights.sum()))


def _fit_factor(
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


def check_predictor(predictor: str, n_jobs: int) -> None:
    """ValueError for an unknown predictor or an n_jobs joblib cannot take."""
    if predictor not in DCI_PREDICTORS:
        raise ValueError(f"predictor must be one of {', '.join(map(repr, DCI_PREDICTORS))}, got {predictor!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer (-1: every core), got {n_jobs!r}")


def dci_from_codes(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    *,
    factor_sizes: np.ndarray,
    seed: int = 0,
    predictor: DCIPredictor = "boosting",
    n_jobs: int = -1,
) -> dict[str, Any]:
    """DCI of codes ``[n, code_dim]`` against factor classes int ``[n, n_factors]`` (see :func:`dci`).

    The factors' classifiers are fitted in parallel over ``n_jobs`` processes (joblib's convention:
    −1 for every core), the factor with most classes (``factor_sizes``) first; the scores do not
    depend on ``n_jobs``.
    """
    check_predictor(predictor, n_jobs)
    sizes = np.asarray(factor_sizes, dtype=np.int64)
    order = np.argsort(-sizes, kind="stable")  # most classes (longest fit) first: the workers end together
    fits = joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(_fit_factor)(predictor, seed, train_codes, train_factors[:, f], test_codes, test_factors[:, f])
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
    """DCI on ``num_train`` and ``num_test`` random observations.

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
    11,300 trees (``docs/benchmarks.md`` gives its time on 2 CPU cores). ``"forest"`` is a random
    forest (sklearn ``RandomForestClassifier``) of 50 trees that, like the boosted trees, consider
    every code dimension at every split, with leaves of at least 5 points: one of the original
    paper's two regressors, 10 to 20 times faster, but its scores are not the published protocol's
    (on the rotated oracle, disentanglement 0.13 against 0.25).

    With one factor, disentanglement (1 − an entropy in base n_factors) is undefined: it is NaN and
    ``undefined`` says why (completeness and informativeness are defined).

    Invariant to positive rescaling (and shifts) of code dimensions: trees split on thresholds and
    every dimension is considered at every split. Invariant to permutations up to which of two
    equally good splits a tree takes first (scores move by ~1e-3).

    Returns ``disentanglement``, ``completeness``, ``informativeness``, ``informativeness_train``,
    ``informativeness_test``, ``informativeness_per_factor`` (test accuracies),
    ``importance_matrix`` (``[code_dim][n_factors]`` nested lists), ``predictor_settings`` (the
    classifier and its keyword arguments) and, when a score is NaN, ``undefined`` (score → reason).
    """
    check_ints(num_train=num_train, num_test=num_test)
    check_predictor(predictor, n_jobs)
    sizes = factor_sizes_of(dataset)
    rng = np.random.default_rng(seed)
    train_factors, train_codes = labelled_codes(representation_fn, dataset, num_train, rng)
    test_factors, test_codes = labelled_codes(representation_fn, dataset, num_test, rng)
    return dci_from_codes(
        train_codes,
        train_factors,
        test_codes,
        test_factors,
        factor_sizes=sizes,
        seed=seed,
        predictor=predictor,
        n_jobs=n_jobs,
    )

"""The SAP score, Separated Attribute Predictability (Kumar, Sattigeri & Balakrishnan, "Variational
Inference of Disentangled Latent Concepts from Unlabeled Observations", ICLR 2018, Section 3), at
disentanglement_lib's protocol (``evaluation/metrics/sap_score.py``, Locatello et al. 2019).

The protocol's numbers are disentanglement_lib's study settings,
``disentanglement_lib/config/unsupervised_study_v1/metric_configs/sap_score.gin``::

    sap_score.num_train=10000
    sap_score.num_test=5000
    sap_score.continuous_factors=False

The core, :func:`sap_from_codes`, takes pure arrays (numpy and scikit-learn): codes float
``[n, code_dim]``, factors int ``[n, n_factors]`` of class indices; :func:`sap_score` draws them
from a representation and a dataset.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.svm import LinearSVC

from constrained_vae.evaluation.metrics.sampling import (
    FactorSource,
    RepresentationFn,
    check_codes_and_factors,
    check_ints,
    train_and_test_codes,
)

NUM_TRAIN = 10000  # sap_score.num_train (the gin file above)
NUM_TEST = 5000  # sap_score.num_test (same file)
CONTINUOUS_FACTORS = False  # sap_score.continuous_factors (same file)

# disentanglement_lib's ``svm.LinearSVC(C=0.01, class_weight="balanced")``; the rest is scikit-learn's
# defaults written out. ``dual=False`` (the primal) is what ``dual="auto"`` picks for one feature and
# many points; it solves the same problem as the dual of scikit-learn < 1.5, deterministically.
SVC_SETTINGS: dict[str, Any] = dict(
    C=0.01,
    class_weight="balanced",
    penalty="l2",
    loss="squared_hinge",
    dual=False,
    tol=1e-4,
    multi_class="ovr",
    fit_intercept=True,
    intercept_scaling=1.0,
    max_iter=1000,
)
VARIANCE_FLOOR = 1e-12  # a code dimension of (ddof=1) variance at most this scores 0 on a continuous factor


def squared_correlations(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Squared Pearson correlation of each code dimension with each factor, ``[code_dim, n_factors]``:
    cov(z_i, v_j)² / (var z_i · var v_j), the R² of a linear regression of v_j on z_i alone. A code
    dimension whose (ddof=1) variance is at most :data:`VARIANCE_FLOOR` scores 0; a constant factor
    has a NaN column (0/0)."""
    rows = codes.shape[0]
    centred_codes = codes - codes.mean(axis=0)
    centred_factors = factors - factors.mean(axis=0)
    covariance = centred_codes.T @ centred_factors / (rows - 1)
    code_variance = np.einsum("ni,ni->i", centred_codes, centred_codes) / (rows - 1)
    factor_variance = np.einsum("nj,nj->j", centred_factors, centred_factors) / (rows - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = covariance**2 / np.outer(code_variance, factor_variance)
    scores[code_variance <= VARIANCE_FLOOR, :] = 0.0
    scores[:, factor_variance <= 0] = math.nan
    return scores


def single_code_accuracies(
    train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray, test_labels: np.ndarray
) -> np.ndarray:
    """For each code dimension alone, the test accuracy ``[code_dim]`` of a linear SVM
    (:data:`SVC_SETTINGS`: one-vs-rest, class-balanced weights, C = 0.01) trained to predict one
    factor's class from that dimension on the training sample. Needs two classes in ``train_labels``."""
    accuracies = np.empty(train_codes.shape[1])
    for i in range(train_codes.shape[1]):
        with warnings.catch_warnings():  # factor classes are classes, however many there are
            warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
            classifier = LinearSVC(**SVC_SETTINGS).fit(train_codes[:, i : i + 1], train_labels)
        accuracies[i] = np.mean(classifier.predict(test_codes[:, i : i + 1]) == test_labels)
    return accuracies


def sap_score_matrix(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    *,
    continuous_factors: bool = CONTINUOUS_FACTORS,
) -> np.ndarray:
    """SAP's score matrix ``S[code, factor]`` (Kumar et al. 2018, Section 3): how well each code
    dimension alone predicts each factor. Discrete factors: the test accuracy of
    :func:`single_code_accuracies`. Continuous factors: the squared correlation on the training
    sample (:func:`squared_correlations`; the test sample is not used). A factor with a single class
    in the training sample has a NaN column (nothing to classify, or a 0/0 correlation)."""
    if continuous_factors:
        return squared_correlations(train_codes, train_factors.astype(np.float64))
    scores = np.full((train_codes.shape[1], train_factors.shape[1]), math.nan)
    for j in range(train_factors.shape[1]):
        if np.unique(train_factors[:, j]).size > 1:
            scores[:, j] = single_code_accuracies(train_codes, train_factors[:, j], test_codes, test_factors[:, j])
    return scores


def _check_continuous_factors(continuous_factors: bool) -> None:
    if not isinstance(continuous_factors, (bool, np.bool_)):
        raise ValueError(f"continuous_factors must be True or False, got {continuous_factors!r}")


def sap_from_codes(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    *,
    continuous_factors: bool = CONTINUOUS_FACTORS,
) -> dict[str, Any]:
    """The SAP score of codes ``[n, code_dim]`` against factor classes int ``[n, n_factors]``, on a
    training and a test sample (disentanglement_lib draws :data:`NUM_TRAIN` and :data:`NUM_TEST`).

    The score matrix ``S[i, j]`` says how well code dimension i alone predicts factor j
    (:func:`sap_score_matrix`): with discrete factors (``continuous_factors=False``, the study's
    setting), the test accuracy of a linear SVM fitted on code i alone (scikit-learn ``LinearSVC``,
    C = 0.01, class-balanced weights, one-vs-rest over the factor's classes); with continuous factors,
    the squared correlation of code i and factor j's class index on the training sample. For each
    factor, the gap between the two largest entries of its column; SAP is the mean gap over factors
    (Kumar et al. 2018, Section 3). Between 0 and 1; a code whose every dimension predicts every
    factor equally (or at chance) scores 0.

    Where disentanglement_lib's code differs from the paper this follows the code: the paper fits
    thresholds on code i and takes the balanced accuracy on held-out data; the code fits the SVM above
    (balanced class weights in training, plain accuracy on the test sample). A one-dimensional linear
    one-vs-rest classifier, regularised by C = 0.01, picks out few of the middle classes of a factor of
    many classes, so even a perfect code scores well below 1 on such a factor.

    Invariant to permutations of code dimensions. The continuous score is also invariant to rescaling
    (and shifts); the discrete one is not: C = 0.01 shrinks the SVM's weight, so a code dimension of
    small scale predicts worse than the same dimension enlarged, and liblinear penalises the intercept
    too, so a shift moves it as well.

    Undefined scores are NaN, and ``undefined`` maps each to the reason: with one code dimension
    (no runner-up to take a gap from), or for a factor with a single class in the training sample;
    ``sap`` is NaN if any factor's gap is.

    Returns ``sap``, ``sap_per_factor`` (list, in factor order), ``score_matrix`` (``[code_dim][n_factors]``
    nested lists), ``continuous_factors`` and, when a score is NaN, ``undefined`` (score → reason).
    """
    train_codes, train_factors, test_codes, test_factors = check_codes_and_factors(
        train_codes, train_factors, test_codes, test_factors
    )
    _check_continuous_factors(continuous_factors)
    scores = sap_score_matrix(
        train_codes, train_factors, test_codes, test_factors, continuous_factors=bool(continuous_factors)
    )
    n_factors = train_factors.shape[1]
    undefined: dict[str, str] = {}
    if scores.shape[0] < 2:
        per_factor = np.full(n_factors, math.nan)
        undefined["sap"] = undefined["sap_per_factor"] = (
            "one code dimension: SAP is the gap between the two code dimensions that best predict a "
            "factor and needs at least two"
        )
    else:
        ranked = np.sort(scores, axis=0)  # NaN columns stay NaN
        per_factor = ranked[-1] - ranked[-2]
        constant = [int(j) for j in range(n_factors) if np.unique(train_factors[:, j]).size < 2]
        if constant:
            undefined["sap"] = undefined["sap_per_factor"] = (
                f"factor(s) {constant} took a single class in the {len(train_factors)} training points: "
                "nothing for a code to predict (raise num_train)"
            )
    result: dict[str, Any] = {
        "sap": float(np.mean(per_factor)),
        "sap_per_factor": per_factor.tolist(),
        "score_matrix": scores.tolist(),
        "continuous_factors": bool(continuous_factors),
    }
    if undefined:
        result["undefined"] = undefined
    return result


def sap_score(
    representation_fn: RepresentationFn,
    dataset: FactorSource,
    *,
    seed: int = 0,
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_TEST,
    continuous_factors: bool = CONTINUOUS_FACTORS,
) -> dict[str, Any]:
    """The SAP score (:func:`sap_from_codes`) on ``num_train`` random observations, whose codes train
    each code dimension's classifier, and ``num_test`` fresh ones, on which it is scored; drawn as
    disentanglement_lib's ``compute_sap`` draws them (training points, then test points, from one
    generator). Defaults: disentanglement_lib's study (10,000 and 5,000 points, discrete factors).

    With discrete factors each factor's gap is a difference of test accuracies, so it is at most 1
    minus the runner-up dimension's accuracy, and a dimension that knows nothing of the factor still
    predicts it at chance, about 1/k on a balanced k-class factor: a perfect code scores at most about
    0.5 on a binary factor, 1 − 1/k on a k-class one. On many classes the one dimension's regularised
    SVM falls far short of that: on dSprites' factors (``benchmarks/metric_baselines.py``) the oracle
    predicts shape (3 classes) perfectly, scale (6) at 0.5 and orientation and position (40, 32, 32)
    barely above chance (0.05 to 0.07), for a SAP of 0.22. Compare scores with each other, not with 1.
    Invariant to permutations of code dimensions, not to rescaling or shifting them (the discrete
    score's SVM penalises its weight and its intercept).

    Returns ``sap``, ``sap_per_factor`` (list, in the dataset's factor order), ``score_matrix``
    (``[code_dim][n_factors]`` nested lists), ``continuous_factors`` and, when a score is NaN,
    ``undefined`` (score → reason).
    """
    check_ints(2, num_train=num_train, num_test=num_test)
    _check_continuous_factors(continuous_factors)
    sample = train_and_test_codes(representation_fn, dataset, num_train, num_test, seed)
    return sap_from_codes(*sample, continuous_factors=continuous_factors)

"""Modularity and explicitness (Ridgeway & Mozer, "Learning Deep Disentangled Embeddings with the
F-Statistic Loss", NeurIPS 2018, Section 3), at disentanglement_lib's protocol
(``evaluation/metrics/modularity_explicitness.py``, Locatello et al. 2019).

The protocol's numbers are disentanglement_lib's study settings,
``disentanglement_lib/config/unsupervised_study_v1/metric_configs/modularity_explicitness.gin``::

    modularity_explicitness.num_train=10000
    modularity_explicitness.num_test=5000
    discretizer.discretizer_fn = @histogram_discretizer
    discretizer.num_bins = 20

The core, :func:`modularity_explicitness_from_codes`, takes pure arrays (numpy, scipy and scikit-learn):
codes float ``[n, code_dim]``, factors int ``[n, n_factors]`` of class indices;
:func:`modularity_explicitness` draws them from a representation and a dataset.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from constrained_vae.evaluation.metrics.mig import histogram_discretize, mutual_information
from constrained_vae.evaluation.metrics.sampling import (
    FactorSource,
    RepresentationFn,
    check_codes_and_factors,
    check_ints,
    train_and_test_codes,
)

NUM_TRAIN = 10000  # modularity_explicitness.num_train (the gin file above)
NUM_TEST = 5000  # modularity_explicitness.num_test (same file)
DISCRETIZER = "histogram_discretizer"  # discretizer.discretizer_fn = @histogram_discretizer (same file)
NUM_BINS = 20  # discretizer.num_bins (same file)

# disentanglement_lib's ``linear_model.LogisticRegression()`` as it ran in its study (scikit-learn < 0.22,
# whose defaults were solver="liblinear", multi_class="ovr"): one binary L2-penalised logistic regression
# per class (one in all for two classes), C = 1. scikit-learn ≥ 0.22 changed the defaults to a multinomial
# lbfgs fit, so the same line now computes another classifier; the Ridgeway & Mozer paper's is one-vs-rest.
LOGISTIC_REGRESSION_SETTINGS: dict[str, Any] = dict(
    solver="liblinear", C=1.0, tol=1e-4, fit_intercept=True, intercept_scaling=1.0, max_iter=100
)


def modularity_per_code(mutual_information: np.ndarray) -> np.ndarray:
    """Each code's modularity from the mutual information ``[code_dim, n_factors]`` of codes and factors:
    1 − δ_i, where δ_i = Σ_{j ≠ top} m_ij² / ((n_factors − 1) · m_i,top²) is the deviation of code i's
    squared information from an ideal code's, which informs about its top factor alone (Ridgeway &
    Mozer 2018, Section 3). A code with no information about any factor scores 0 (disentanglement_lib's
    convention; the paper's formula is 0/0). With one factor, every code is NaN (a division by
    n_factors − 1 = 0)."""
    squared = np.square(np.asarray(mutual_information, dtype=np.float64))
    n_codes, n_factors = squared.shape
    if n_factors == 1:
        return np.full(n_codes, math.nan)
    top = squared.max(axis=1)
    per_code = np.zeros(n_codes)
    informative = top > 0
    relative = squared[informative] / top[informative, None]  # the top factor's entry is 1
    per_code[informative] = 1.0 - (relative.sum(axis=1) - 1.0) / (n_factors - 1)
    return per_code


def modularity(mutual_information: np.ndarray) -> float:
    """Modularity of codes with mutual information ``[code_dim, n_factors]``: the mean over codes of
    :func:`modularity_per_code` (Ridgeway & Mozer 2018, Section 3). NaN with one factor."""
    return float(np.mean(modularity_per_code(mutual_information)))


def standardise(train_codes: np.ndarray, test_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples' codes centred and scaled by the training sample's mean and (ddof=0) standard
    deviation, per dimension. A dimension constant on the training sample is only centred (its scale
    taken as 1), where disentanglement_lib would divide by 0."""
    mean, scale = train_codes.mean(axis=0), train_codes.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (train_codes - mean) / scale, (test_codes - mean) / scale


def _one_vs_rest_probabilities(classifiers: list[LogisticRegression], codes: np.ndarray) -> np.ndarray:
    """Class probabilities ``[n, n_classes]`` of one-vs-rest logistic regressions: each class's
    logistic, normalised to sum to 1 over classes (a single classifier: ``[1 − p, p]``)."""
    positive = expit(np.stack([classifier.decision_function(codes) for classifier in classifiers], axis=1))
    if len(classifiers) == 1:
        return np.concatenate([1.0 - positive, positive], axis=1)
    return positive / positive.sum(axis=1, keepdims=True)


def _mean_auc(classes: np.ndarray, probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean over ``classes`` of the ROC-AUC of each class's probability column against "is this
    class", over the classes with both positive and negative points in ``labels`` (NaN if none)."""
    aucs = [
        roc_auc_score(labels == value, probabilities[:, k])
        for k, value in enumerate(classes)
        if 0 < np.count_nonzero(labels == value) < labels.size
    ]
    return float(np.mean(aucs)) if aucs else math.nan


def explicitness_per_factor(
    train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray, test_labels: np.ndarray
) -> tuple[float, float]:
    """One factor's explicitness (Ridgeway & Mozer 2018, Section 3): one-vs-rest logistic regressions
    (:data:`LOGISTIC_REGRESSION_SETTINGS`) predict the factor's class from the whole (standardised)
    code on the training sample; the score is the mean over classes of the ROC-AUC of each class's
    probability, on the training and on the test sample. 0.5 is chance, 1 a perfect ranking.

    Classes absent from the test sample are left out of its mean (test points of a class the
    training sample lacks count as negatives of every class); disentanglement_lib fails, or pairs the
    wrong columns, when the two samples' class sets differ. NaN when the training sample has a single
    class (nothing to fit), or the test sample does (no ROC curve)."""
    classes = np.unique(train_labels)
    if classes.size < 2:
        return math.nan, math.nan
    positives = classes[1:] if classes.size == 2 else classes  # two classes: one classifier for both
    classifiers = [
        LogisticRegression(**LOGISTIC_REGRESSION_SETTINGS).fit(train_codes, (train_labels == value).astype(np.int64))
        for value in positives
    ]
    return (
        _mean_auc(classes, _one_vs_rest_probabilities(classifiers, train_codes), train_labels),
        _mean_auc(classes, _one_vs_rest_probabilities(classifiers, test_codes), test_labels),
    )


def modularity_explicitness_from_codes(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    *,
    num_bins: int = NUM_BINS,
) -> dict[str, Any]:
    """Modularity and explicitness of codes ``[n, code_dim]`` against factor classes int
    ``[n, n_factors]``, on a training and a test sample (disentanglement_lib draws :data:`NUM_TRAIN`
    and :data:`NUM_TEST`).

    Modularity (Ridgeway & Mozer 2018, Section 3): each training code dimension is cut into
    ``num_bins`` equal-width bins over its range (the histogram discretizer, MIG's
    ``histogram_discretize``) and its mutual information with each factor's class taken (sklearn
    ``mutual_info_score``, nats); :func:`modularity` of that matrix. A modular code informs about
    one factor only (however much): 1; a code informing equally about all factors: 0, as is a code
    informing about none. Hence modularity is not the same with unused dimensions added (each scores
    0), nor does it ask that every factor be captured.

    Explicitness (Section 3): the codes are standardised by the training sample's mean and standard
    deviation (:func:`standardise`), and :func:`explicitness_per_factor` is taken for each factor:
    the mean one-vs-rest ROC-AUC of logistic regressions on the whole code, on the training and the
    test sample; the scores are the means over factors. 0.5 is chance.

    Where disentanglement_lib's code and the paper part, this follows the code as its study ran it:
    mutual information from the discretised training codes only, 0 modularity for a code with no
    information, and scikit-learn < 0.22's ``LogisticRegression()`` (one-vs-rest liblinear, C = 1;
    :data:`LOGISTIC_REGRESSION_SETTINGS`).

    Invariant to permutations of code dimensions; modularity also to positive rescaling and shifts
    of each dimension (the bins follow its range), explicitness to rescaling and shifts
    (standardised codes).

    Undefined scores are NaN, and ``undefined`` maps each to the reason: modularity with one factor;
    a factor's explicitness when the training sample (or, for the test score, the test sample) has a
    single class of it. An overall explicitness is NaN if a factor's is.

    Returns ``modularity_score``, ``modularity_per_code`` (list), ``explicitness_score_train``,
    ``explicitness_score_test``, ``explicitness_per_factor_train`` and ``explicitness_per_factor_test``
    (lists, in factor order), ``mutual_information`` (``[code_dim][n_factors]`` nested lists, nats),
    ``num_bins`` and, when a score is NaN, ``undefined`` (score → reason).
    """
    train_codes, train_factors, test_codes, test_factors = check_codes_and_factors(
        train_codes, train_factors, test_codes, test_factors
    )
    check_ints(2, num_bins=num_bins)
    information = mutual_information(histogram_discretize(train_codes, int(num_bins)), train_factors)
    per_code = modularity_per_code(information)

    train_normalised, test_normalised = standardise(train_codes, test_codes)
    n_factors = train_factors.shape[1]
    train_scores, test_scores = np.empty(n_factors), np.empty(n_factors)
    for j in range(n_factors):
        train_scores[j], test_scores[j] = explicitness_per_factor(
            train_normalised, train_factors[:, j], test_normalised, test_factors[:, j]
        )

    undefined: dict[str, str] = {}
    if n_factors == 1:
        undefined["modularity_score"] = undefined["modularity_per_code"] = (
            "one factor: modularity (how much of a code's information is about factors other than its "
            "top one) needs at least two factors"
        )
    for key, sample, scores in (("train", train_factors, train_scores), ("test", test_factors, test_scores)):
        unfit = [int(j) for j in np.flatnonzero(np.isnan(train_scores))]
        single = [int(j) for j in np.flatnonzero(np.isnan(scores)) if j not in unfit]
        reasons = []
        if unfit:
            reasons.append(
                f"factor(s) {unfit} took a single class in the {len(train_factors)} training points: "
                "no classifier to fit (raise num_train)"
            )
        if single:
            reasons.append(
                f"factor(s) {single} have no ROC curve on the {len(sample)} test points: no class of the "
                "training sample occurs there alongside another class (e.g. a single class; raise num_test)"
            )
        if reasons:
            undefined[f"explicitness_score_{key}"] = undefined[f"explicitness_per_factor_{key}"] = "; ".join(reasons)

    result: dict[str, Any] = {
        "modularity_score": float(np.mean(per_code)),
        "modularity_per_code": per_code.tolist(),
        "explicitness_score_train": float(np.mean(train_scores)),
        "explicitness_score_test": float(np.mean(test_scores)),
        "explicitness_per_factor_train": train_scores.tolist(),
        "explicitness_per_factor_test": test_scores.tolist(),
        "mutual_information": information.tolist(),
        "num_bins": int(num_bins),
    }
    if undefined:
        result["undefined"] = undefined
    return result


def modularity_explicitness(
    representation_fn: RepresentationFn,
    dataset: FactorSource,
    *,
    seed: int = 0,
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_TEST,
    num_bins: int = NUM_BINS,
) -> dict[str, Any]:
    """Modularity and explicitness (:func:`modularity_explicitness_from_codes`) on ``num_train`` random
    observations, whose codes give the mutual information and train the classifiers, and ``num_test``
    fresh ones, on which explicitness is scored too; drawn as disentanglement_lib's
    ``compute_modularity_explicitness`` draws them (training points, then test points, from one
    generator). Defaults: disentanglement_lib's study (10,000 and 5,000 points, 20 bins).

    Modularity is 1 for a code each of whose dimensions informs about one factor at most, however
    little, and it squares the information, so a dimension mostly about one factor scores near 1 too.
    On dSprites' factors (``benchmarks/metric_baselines.py``) the oracle scores 1.00, a random rotation
    of it 0.95 and 10-D noise 0.66 (the sampling error of the information estimate is spread unevenly
    over factors). Read it next to explicitness, which is 0.5 (chance) for noise and 1 when a linear
    classifier on the whole code ranks every class of every factor perfectly (the oracle: 0.94; a
    rotation changes it little). Invariant to permutations and to positive rescaling (and shifts) of
    code dimensions.

    Returns ``modularity_score``, ``modularity_per_code`` (list), ``explicitness_score_train``,
    ``explicitness_score_test``, ``explicitness_per_factor_train`` and ``explicitness_per_factor_test``
    (lists, in the dataset's factor order), ``mutual_information`` (``[code_dim][n_factors]`` nested
    lists, nats), ``num_bins`` and, when a score is NaN, ``undefined`` (score → reason).
    """
    check_ints(2, num_train=num_train, num_test=num_test)
    check_ints(2, num_bins=num_bins)
    sample = train_and_test_codes(representation_fn, dataset, num_train, num_test, seed)
    return modularity_explicitness_from_codes(*sample, num_bins=num_bins)

"""The SAP score and modularity / explicitness, checked against disentanglement_lib and on synthetic codes.

The oracle below is a transcription of disentanglement_lib's functions (google-research/disentanglement_lib
at 86a644d, ``evaluation/metrics/sap_score.py``, ``modularity_explicitness.py`` and ``utils.py``), free of
TensorFlow and gin, with its conventions kept: codes ``mus`` are ``[code_dim, n]`` and factors ``ys``
``[n_factors, n]``. The cores must equal it to 1e-6 on the same codes. Then properties on codes made
here: a noisy, rescaled, permuted copy of the factors; the same copy mixed by a rotation that spreads
every factor evenly over every code; independent noise. Last, the sampling wrappers (``sap_score``,
``modularity_explicitness``) on the reference representations of
:mod:`constrained_vae.evaluation.references`, and their place in the protocol machinery and the table.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn import linear_model, metrics, preprocessing, svm
from sklearn.multiclass import OneVsRestClassifier

from constrained_vae.evaluation import scoring
from constrained_vae.evaluation.metrics import METRICS
from constrained_vae.evaluation.metrics import modularity as modularity_module
from constrained_vae.evaluation.metrics import sap as sap_module
from constrained_vae.evaluation.metrics.modularity import (
    modularity,
    modularity_explicitness,
    modularity_explicitness_from_codes,
)
from constrained_vae.evaluation.metrics.sap import sap_from_codes, sap_score
from constrained_vae.evaluation.references import FactorGrid, oracle_representation, random_representation
from constrained_vae.run.settings import RunConfig

# ---------------------------------------------------------------------------- disentanglement_lib, transcribed


def dl_compute_score_matrix(mus, ys, mus_test, ys_test, continuous_factors):
    """sap_score.compute_score_matrix."""
    num_latents = mus.shape[0]
    num_factors = ys.shape[0]
    score_matrix = np.zeros([num_latents, num_factors])
    for i in range(num_latents):
        for j in range(num_factors):
            mu_i = mus[i, :]
            y_j = ys[j, :]
            if continuous_factors:
                cov_mu_i_y_j = np.cov(mu_i, y_j, ddof=1)
                cov_mu_y = cov_mu_i_y_j[0, 1] ** 2
                var_mu = cov_mu_i_y_j[0, 0]
                var_y = cov_mu_i_y_j[1, 1]
                if var_mu > 1e-12:
                    score_matrix[i, j] = cov_mu_y * 1.0 / (var_mu * var_y)
                else:
                    score_matrix[i, j] = 0.0
            else:
                mu_i_test = mus_test[i, :]
                y_j_test = ys_test[j, :]
                classifier = svm.LinearSVC(C=0.01, class_weight="balanced")
                classifier.fit(mu_i[:, np.newaxis], y_j)
                pred = classifier.predict(mu_i_test[:, np.newaxis])
                score_matrix[i, j] = np.mean(pred == y_j_test)
    return score_matrix


def dl_compute_avg_diff_top_two(matrix):
    """sap_score.compute_avg_diff_top_two."""
    sorted_matrix = np.sort(matrix, axis=0)
    return np.mean(sorted_matrix[-1, :] - sorted_matrix[-2, :])


def dl_compute_sap(mus, ys, mus_test, ys_test, continuous_factors):
    """sap_score._compute_sap."""
    score_matrix = dl_compute_score_matrix(mus, ys, mus_test, ys_test, continuous_factors)
    assert score_matrix.shape[0] == mus.shape[0]
    assert score_matrix.shape[1] == ys.shape[0]
    return {"SAP_score": dl_compute_avg_diff_top_two(score_matrix)}, score_matrix


def dl_histogram_discretize(target, num_bins):
    """utils._histogram_discretize."""
    discretized = np.zeros_like(target)
    for i in range(target.shape[0]):
        discretized[i, :] = np.digitize(target[i, :], np.histogram(target[i, :], num_bins)[1][:-1])
    return discretized


def dl_discrete_mutual_info(mus, ys):
    """utils.discrete_mutual_info."""
    num_codes = mus.shape[0]
    num_factors = ys.shape[0]
    m = np.zeros([num_codes, num_factors])
    for i in range(num_codes):
        for j in range(num_factors):
            m[i, j] = metrics.mutual_info_score(ys[j, :], mus[i, :])
    return m


def dl_normalize_data(data, mean=None, stddev=None):
    """utils.normalize_data."""
    if mean is None:
        mean = np.mean(data, axis=1)
    if stddev is None:
        stddev = np.std(data, axis=1)
    return (data - mean[:, np.newaxis]) / stddev[:, np.newaxis], mean, stddev


def dl_logistic_regression():
    """``linear_model.LogisticRegression()`` as disentanglement_lib's study ran it: scikit-learn < 0.22,
    whose defaults were solver="liblinear", multi_class="ovr" (a binary problem: one classifier; its
    predict_proba normalised the classes' logistics over classes, as OneVsRestClassifier does).
    scikit-learn ≥ 0.22 made the default a multinomial lbfgs fit and 1.7 removed liblinear's
    multi-class, so the literal line would now compute another classifier."""
    return OneVsRestClassifier(linear_model.LogisticRegression(solver="liblinear"))


def dl_explicitness_per_factor(mus_train, y_train, mus_test, y_test):
    """modularity_explicitness.explicitness_per_factor."""
    x_train = np.transpose(mus_train)
    x_test = np.transpose(mus_test)
    clf = dl_logistic_regression().fit(x_train, y_train)
    y_pred_train = clf.predict_proba(x_train)
    y_pred_test = clf.predict_proba(x_test)
    mlb = preprocessing.MultiLabelBinarizer()
    roc_train = metrics.roc_auc_score(mlb.fit_transform(np.expand_dims(y_train, 1)), y_pred_train)
    roc_test = metrics.roc_auc_score(mlb.fit_transform(np.expand_dims(y_test, 1)), y_pred_test)
    return roc_train, roc_test


def dl_modularity(mutual_information):
    """modularity_explicitness.modularity."""
    squared_mi = np.square(mutual_information)
    max_squared_mi = np.max(squared_mi, axis=1)
    numerator = np.sum(squared_mi, axis=1) - max_squared_mi
    denominator = max_squared_mi * (squared_mi.shape[1] - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 for an uninformative code, replaced by 0
        delta = numerator / denominator
    modularity_score = 1.0 - delta
    index = max_squared_mi == 0.0
    modularity_score[index] = 0.0
    return np.mean(modularity_score)


def dl_compute_modularity_explicitness(mus_train, ys_train, mus_test, ys_test, num_bins):
    """modularity_explicitness.compute_modularity_explicitness after its sampling, with
    ``discretizer.discretizer_fn = @histogram_discretizer``."""
    scores = {}
    discretized_mus = dl_histogram_discretize(mus_train, num_bins)
    mutual_information = dl_discrete_mutual_info(discretized_mus, ys_train)
    assert mutual_information.shape[0] == mus_train.shape[0]
    assert mutual_information.shape[1] == ys_train.shape[0]
    scores["modularity_score"] = dl_modularity(mutual_information)
    explicitness_score_train = np.zeros([ys_train.shape[0], 1])
    explicitness_score_test = np.zeros([ys_test.shape[0], 1])
    mus_train_norm, mean_mus, stddev_mus = dl_normalize_data(mus_train)
    mus_test_norm, _, _ = dl_normalize_data(mus_test, mean_mus, stddev_mus)
    for i in range(ys_train.shape[0]):
        explicitness_score_train[i], explicitness_score_test[i] = dl_explicitness_per_factor(
            mus_train_norm, ys_train[i, :], mus_test_norm, ys_test[i, :]
        )
    scores["explicitness_score_train"] = np.mean(explicitness_score_train)
    scores["explicitness_score_test"] = np.mean(explicitness_score_test)
    return scores, mutual_information, explicitness_score_train[:, 0], explicitness_score_test[:, 0]


# ---------------------------------------------------------------------------- synthetic codes


def draw_factors(n: int, sizes: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Factor classes int64 ``[n, n_factors]``, uniform over the grid of ``sizes``, every class present."""
    while True:
        factors = np.stack([rng.integers(0, size, n) for size in sizes], axis=1)
        if all(np.unique(factors[:, j]).size == size for j, size in enumerate(sizes)):
            return factors


def even_rotation(k: int) -> np.ndarray:
    """An orthogonal ``[k, k]`` matrix (k a power of 2) whose entries are all ±1/√k (Sylvester's
    Hadamard matrix): each rotated code holds every factor with the same weight."""
    rotation = np.ones((1, 1))
    while rotation.shape[0] < k:
        rotation = np.block([[rotation, rotation], [rotation, -rotation]])
    return rotation / math.sqrt(k)


class Codes:
    """Synthetic codes of factor classes: each factor's class mapped to (class + ½) / size ∈ (0, 1)
    plus Gaussian noise, optionally standardised and mixed by :func:`even_rotation`, then rescaled by
    fixed positive factors in [0.5, 3], shifted and permuted (code i ← factor ``permutation[i]``)."""

    def __init__(self, sizes: tuple[int, ...], seed: int = 0, noise: float = 0.02, rotate: bool = False) -> None:
        rng = np.random.default_rng(seed)
        self.sizes, self.noise, self.rotate = np.asarray(sizes, dtype=np.float64), noise, rotate
        self.permutation = rng.permutation(len(sizes))
        while (self.permutation == np.arange(len(sizes))).any():  # every code moved
            self.permutation = rng.permutation(len(sizes))
        self.scales, self.shifts = rng.uniform(0.5, 3.0, len(sizes)), rng.normal(size=len(sizes))
        self.rng = rng

    def __call__(self, factors: np.ndarray) -> np.ndarray:
        codes = (factors + 0.5) / self.sizes + self.noise * self.rng.normal(size=factors.shape)
        if self.rotate:
            codes = ((codes - 0.5) * math.sqrt(12.0)) @ even_rotation(codes.shape[1])  # ~unit variance, then mix
        return (codes * self.scales + self.shifts)[:, self.permutation]


def labelled(sizes, codes_of, n_train: int = 1000, n_test: int = 500, seed: int = 0):
    """Train and test codes and factors: ``(train_codes, train_factors, test_codes, test_factors)``."""
    rng = np.random.default_rng(seed + 100)
    train_factors, test_factors = draw_factors(n_train, sizes, rng), draw_factors(n_test, sizes, rng)
    return codes_of(train_factors), train_factors, codes_of(test_factors), test_factors


def noise_codes(code_dim: int, seed: int = 0):
    rng = np.random.default_rng(seed + 200)
    return lambda factors: rng.normal(size=(factors.shape[0], code_dim))


BINARY = (2, 2, 2, 2)  # four binary factors: a one-dimensional linear classifier can separate each
MIXED = (2, 3, 4, 5)


@pytest.fixture(scope="module")
def scores():
    """Both metrics (SAP discrete and continuous) on the copy, the rotated copy and noise, per factor sizes."""
    out = {}
    for sizes in (BINARY, MIXED):
        for name, codes_of in (
            ("copy", Codes(sizes, seed=1)),
            ("rotated", Codes(sizes, seed=1, rotate=True)),
            ("noise", noise_codes(len(sizes), seed=1)),
        ):
            sample = labelled(sizes, codes_of)
            out[sizes, name] = {
                "sap": sap_from_codes(*sample),
                "sap_continuous": sap_from_codes(*sample, continuous_factors=True),
                "modularity": modularity_explicitness_from_codes(*sample),
            }
    return out


# ---------------------------------------------------------------------------- equal to disentanglement_lib

CASES = [  # (factor sizes, code_dim, n_train, n_test, seed); codes are a noisy mix of factors and noise
    ((2, 3), 3, 600, 300, 0),
    ((4, 2, 5), 5, 800, 400, 1),
    ((3, 6, 2, 2), 4, 500, 500, 2),
    ((10,), 2, 700, 300, 3),
]


def mixed_sample(sizes, code_dim, n_train, n_test, seed):
    """Codes with partial information about several factors each (so every score is mid-range and a
    mismatch would show): factors scaled to [0, 1) → a sparse random linear map → noise → each
    dimension rescaled (by 0.2 to 5)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(len(sizes), code_dim)) * (rng.uniform(size=(len(sizes), code_dim)) < 0.6)
    scales = rng.uniform(0.2, 5.0, code_dim)

    def codes_of(factors):
        codes = (factors / np.asarray(sizes)) @ mixing + 0.3 * rng.normal(size=(factors.shape[0], code_dim))
        return codes * scales

    return labelled(sizes, codes_of, n_train, n_test, seed)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("continuous_factors", [False, True])
def test_sap_equals_disentanglement_lib_on_the_same_codes(case, continuous_factors):
    """With a constant code dimension appended too (0 on a continuous factor: below the variance floor)."""
    train_codes, train_factors, test_codes, test_factors = mixed_sample(*case)
    train_codes, test_codes = (
        np.column_stack([codes, np.full(len(codes), 2.0)]) for codes in (train_codes, test_codes)
    )
    ours = sap_from_codes(train_codes, train_factors, test_codes, test_factors, continuous_factors=continuous_factors)
    theirs, score_matrix = dl_compute_sap(
        train_codes.T, train_factors.T, test_codes.T, test_factors.T, continuous_factors
    )
    assert ours["sap"] == pytest.approx(theirs["SAP_score"], abs=1e-6)
    np.testing.assert_allclose(ours["score_matrix"], score_matrix, atol=1e-6, rtol=0)
    assert np.shape(ours["score_matrix"]) == (train_codes.shape[1], train_factors.shape[1])
    np.testing.assert_allclose(
        ours["sap_per_factor"], np.sort(score_matrix, axis=0)[-1] - np.sort(score_matrix, axis=0)[-2], atol=1e-6
    )
    assert 0.0 < ours["sap"] < 0.9 and "undefined" not in ours


@pytest.mark.parametrize("case", CASES[:3])
@pytest.mark.parametrize("num_bins", [20, 7])
def test_modularity_and_explicitness_equal_disentanglement_lib_on_the_same_codes(case, num_bins):
    train_codes, train_factors, test_codes, test_factors = mixed_sample(*case)
    ours = modularity_explicitness_from_codes(train_codes, train_factors, test_codes, test_factors, num_bins=num_bins)
    theirs, information, train_per_factor, test_per_factor = dl_compute_modularity_explicitness(
        train_codes.T, train_factors.T, test_codes.T, test_factors.T, num_bins
    )
    for key in ("modularity_score", "explicitness_score_train", "explicitness_score_test"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
    np.testing.assert_allclose(ours["mutual_information"], information, atol=1e-9, rtol=0)
    np.testing.assert_allclose(ours["explicitness_per_factor_train"], train_per_factor, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours["explicitness_per_factor_test"], test_per_factor, atol=1e-6, rtol=0)
    assert 0.05 < ours["modularity_score"] < 0.99 and 0.55 < ours["explicitness_score_test"] < 0.99
    assert "undefined" not in ours


@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(2, 6)),
        elements=st.one_of(st.just(0.0), st.floats(1e-6, 3.0)),
    )
)
def test_modularity_of_any_information_matrix_equals_disentanglement_lib(information):
    assert modularity(information) == pytest.approx(dl_modularity(information), abs=1e-9)
    assert 0.0 <= modularity(information) <= 1.0 + 1e-12


def test_modularity_scores_disentanglement_lib_s_own_cases():
    """The cases of disentanglement_lib's ``modularity_explicitness_test.py``."""
    diagonal = np.diag(5.0 * np.ones(5))
    assert modularity(diagonal) == pytest.approx(1.0)
    assert modularity(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])) == pytest.approx(2.0 / 3.0)  # an empty code
    assert modularity(np.zeros((10, 10))) == pytest.approx(0.0)
    assert modularity(np.vstack([diagonal, diagonal])) == pytest.approx(1.0)  # redundant codes
    assert modularity(diagonal[:2, :]) == pytest.approx(1.0)  # missed factors
    assert modularity(np.hstack([diagonal, diagonal])) == pytest.approx(1.0 - 1.0 / 9.0)  # one code, two factors


def test_the_protocol_constants_are_disentanglement_lib_s_study_settings():
    """unsupervised_study_v1/metric_configs/sap_score.gin and modularity_explicitness.gin."""
    assert (sap_module.NUM_TRAIN, sap_module.NUM_TEST, sap_module.CONTINUOUS_FACTORS) == (10000, 5000, False)
    assert (modularity_module.NUM_TRAIN, modularity_module.NUM_TEST) == (10000, 5000)
    assert (modularity_module.DISCRETIZER, modularity_module.NUM_BINS) == ("histogram_discretizer", 20)
    assert sap_module.SVC_SETTINGS["C"] == 0.01 and sap_module.SVC_SETTINGS["class_weight"] == "balanced"


# ---------------------------------------------------------------------------- synthetic codes


def test_a_noisy_rescaled_permuted_copy_of_the_factors_scores_high(scores):
    """Modularity, explicitness and the continuous SAP (R²) near 1. The discrete SAP is a gap between
    test accuracies, so it is at most 1 minus the runner-up's accuracy, and the runner-up, a code
    about another factor, predicts at chance (≈ 0.5 for a binary factor): the copy reaches that cap.
    With more classes the one-dimensional linear SVM misses the middle classes even on a perfect code."""
    for sizes in (BINARY, MIXED):
        result = scores[sizes, "copy"]
        assert result["modularity"]["modularity_score"] > 0.97, sizes
        assert min(result["modularity"]["explicitness_per_factor_test"]) > 0.95, sizes  # 5 classes: 0.96
        assert min(result["modularity"]["explicitness_per_factor_train"]) > 0.95, sizes
        assert min(result["sap_continuous"]["sap_per_factor"]) > 0.95, sizes
    binary = scores[BINARY, "copy"]["sap"]
    matrix = np.array(binary["score_matrix"])
    own_code = np.argsort(Codes(BINARY, seed=1).permutation)  # the code that holds factor j
    np.testing.assert_array_less(0.99, matrix[own_code, np.arange(len(BINARY))])
    ranked = np.sort(matrix, axis=0)
    np.testing.assert_allclose(binary["sap_per_factor"], 1.0 - ranked[-2], atol=0.01)  # 1 − the runner-up
    assert np.all(np.abs(ranked[-2] - 0.5) < 0.06)  # the runner-up at chance
    assert binary["sap"] > 0.43
    assert scores[MIXED, "copy"]["sap"]["sap"] > 0.25


def test_a_rotated_mix_of_the_factors_scores_lower_modularity_and_sap_but_stays_explicit(scores):
    """Every rotated code holds every factor with the same weight: no code is about one factor and no
    factor has a best code, but a linear classifier on the whole code still reads every factor."""
    for sizes in (BINARY, MIXED):
        copy, rotated = scores[sizes, "copy"], scores[sizes, "rotated"]
        assert rotated["modularity"]["modularity_score"] < copy["modularity"]["modularity_score"] - 0.4, sizes
        assert rotated["sap"]["sap"] < copy["sap"]["sap"] - 0.2, sizes
        assert rotated["sap_continuous"]["sap"] < copy["sap_continuous"]["sap"] - 0.8, sizes
        assert rotated["modularity"]["explicitness_score_test"] > 0.95, sizes


def test_independent_noise_scores_near_zero_sap_and_chance_explicitness(scores):
    for sizes in (BINARY, MIXED):
        noise = scores[sizes, "noise"]
        assert noise["sap"]["sap"] < 0.06, sizes
        assert noise["sap_continuous"]["sap"] < 0.02, sizes
        assert abs(noise["modularity"]["explicitness_score_test"] - 0.5) < 0.04, sizes
        assert 0.5 < noise["modularity"]["explicitness_score_train"] < 0.6, sizes  # fitted on it: a little above


def test_modularity_does_not_tell_noise_from_a_modular_code(scores):
    """Modularity asks only whether each code's information is about one factor, however little there
    is: on noise it scores the sampling error of a 20-bin information estimate, well above 0 (the
    information itself is near 0, ~(bins − 1)(classes − 1) / 2n nats)."""
    for sizes in (BINARY, MIXED):
        noise = scores[sizes, "noise"]["modularity"]
        assert np.max(noise["mutual_information"]) < 0.08, sizes
        assert noise["modularity_score"] > 0.25, sizes


@pytest.mark.parametrize("case", CASES[1:3])
def test_sap_modularity_and_explicitness_are_invariant_to_permuting_code_dimensions(case):
    """On partly mixed codes (mid-range scores, where a broken invariance would show)."""
    train_codes, train_factors, test_codes, test_factors = mixed_sample(*case)
    permutation = np.roll(np.arange(train_codes.shape[1]), 1)
    before_sap = sap_from_codes(train_codes, train_factors, test_codes, test_factors)
    after_sap = sap_from_codes(train_codes[:, permutation], train_factors, test_codes[:, permutation], test_factors)
    assert after_sap["sap_per_factor"] == pytest.approx(before_sap["sap_per_factor"], abs=1e-12)
    np.testing.assert_allclose(np.array(after_sap["score_matrix"]), np.array(before_sap["score_matrix"])[permutation])
    before = modularity_explicitness_from_codes(train_codes, train_factors, test_codes, test_factors)
    after = modularity_explicitness_from_codes(
        train_codes[:, permutation], train_factors, test_codes[:, permutation], test_factors
    )
    assert 0.1 < before["modularity_score"] < 0.99 and 0.02 < before_sap["sap"] < 0.9
    assert after["modularity_score"] == pytest.approx(before["modularity_score"], abs=1e-12)
    for key in ("explicitness_per_factor_train", "explicitness_per_factor_test"):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key


def test_rescaling_codes_leaves_modularity_explicitness_and_continuous_sap_but_not_discrete_sap():
    """The documented invariances: bins follow each code's range, explicitness standardises, R² is
    scale-free; the discrete SAP's SVM (C = 0.01) is not: a code shrunk 1000-fold predicts at chance."""
    train_codes, train_factors, test_codes, test_factors = labelled(BINARY, Codes(BINARY, seed=2, noise=0.2), seed=2)
    scale, shift = np.array([1e-3, 2.0, 0.5, 7.0]), np.array([3.0, -1.0, 0.0, 10.0])
    rescaled = (train_codes * scale + shift, train_factors, test_codes * scale + shift, test_factors)
    before = modularity_explicitness_from_codes(train_codes, train_factors, test_codes, test_factors)
    after = modularity_explicitness_from_codes(*rescaled)
    for key in ("modularity_score", "explicitness_score_train", "explicitness_score_test"):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key
    continuous = sap_from_codes(train_codes, train_factors, test_codes, test_factors, continuous_factors=True)
    assert sap_from_codes(*rescaled, continuous_factors=True)["sap"] == pytest.approx(continuous["sap"], abs=1e-9)
    discrete_before = np.array(sap_from_codes(train_codes, train_factors, test_codes, test_factors)["score_matrix"])
    discrete_after = np.array(sap_from_codes(*rescaled)["score_matrix"])
    assert discrete_before[0].max() > 0.9 and abs(discrete_after[0].max() - 0.5) < 0.1  # the shrunk code


# ---------------------------------------------------------------------------- undefined scores and bad inputs


def test_a_factor_with_a_single_class_in_the_sample_is_undefined_not_a_number():
    train_codes, train_factors, test_codes, test_factors = labelled(MIXED, Codes(MIXED, seed=3), n_train=300)
    train_factors[:, 1] = 0  # factor 1 took one class in the training sample
    for continuous in (False, True):
        result = sap_from_codes(train_codes, train_factors, test_codes, test_factors, continuous_factors=continuous)
        assert math.isnan(result["sap"]) and math.isnan(result["sap_per_factor"][1])
        assert not any(math.isnan(result["sap_per_factor"][j]) for j in (0, 2, 3))
        assert "factor(s) [1] took a single class in the 300 training points" in result["undefined"]["sap"]
    result = modularity_explicitness_from_codes(train_codes, train_factors, test_codes, test_factors)
    assert not math.isnan(result["modularity_score"])  # a factor no code informs about: a column of 0
    assert math.isnan(result["explicitness_score_train"]) and math.isnan(result["explicitness_score_test"])
    assert math.isnan(result["explicitness_per_factor_test"][1])
    assert not math.isnan(result["explicitness_per_factor_test"][0])
    reason = result["undefined"]["explicitness_score_test"]
    assert "factor(s) [1] took a single class in the 300 training points" in reason
    test_factors = test_factors.copy()
    train_factors[:, 1] = np.arange(300) % 3  # the training sample has classes again
    test_factors[:, 2] = 1  # but factor 2 has one class in the test sample
    result = modularity_explicitness_from_codes(train_codes, train_factors, test_codes, test_factors)
    assert not math.isnan(result["explicitness_score_train"]) and math.isnan(result["explicitness_score_test"])
    assert "factor(s) [2] have no ROC curve on the 500 test points" in result["undefined"]["explicitness_score_test"]
    assert "explicitness_score_train" not in result["undefined"]


def test_sap_with_one_code_dimension_and_modularity_with_one_factor_are_undefined():
    train_codes, train_factors, test_codes, test_factors = labelled(MIXED, Codes(MIXED, seed=3), n_train=300)
    one_code = sap_from_codes(train_codes[:, :1], train_factors, test_codes[:, :1], test_factors)
    assert math.isnan(one_code["sap"]) and "one code dimension" in one_code["undefined"]["sap"]
    one_factor = modularity_explicitness_from_codes(train_codes, train_factors[:, :1], test_codes, test_factors[:, :1])
    assert math.isnan(one_factor["modularity_score"]) and "one factor" in one_factor["undefined"]["modularity_score"]
    assert one_factor["explicitness_score_test"] > 0.9


@pytest.mark.parametrize(
    ("field", "make", "message"),
    [
        ("train_codes", lambda a: a[:-1], "train_codes has 299 rows but train_factors has 300"),
        ("test_factors", lambda a: a[:-5], "test_codes has 500 rows but test_factors has 495"),
        ("train_factors", lambda a: a + 0.5, "train_factors must be integer class indices, got dtype float64"),
        ("test_factors", lambda a: a.astype(np.float32), "test_factors must be integer class indices"),
        ("train_factors", lambda a: a - 1, "train_factors must be class indices ≥ 0"),
        ("test_codes", lambda a: a[:, :2], "train_codes has 4 dimensions but test_codes has 2"),
        ("test_factors", lambda a: a[:, :3], "train_factors has 4 factors but test_factors has 3"),
        ("train_codes", lambda a: a[:, 0], "train_codes must have shape [n, code_dim], got (300,)"),
        ("train_codes", lambda a: np.where(a == a[3, 1], np.nan, a), "train_codes contains NaN or infinite values"),
        ("test_codes", lambda a: a.astype(str), "test_codes must be numbers"),
    ],
)
def test_bad_inputs_raise_a_value_error_that_says_what_is_wrong(field, make, message):
    names = ("train_codes", "train_factors", "test_codes", "test_factors")
    sample = dict(zip(names, labelled(MIXED, Codes(MIXED), 300), strict=True))
    sample[field] = make(sample[field])
    with pytest.raises(ValueError, match=re.escape(message)):
        sap_from_codes(**sample)
    with pytest.raises(ValueError, match=re.escape(message)):
        modularity_explicitness_from_codes(**sample)


@pytest.mark.parametrize("num_bins", [1, 0, -3, 2.5, "20", True])
def test_num_bins_must_be_an_integer_of_at_least_two(num_bins):
    sample = labelled(MIXED, Codes(MIXED), 300)
    with pytest.raises(ValueError, match=re.escape(f"num_bins must be an integer ≥ 2, got {num_bins!r}")):
        modularity_explicitness_from_codes(*sample, num_bins=num_bins)


@pytest.mark.parametrize("continuous_factors", [None, "yes", 1])
def test_continuous_factors_must_be_a_boolean(continuous_factors):
    sample = labelled(MIXED, Codes(MIXED), 300)
    with pytest.raises(ValueError, match="continuous_factors must be True or False"):
        sap_from_codes(*sample, continuous_factors=continuous_factors)


# ---------------------------------------------------------------------------- the sampling wrappers

WRAPPERS = {"sap_score": sap_score, "modularity_explicitness": modularity_explicitness}
SMALL = dict(num_train=1000, num_test=500)  # a tenth of the published sizes: well under a second each


def reference_scores(make_representation, sizes=BINARY, seed: int = 0, **settings) -> dict:
    """Both wrappers, each on a fresh representation from ``make_representation()``, on
    :class:`FactorGrid` observations of ``sizes``: metric name → result."""
    grid = FactorGrid(list(sizes))
    return {name: fn(make_representation(), grid, seed=seed, **(SMALL | settings)) for name, fn in WRAPPERS.items()}


def oracle(sizes=BINARY, **kwargs):
    """A factory of fresh oracles (each keeps its own noise generator, so each repeats the same codes)."""
    return lambda: oracle_representation(list(sizes), seed=1, **kwargs)


def transformed(make_representation, permutation: np.ndarray, scales: float | np.ndarray = 1.0, shift: float = 0.0):
    """A factory of the same representations with code dimensions permuted, then rescaled and shifted."""

    def make():
        representation = make_representation()
        return lambda observations: representation(observations)[:, permutation] * scales + shift

    return make


def test_both_metrics_are_registered_under_their_names():
    assert METRICS["sap_score"] is sap_score
    assert METRICS["modularity_explicitness"] is modularity_explicitness


def test_through_the_wrappers_the_oracle_reaches_the_binary_ceilings_and_random_codes_score_at_chance():
    """On binary factors the discrete SAP's ceiling is about 0.5 (the runner-up code predicts at chance)."""
    top = reference_scores(oracle())
    assert 0.45 < top["sap_score"]["sap"] <= 0.5 + 0.03
    assert top["modularity_explicitness"]["modularity_score"] > 0.99
    assert top["modularity_explicitness"]["explicitness_score_test"] > 0.99
    continuous = sap_score(oracle()(), FactorGrid(list(BINARY)), continuous_factors=True, **SMALL)
    assert continuous["sap"] > 0.99  # R²: no such ceiling
    chance = reference_scores(lambda: random_representation(6, seed=2))
    assert chance["sap_score"]["sap"] < 0.05
    assert abs(chance["modularity_explicitness"]["explicitness_score_test"] - 0.5) < 0.04
    for result in (*top.values(), *chance.values()):
        assert "undefined" not in result


def test_through_the_wrappers_a_rotated_oracle_loses_sap_and_modularity_but_stays_explicit():
    top, rotated = reference_scores(oracle()), reference_scores(oracle(rotate=True))
    assert rotated["sap_score"]["sap"] < top["sap_score"]["sap"] - 0.1
    assert rotated["modularity_explicitness"]["modularity_score"] < 0.6
    assert rotated["modularity_explicitness"]["explicitness_score_test"] > 0.99


def test_the_wrappers_score_a_training_then_a_test_sample_drawn_from_one_seeded_generator():
    """disentanglement_lib's order: ``generate_batch_factor_code`` for num_train, then for num_test."""
    grid = FactorGrid(list(MIXED))
    representation = oracle_representation(list(MIXED), seed=1, rotate=True, noise=0.0)  # deterministic codes
    rng = np.random.default_rng(5)
    train_factors, test_factors = grid.sample_factors(400, rng), grid.sample_factors(200, rng)
    sample = (
        representation(grid.observations(train_factors)),
        train_factors,
        representation(grid.observations(test_factors)),
        test_factors,
    )
    assert sap_score(representation, grid, seed=5, num_train=400, num_test=200) == sap_from_codes(*sample)
    ours = modularity_explicitness(representation, grid, seed=5, num_train=400, num_test=200, num_bins=7)
    assert ours == modularity_explicitness_from_codes(*sample, num_bins=7)


@pytest.mark.parametrize("metric", list(WRAPPERS))
def test_the_same_seed_gives_the_same_scores_and_another_seed_other_draws(metric):
    first, again, other = (
        WRAPPERS[metric](oracle(MIXED, rotate=True)(), FactorGrid(list(MIXED)), seed=seed, **SMALL)
        for seed in (3, 3, 4)
    )
    assert first == again
    assert first != other


def test_through_the_wrappers_permuting_code_dimensions_changes_no_score_and_rescaling_only_sap():
    """On the rotated oracle of mixed factor sizes (mid-range scores, where a broken invariance would show).
    The discrete SAP's SVM penalises its weight and its intercept (liblinear), so rescaling and
    shifting the codes moves it."""
    rng = np.random.default_rng(5)
    permutation, scales = rng.permutation(len(MIXED)), rng.uniform(0.5, 4.0, len(MIXED))
    before = reference_scores(oracle(MIXED, rotate=True), MIXED)
    permuted = reference_scores(transformed(oracle(MIXED, rotate=True), permutation), MIXED)
    rescaled = reference_scores(transformed(oracle(MIXED, rotate=True), permutation, scales, 3.0), MIXED)
    assert 0.05 < before["sap_score"]["sap"] < 0.9
    assert 0.1 < before["modularity_explicitness"]["modularity_score"] < 0.99
    assert permuted["sap_score"]["sap_per_factor"] == pytest.approx(before["sap_score"]["sap_per_factor"], abs=1e-12)
    assert rescaled["sap_score"]["sap_per_factor"] != pytest.approx(before["sap_score"]["sap_per_factor"], abs=0.01)
    for after in (permuted, rescaled):
        for key in ("modularity_score", "explicitness_score_train", "explicitness_score_test"):
            assert after["modularity_explicitness"][key] == pytest.approx(
                before["modularity_explicitness"][key], abs=1e-6
            ), key


@pytest.mark.parametrize(
    ("metric", "settings", "message"),
    [
        ("sap_score", dict(num_train=1), "num_train must be an integer ≥ 2"),
        ("sap_score", dict(num_test=0), "num_test must be an integer ≥ 2"),
        ("sap_score", dict(continuous_factors="no"), "continuous_factors must be True or False"),
        ("modularity_explicitness", dict(num_test=2.5), "num_test must be an integer ≥ 2"),
        ("modularity_explicitness", dict(num_bins=1), "num_bins must be an integer ≥ 2"),
    ],
)
def test_bad_protocol_settings_are_refused_before_anything_is_encoded(metric, settings, message):
    def representation(observations):
        raise AssertionError("encoded before the protocol was checked")

    with pytest.raises(ValueError, match=re.escape(message)):
        WRAPPERS[metric](representation, FactorGrid([3, 4]), **(SMALL | settings))


def test_the_protocol_machinery_holds_both_metrics_at_their_published_sizes():
    defaults = scoring.default_protocols()
    assert defaults["sap_score"] == {"num_train": 10000, "num_test": 5000, "continuous_factors": False}
    assert defaults["modularity_explicitness"] == {"num_train": 10000, "num_test": 5000, "num_bins": 20}
    assert scoring.protocols_with({}, ["sap_score"]) == {"sap_score": defaults["sap_score"]}
    chosen = scoring.protocols_with(
        {"num_train": 300, "num_eval": 40, "num_bins": 7}, ["sap_score", "modularity_explicitness", "mig"]
    )
    assert chosen["sap_score"] == {"num_train": 300, "num_test": 40, "continuous_factors": False}  # no bins: ignored
    assert chosen["modularity_explicitness"] == {"num_train": 300, "num_test": 40, "num_bins": 7}
    assert chosen["mig"]["num_bins"] == 7  # one flag, both histogram metrics
    assert scoring.protocols_with({"continuous_factors": True}, ["sap_score"])["sap_score"]["continuous_factors"]
    headline = {(metric, key) for metric, key, _ in scoring.HEADLINE_SCORES}
    assert {
        ("sap_score", "sap"),
        ("modularity_explicitness", "modularity_score"),
        ("modularity_explicitness", "explicitness_score_test"),
    } <= headline


def test_the_evaluation_table_shows_sap_modularity_and_explicitness_and_why_a_score_is_undefined():
    """One factor: SAP (one oracle code, no runner-up) and modularity are undefined, explicitness is not."""
    scores = {name: scoring.json_ready(fn(oracle([4])(), FactorGrid([4]), **SMALL)) for name, fn in WRAPPERS.items()}
    result = {"scores": scores, "protocols": scoring.protocols_with({}, list(WRAPPERS))}
    evaluation = scoring.Evaluation(Path("runs/eps5"), RunConfig(epsilon=5.0), result=result)
    table = scoring.format_table([evaluation])
    header, row = (line.split() for line in table.splitlines()[:2])
    assert header[-3:] == ["SAP", "Modularity", "Explicitness"]
    assert row[-3:-1] == ["undefined", "undefined"] and float(row[-1]) > 0.99
    assert "SAP undefined: one code dimension" in table and "Modularity undefined: one factor" in table

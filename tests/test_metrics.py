"""The disentanglement metrics, validated without training.

On data with dSprites' factors (sizes 3, 6, 40, 32, 32): the oracle (the factors themselves,
rescaled, permuted, with a little noise) scores near the top of every metric; random codes score at
chance; a random rotation of the oracle scores far lower on MIG and DCI disentanglement; scores keep
the invariances each metric claims; a seed fixes every score; bad representations are refused.
Most tests use :class:`FactorGrid` (observations are the factor classes, nothing rendered); the
dSprites tests render real sprites. Protocol sizes are cut down from the published ones to keep
the file fast; ``benchmarks/metric_baselines.py`` gives the numbers at the published sizes. DCI's
general claims are checked with the forest predictor (seconds, where the published gradient-boosted
trees take minutes); the boosted trees are checked against disentanglement_lib's computation, at
tiny sizes, and (``-m slow``) on the reference representations.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier

from constrained_vae.data.dsprites import FACTOR_SIZES, DSprites
from constrained_vae.evaluation import metrics
from constrained_vae.evaluation.references import (
    FactorGrid,
    oracle_representation,
    random_representation,
    sprite_centroid,
)

SMALL = {
    "betavae_score": dict(batch_size=16, num_train=300, num_eval=200),
    "factorvae_score": dict(batch_size=16, num_train=300, num_eval=200, num_variance_estimate=2000),
    "mig": dict(num_train=3000),
    "dci": dict(num_train=1000, num_test=500, predictor="forest"),
    "sap_score": dict(num_train=1000, num_test=500),
    "modularity_explicitness": dict(num_train=1000, num_test=500),
}
HEADLINE = {
    "betavae_score": "eval_accuracy",
    "factorvae_score": "eval_accuracy",
    "mig": "mig",
    "dci": "disentanglement",
    "sap_score": "sap",
    "modularity_explicitness": "modularity_score",
}
CHANCE_INFORMATIVENESS = float(np.mean([1.0 / size for size in FACTOR_SIZES]))  # ≈ 0.118


def score(metric: str, representation, dataset=None, seed: int = 0, **overrides) -> dict:
    dataset = dataset if dataset is not None else FactorGrid(FACTOR_SIZES)
    return metrics.METRICS[metric](representation, dataset, seed=seed, **(SMALL[metric] | overrides))


def oracle(**kwargs):
    return oracle_representation(FACTOR_SIZES, seed=1, **kwargs)


def transformed(representation, permutation: np.ndarray, scales: np.ndarray):
    """The same codes with dimensions permuted and positively rescaled (and shifted)."""
    return lambda x: representation(x)[:, permutation] * scales + 3.0


@pytest.fixture(scope="module")
def oracle_scores():
    return {metric: score(metric, oracle()) for metric in metrics.METRICS}


@pytest.fixture(scope="module")
def rotated_scores():
    return {metric: score(metric, oracle(rotate=True)) for metric in metrics.METRICS}


# ---------------------------------------------------------------------------- oracle, random, rotated


def test_the_oracle_scores_near_the_top_of_every_metric(oracle_scores):
    for metric in ("betavae_score", "factorvae_score"):
        assert oracle_scores[metric]["train_accuracy"] >= 0.98, metric
        assert oracle_scores[metric]["eval_accuracy"] >= 0.98, metric
    assert oracle_scores["factorvae_score"]["num_active_dims"] == len(FACTOR_SIZES)
    per_factor = oracle_scores["mig"]["mig_per_factor"]
    assert min(per_factor[:2]) > 0.95  # 3 and 6 classes fit in 20 bins
    assert min(per_factor[2:]) > 0.7  # 20 bins for 32 or 40 classes: at most log 20 / log 40 ≈ 0.81
    assert oracle_scores["mig"]["mig"] > 0.8
    for key in ("disentanglement", "completeness", "informativeness"):
        assert oracle_scores["dci"][key] > 0.95, key


def test_random_codes_score_at_chance():
    random_scores = {metric: score(metric, random_representation(10, seed=2)) for metric in metrics.METRICS}
    chance = 1.0 / len(FACTOR_SIZES)
    assert abs(random_scores["betavae_score"]["eval_accuracy"] - chance) < 0.1
    assert abs(random_scores["factorvae_score"]["eval_accuracy"] - chance) < 0.12
    assert random_scores["mig"]["mig"] < 0.02
    assert random_scores["dci"]["disentanglement"] < 0.05
    assert random_scores["dci"]["completeness"] < 0.05
    assert abs(random_scores["dci"]["informativeness"] - CHANCE_INFORMATIVENESS) < 0.04


def test_a_rotated_oracle_scores_far_lower_on_mig_and_dci_disentanglement(oracle_scores, rotated_scores):
    assert rotated_scores["mig"]["mig"] < oracle_scores["mig"]["mig"] - 0.5
    assert rotated_scores["dci"]["disentanglement"] < oracle_scores["dci"]["disentanglement"] - 0.5
    assert rotated_scores["dci"]["completeness"] < oracle_scores["dci"]["completeness"] - 0.5
    # still informative about the coarse factors, so well above chance
    assert rotated_scores["dci"]["informativeness"] > CHANCE_INFORMATIVENESS + 0.2


# ---------------------------------------------------------------------------- invariances and seeds


@pytest.mark.parametrize(
    ("metric", "rescale", "tolerance"),
    [
        ("betavae_score", False, 1e-3),
        ("factorvae_score", True, 1e-9),
        ("mig", True, 1e-3),
        ("dci", True, 0.01),
        ("modularity_explicitness", True, 1e-3),
    ],
)
def test_scores_keep_the_invariances_each_metric_claims(metric, rescale, tolerance):
    """Permuting code dimensions never matters; positive rescaling only where the metric says so
    (BetaVAE's classifier is L2-regularised). The rotated oracle gives mid-range scores, where a
    broken invariance would show. Tolerances: solver round-off (BetaVAE), a point on a bin edge
    (MIG, modularity), trees choosing among equally good splits in another order (DCI). SAP's
    invariance to permutations alone is checked in ``test_sap_modularity.py``."""
    rng = np.random.default_rng(5)
    permutation = rng.permutation(len(FACTOR_SIZES))
    scales = rng.uniform(0.5, 4.0, len(FACTOR_SIZES)) if rescale else np.ones(len(FACTOR_SIZES))
    before = score(metric, oracle(rotate=True))
    after = score(metric, transformed(oracle(rotate=True), permutation, scales))
    key = HEADLINE[metric]
    assert 0.1 < before[key] < 0.95
    assert after[key] == pytest.approx(before[key], abs=tolerance)
    if metric == "mig":
        assert after["mig_per_factor"] == pytest.approx(before["mig_per_factor"], abs=tolerance)
    if metric == "dci":
        for other in ("completeness", "informativeness"):
            assert after[other] == pytest.approx(before[other], abs=tolerance)
    if metric == "modularity_explicitness":
        for other in ("explicitness_score_train", "explicitness_score_test"):
            assert after[other] == pytest.approx(before[other], abs=tolerance)


@pytest.mark.parametrize("metric", list(metrics.METRICS))
def test_the_same_seed_gives_the_same_scores_and_another_seed_other_draws(metric):
    first = score(metric, oracle(rotate=True), seed=3)
    again = score(metric, oracle(rotate=True), seed=3)
    other = score(metric, oracle(rotate=True), seed=4)
    assert first == again
    assert first != other


def test_chunked_encoding_sees_every_observation_once(monkeypatch):
    """Batches larger than one representation call are split, and the codes come back in order."""
    monkeypatch.setattr(metrics.sampling, "OBSERVATIONS_PER_CALL", 7)
    calls = []

    def representation(x):
        calls.append(x.shape[0])
        return x[:, :1] * 2.0

    factors = np.arange(40).reshape(20, 2) % 5
    codes = metrics.sampling.codes_of(representation, FactorGrid([5, 5]), factors)
    assert calls == [7, 7, 6]
    np.testing.assert_array_equal(codes[:, 0], factors[:, 0] * 2.0)


# ---------------------------------------------------------------------------- the pieces


def test_dci_disentanglement_and_completeness_of_known_importance_matrices():
    assert metrics.disentanglement(np.eye(4)) == pytest.approx(1.0)
    assert metrics.completeness(np.eye(4)) == pytest.approx(1.0)
    assert metrics.disentanglement(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-9)
    assert metrics.completeness(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-9)
    one_code_for_all = np.zeros((4, 4))
    one_code_for_all[0] = 1.0  # code 0 explains every factor: complete but not disentangled
    assert metrics.completeness(one_code_for_all) == pytest.approx(1.0)
    assert metrics.disentanglement(one_code_for_all) == pytest.approx(0.0, abs=1e-9)


def test_histogram_discretize_cuts_each_code_into_equal_width_bins():
    uniform = np.random.default_rng(0).uniform(size=2000)
    codes = np.stack([uniform, 100.0 * uniform - 50.0], axis=1)  # same points, another range
    binned = metrics.histogram_discretize(codes, num_bins=20)
    assert binned.min() == 1 and binned.max() == 20
    np.testing.assert_array_equal(binned[:, 0], binned[:, 1])
    np.testing.assert_array_equal(
        binned[:, 0], np.minimum(np.floor(20 * (uniform - uniform.min()) / np.ptp(uniform)), 19) + 1
    )


# ---------------------------------------------------------------------------- real dSprites


def test_on_rendered_dsprites_random_codes_score_at_chance():
    dataset = DSprites()
    chance = 1.0 / len(FACTOR_SIZES)
    small = dict(num_train=120, num_eval=120, batch_size=8)  # 4,000 images rendered for BetaVAE
    beta = metrics.betavae_score(random_representation(10, seed=2), dataset, **small)
    factor = metrics.factorvae_score(random_representation(10, seed=2), dataset, num_variance_estimate=200, **small)
    assert abs(beta["eval_accuracy"] - chance) < 0.12  # 3 standard errors
    assert abs(factor["eval_accuracy"] - chance) < 0.15
    assert metrics.mig(random_representation(10, seed=2), dataset, num_train=1500)["mig"] < 0.03


def test_on_rendered_dsprites_the_sprite_centroid_is_scored_as_position():
    """The metrics see the rendered sprites: a code that reads their position from the pixels holds
    pos_x and pos_y (factors 3, 4) and nothing of orientation."""
    dataset = DSprites()
    gap = metrics.mig(sprite_centroid, dataset, num_train=2000)["mig_per_factor"]
    assert gap[3] > 0.7 and gap[4] > 0.7
    assert gap[2] < 0.05
    dci = metrics.dci(sprite_centroid, dataset, num_train=800, num_test=400, predictor="forest")
    accuracy = dci["informativeness_per_factor"]
    assert accuracy[3] > 0.9 and accuracy[4] > 0.9
    importance = np.asarray(dci["importance_matrix"])  # [code, factor]
    assert importance[0, 3] > 0.9 and importance[1, 4] > 0.9


def test_on_rendered_dsprites_explicitness_and_sap_read_the_sprite_centroid_as_position_and_scale():
    """Its area holds scale; its centre position (whose 32 classes a one-dimensional SVM cannot single
    out, so SAP sees little of it); nothing of orientation (explicitness at chance, 0.5)."""
    dataset = DSprites()
    explicit = metrics.modularity_explicitness(sprite_centroid, dataset, num_train=1000, num_test=500)
    per_factor = explicit["explicitness_per_factor_test"]
    assert min(per_factor[1], per_factor[3], per_factor[4]) > 0.8
    assert abs(per_factor[2] - 0.5) < 0.06
    gaps = metrics.sap_score(sprite_centroid, dataset, num_train=1000, num_test=500)["sap_per_factor"]
    assert gaps[1] > 0.3 and max(gaps[2:]) < 0.1  # scale (6 classes) read off the area alone


# ---------------------------------------------------------------------------- bad input


def test_a_representation_with_the_wrong_rows_or_nan_or_shape_is_refused():
    dataset = FactorGrid([3, 4])
    cases = {
        "returned 3 rows for a batch of": lambda x: np.zeros((3, 2)),
        "NaN or infinite": lambda x: np.full((x.shape[0], 2), np.nan),
        r"shape \[n, code_dim\]": lambda x: np.zeros(x.shape[0]),
        "must return numbers": lambda x: np.array([["a"]] * x.shape[0]),
    }
    for message, representation in cases.items():
        for metric in metrics.METRICS:
            with pytest.raises(ValueError, match=message):
                metrics.METRICS[metric](representation, dataset, **SMALL[metric])


def test_a_representation_whose_code_size_changes_is_refused(monkeypatch):
    monkeypatch.setattr(metrics.sampling, "OBSERVATIONS_PER_CALL", 10)
    sizes = iter(range(1, 1000))
    with pytest.raises(ValueError, match="changed its code size"):
        metrics.mig(lambda x: np.zeros((x.shape[0], next(sizes))), FactorGrid([3, 4]), num_train=30)


@pytest.mark.parametrize(
    ("metric", "settings", "message"),
    [
        ("betavae_score", dict(num_train=0), "num_train must be an integer ≥ 1"),
        ("betavae_score", dict(batch_size=2.5), "batch_size must be an integer ≥ 1"),
        ("factorvae_score", dict(batch_size=1), "batch_size must be an integer ≥ 2"),
        ("factorvae_score", dict(prune_threshold=-1.0), "prune_threshold"),
        ("mig", dict(num_bins=1), "num_bins must be an integer ≥ 2"),
        ("dci", dict(num_test=-5), "num_test must be an integer ≥ 1"),
        ("dci", dict(predictor="svm"), "predictor must be"),
    ],
)
def test_bad_protocol_settings_are_refused(metric, settings, message):
    with pytest.raises(ValueError, match=message):
        metrics.METRICS[metric](random_representation(2), FactorGrid([3, 4]), **(SMALL[metric] | settings))


def test_a_dataset_without_factors_or_with_bad_factors_is_refused():
    class NoFactors:
        pass

    class OutOfRange(FactorGrid):
        def sample_factors(self, n, rng):
            return np.full((n, 2), 7)

    with pytest.raises(ValueError, match="has no ground-truth factors"):
        metrics.mig(random_representation(2), NoFactors())
    with pytest.raises(ValueError, match="outside the factor sizes"):
        metrics.mig(random_representation(2), OutOfRange([3, 4]), num_train=10)
    with pytest.raises(ValueError, match="integers ≥ 2"):
        metrics.mig(random_representation(2), FactorGrid([3, 1]), num_train=10)


# ---------------------------------------------------------------------------- DCI's predictor, undefined scores


def disentanglement_lib_dci(train_codes, train_factors, test_codes, test_factors, seed: int) -> dict:
    """disentanglement_lib's ``dci.py`` (``compute_importance_gbt``, ``disentanglement``,
    ``completeness``), transcribed, on ``[n, code_dim]`` codes and ``[n, n_factors]`` factors; its
    ``GradientBoostingClassifier()`` gets a ``random_state`` so that it can be repeated."""
    importance = np.zeros((train_codes.shape[1], train_factors.shape[1]))
    train_loss, test_loss = [], []
    for i in range(train_factors.shape[1]):
        model = GradientBoostingClassifier(random_state=seed).fit(train_codes, train_factors[:, i])
        importance[:, i] = np.abs(model.feature_importances_)
        train_loss.append(np.mean(model.predict(train_codes) == train_factors[:, i]))
        test_loss.append(np.mean(model.predict(test_codes) == test_factors[:, i]))
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
    total = importance if importance.sum() > 0 else np.ones_like(importance)
    return {
        "disentanglement": np.sum(per_code * total.sum(axis=1) / total.sum()),
        "completeness": np.sum(per_factor * total.sum(axis=0) / total.sum()),
        "informativeness_train": np.mean(train_loss),
        "informativeness_test": np.mean(test_loss),
        "importance_matrix": importance.tolist(),
    }


def test_dci_defaults_to_disentanglement_libs_gradient_boosting_and_matches_its_computation():
    assert inspect.signature(metrics.dci).parameters["predictor"].default == "boosting"
    grid, seed = FactorGrid([3, 5, 4]), 2
    representation = oracle_representation([3, 5, 4], seed=1, rotate=True, noise=0.0)  # deterministic codes
    ours = metrics.dci(representation, grid, seed=seed, num_train=300, num_test=200)
    rng = np.random.default_rng(seed)  # the protocol's draws: training factors, then test factors
    train_factors, test_factors = grid.sample_factors(300, rng), grid.sample_factors(200, rng)
    reference = disentanglement_lib_dci(
        representation(grid.observations(train_factors)),
        train_factors,
        representation(grid.observations(test_factors)),
        test_factors,
        seed,
    )
    for key, value in reference.items():
        np.testing.assert_allclose(ours[key], value, rtol=0, atol=1e-12, err_msg=key)
    assert 0.1 < ours["disentanglement"] < 0.9  # mid-range, where a different predictor would show
    settings = dict(ours["predictor_settings"])
    assert settings.pop("classifier") == "sklearn.ensemble.GradientBoostingClassifier"
    defaults = GradientBoostingClassifier().get_params()  # disentanglement_lib: GradientBoostingClassifier()
    assert settings == {key: defaults[key] for key in settings}


def test_dci_fits_the_factors_in_parallel_with_the_same_scores_as_in_series():
    grid = FactorGrid([3, 5, 4])
    for predictor in metrics.DCI_PREDICTORS:
        scores = [
            metrics.dci(
                oracle_representation([3, 5, 4], seed=1, rotate=True, noise=0.0),
                grid,
                num_train=300,
                num_test=200,
                predictor=predictor,
                n_jobs=n_jobs,
            )
            for n_jobs in (1, 2)
        ]
        assert scores[0] == scores[1], predictor
    with pytest.raises(ValueError, match="n_jobs must be a non-zero integer"):
        metrics.dci(random_representation(2), grid, num_train=30, num_test=30, n_jobs=0)


def test_dci_on_one_factor_gives_disentanglement_as_undefined_with_the_reason():
    """1 − entropy in base n_factors is 0/0 with one factor: not a silent NaN but a stated one."""
    assert math.isnan(metrics.disentanglement(np.ones((3, 1))))
    scores = metrics.dci(oracle_representation([4], seed=1), FactorGrid([4]), num_train=200, num_test=100)
    assert math.isnan(scores["disentanglement"])
    assert "one factor" in scores["undefined"]["disentanglement"]
    assert set(scores["undefined"]) == {"disentanglement"}
    assert scores["completeness"] == 1.0 and scores["informativeness"] == 1.0


def test_a_collapsed_representation_has_an_undefined_factorvae_score_not_zero():
    """No code dimension varies (std below the prune threshold): there is no classifier at all,
    so the score is undefined, with the reason; 0 would read as below chance."""
    rng = np.random.default_rng(0)

    def collapsed(observations):  # a posterior mean that ignores its input, up to a little jitter
        return 0.3 + 1e-4 * rng.normal(size=(observations.shape[0], 4))

    scores = score("factorvae_score", collapsed)
    assert scores["num_active_dims"] == 0
    assert math.isnan(scores["train_accuracy"]) and math.isnan(scores["eval_accuracy"])
    assert set(scores["undefined"]) == {"train_accuracy", "eval_accuracy"}
    assert "no active code dimension" in scores["undefined"]["eval_accuracy"]
    assert "prune_threshold=0.05" in scores["undefined"]["eval_accuracy"]
    assert "undefined" not in score("factorvae_score", oracle())  # only when something is undefined


@pytest.mark.slow
def test_the_published_boosted_trees_keep_dcis_calibration():
    """Oracle near the top, rotated oracle far lower, random codes at chance, as with the forest."""
    boosted = {
        name: score("dci", representation, predictor="boosting")
        for name, representation in (
            ("oracle", oracle()),
            ("rotated", oracle(rotate=True)),
            ("random", random_representation(10, seed=2)),
        )
    }
    for key in ("disentanglement", "completeness", "informativeness"):
        assert boosted["oracle"][key] > 0.95, key
    assert boosted["rotated"]["disentanglement"] < boosted["oracle"]["disentanglement"] - 0.5
    assert boosted["random"]["disentanglement"] < 0.05 and boosted["random"]["completeness"] < 0.05
    assert abs(boosted["random"]["informativeness"] - CHANCE_INFORMATIVENESS) < 0.04

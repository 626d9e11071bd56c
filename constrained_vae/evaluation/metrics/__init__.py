"""Disentanglement scores of a representation, given a dataset with ground-truth factors: one metric
per module, each a sampling wrapper over a pure-array core (``*_from_codes``, ``*_from_features``,
``*_from_votes``).

Each metric is one function ``f(representation_fn, dataset, *, seed=0, **protocol) -> dict``
(the interfaces: :mod:`~constrained_vae.evaluation.metrics.sampling`); the protocol's numbers are
keyword arguments whose defaults are the published protocol as disentanglement_lib runs it
(Locatello et al., ICML 2019, https://github.com/google-research/disentanglement_lib,
``evaluation/metrics/`` and ``config/unsupervised_study_v1/metric_configs/``); ``seed`` fixes
everything random (the factors drawn, the classifiers): same seed, same scores.

Scores are fractions in [0, 1] (accuracies and gaps between them, normalised mutual information,
1 − normalised entropy, ROC-AUCs); a score that is undefined for the representation or the dataset
is NaN, and the result's ``undefined`` maps it to the reason (e.g. a FactorVAE score with no active
code dimension).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from constrained_vae.evaluation.metrics.betavae import betavae_from_features, betavae_score
from constrained_vae.evaluation.metrics.dci import (
    DCI_PREDICTORS,
    completeness,
    dci,
    dci_from_codes,
    disentanglement,
)
from constrained_vae.evaluation.metrics.factorvae import factorvae_from_votes, factorvae_score
from constrained_vae.evaluation.metrics.mig import histogram_discretize, mig, mig_from_codes
from constrained_vae.evaluation.metrics.modularity import modularity_explicitness, modularity_explicitness_from_codes
from constrained_vae.evaluation.metrics.sampling import OBSERVATIONS_PER_CALL, FactorSource, RepresentationFn
from constrained_vae.evaluation.metrics.sap import sap_from_codes, sap_score

METRICS: dict[str, Callable[..., dict[str, Any]]] = {
    "betavae_score": betavae_score,
    "factorvae_score": factorvae_score,
    "mig": mig,
    "dci": dci,
    "sap_score": sap_score,
    "modularity_explicitness": modularity_explicitness,
}

__all__ = [
    "DCI_PREDICTORS",
    "METRICS",
    "OBSERVATIONS_PER_CALL",
    "FactorSource",
    "RepresentationFn",
    "betavae_from_features",
    "betavae_score",
    "completeness",
    "dci",
    "dci_from_codes",
    "disentanglement",
    "factorvae_from_votes",
    "factorvae_score",
    "histogram_discretize",
    "mig",
    "mig_from_codes",
    "modularity_explicitness",
    "modularity_explicitness_from_codes",
    "sap_from_codes",
    "sap_score",
]

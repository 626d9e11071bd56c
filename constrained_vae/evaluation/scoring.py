"""Disentanglement scores of trained runs: ``RUN/metrics.json``.

:func:`evaluate_paths` takes run folders and sweep folders (whose subfolders holding
``config.json`` and ``checkpoint.pt`` are runs), computes the metrics of
:mod:`constrained_vae.evaluation.metrics` (all, or a chosen few) on the posterior mean of each dSprites run,
and writes ``RUN/metrics.json`` atomically::

    {"scores": {"betavae_score": {"train_accuracy": …, "eval_accuracy": …}, "factorvae_score": {…},
                "mig": {"mig": …, "mig_per_factor": {"shape": …, "scale": …, …}}, "dci": {"disentanglement": …, …}},
     "protocols": {metric: {setting: value}}, "notes": {metric: "…"}, "seed": 0, "step": 3000, "dataset": "dsprites",
     "factor_names": ["shape", "scale", …], "representation": "posterior mean", "seconds": {metric: s},
     "versions": {…}}

Every per-factor score (a key holding ``per_factor``: ``mig_per_factor``, ``sap_per_factor``,
``informativeness_per_factor``, ``explicitness_per_factor_test``, …) maps the dataset's factor
names to scores, in the dataset's factor order (files written before held a list in that order:
:func:`keyed_by_factor` reads both); matrices (``importance_matrix``, ``score_matrix``) stay
``[code][factor]`` lists.

A protocol too small for a score to mean anything (:func:`small_sample_note`) is scored all the same,
with a ``warning:`` and its note under ``notes`` (metric → words). A score the metric could not
define (e.g. FactorVAE with no active code dimension) is ``null``,
and the metric's ``undefined`` maps it to the reason; ``protocols["dci"]["predictor"]`` names DCI's
classifier and ``scores["dci"]["predictor_settings"]`` its settings. Scoring a few metrics keeps
the others already in the file when they scored the same checkpoint step with the same seed. Runs
on datasets without ground-truth factors (digits, linear-gaussian, images) are skipped with a message.
``experiments/evaluate.py`` is the command line.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch

from constrained_vae.core.models import VAE
from constrained_vae.data import FACTOR_DATASETS, FactorDataset
from constrained_vae.errors import ConfigError, RunFolderError
from constrained_vae.evaluation.metrics import METRICS, RepresentationFn, dci_from_codes
from constrained_vae.evaluation.metrics.sampling import factor_sizes_of, train_and_test_codes
from constrained_vae.run import folder, locks
from constrained_vae.run.loop import load_run
from constrained_vae.run.memory import check_fits
from constrained_vae.run.settings import RunConfig

ENCODE_BATCH = 256  # observations per encoder forward pass
# The least memory a protocol size takes, for refusing sizes beyond the machine before any metric runs: a
# sampled point holds at least one int64 factor and one float64 code value; a histogram bin, its float64 edge.
POINT_BYTES = 16
BIN_BYTES = 8
HELD_OUT_NAMES = ("num_eval", "num_test")  # what each metric calls its held-out points
NOT_PROTOCOL = ("seed", "n_jobs")  # keyword arguments that are not protocol: recorded apart, or change only speed
HEADLINE_SCORES = (
    ("betavae_score", "eval_accuracy", "BetaVAE"),
    ("factorvae_score", "eval_accuracy", "FactorVAE"),
    ("mig", "mig", "MIG"),
    ("dci", "disentanglement", "DCI-D"),
    ("dci", "completeness", "DCI-C"),
    ("dci", "informativeness", "DCI-I"),
    ("sap_score", "sap", "SAP"),
    ("modularity_explicitness", "modularity_score", "Modularity"),
    ("modularity_explicitness", "explicitness_score_test", "Explicitness"),
)


@dataclass
class Evaluation:
    """One run's outcome: the ``metrics.json`` contents, or why it was skipped."""

    run_dir: Path
    config: RunConfig
    result: dict[str, Any] | None = None
    skipped: str | None = None


# ---------------------------------------------------------------------------- protocols


def default_protocols() -> dict[str, dict[str, Any]]:
    """Each metric's protocol settings (its keyword arguments but :data:`NOT_PROTOCOL`) at their
    defaults: the published protocol, DCI's predictor included."""
    return {
        name: {
            p.name: p.default
            for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in NOT_PROTOCOL
        }
        for name, fn in METRICS.items()
    }


def protocols_with(
    overrides: dict[str, Any] | None = None, metric_names: Sequence[str] | None = None, flag_prefix: str = "--"
) -> dict[str, dict[str, Any]]:
    """The default protocols of ``metric_names`` (default: all), with each of ``overrides`` set in
    every chosen metric that has that setting (others ignore it). ``num_eval`` also sets ``num_test``
    (DCI's, SAP's, modularity's) and ``num_test`` sets ``num_eval``: both are the held-out points
    (:data:`HELD_OUT_NAMES`). A setting that no metric has at all, or an unknown metric, is a
    ConfigError; so is a bad size, naming its flag (``flag_prefix`` + the setting).
    """
    defaults = default_protocols()
    names = list(metric_names) if metric_names is not None else list(defaults)
    unknown = [name for name in names if name not in defaults]
    if unknown or not names:
        raise ConfigError(f"unknown metric(s) {unknown}; choose from {', '.join(defaults)}")
    known_settings = {key for settings in defaults.values() for key in settings}
    protocols = {name: dict(defaults[name]) for name in names}
    for setting, value in (overrides or {}).items():
        if setting not in known_settings:
            raise ConfigError(f"no metric has a setting {setting!r}; known: {', '.join(sorted(known_settings))}")
        check_protocol_setting(setting, value, flag_prefix)
        targets = HELD_OUT_NAMES if setting in HELD_OUT_NAMES else (setting,)
        for name in names:
            for key in targets:
                if key in protocols[name]:
                    protocols[name][key] = value
    return protocols


def check_protocol_setting(setting: str, value: Any, flag_prefix: str = "--") -> None:
    """A protocol size (``num_*``, ``batch_size``) is an integer ≥ 1 (``num_bins`` ≥ 2), checked before
    any metric runs; ConfigError naming the flag."""
    if not (setting.startswith("num_") or setting == "batch_size"):
        return
    minimum = 2 if setting == "num_bins" else 1
    name = f"{flag_prefix}{setting.replace('_', '-')}"
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer ≥ {minimum}, got {value}")
    unit, size = ("bin", BIN_BYTES) if setting == "num_bins" else ("point", POINT_BYTES)
    check_fits(value * size, "cpu", f"{name} {value} (at least {size} bytes a {unit})", f"use a smaller {name}")


def check_metric_seed(seed: Any, flag: str = "--seed") -> None:
    """The metrics' seed: an integer from 0 to 2⁶³ − 1 (numpy's and torch's generators take it)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"{flag} must be an integer from 0 to {2**63 - 1}, got {seed}")


# A score means something only when every class a metric's classifier separates (every bin its histogram
# fills) can get a handful of points on each side, training and held out: with fewer, an accuracy moves in
# steps of whole points (one point: 0 or 1) and a plug-in mutual information is mostly its bias. Smaller
# protocols are warned and noted, not refused: they are what a smoke test runs.
MIN_POINTS_PER_CLASS = 5


def _classes(metric: str, protocol: dict[str, Any], factor_sizes: Sequence[int]) -> tuple[int, str]:
    """How many classes (or bins) a metric's points are spread over, and what they are."""
    if metric in ("betavae_score", "factorvae_score"):  # a point's label is the factor held fixed
        return len(factor_sizes), "factors (a point's class is the factor held fixed)"
    if metric == "mig":
        return int(protocol["num_bins"]), "bins of a code's histogram"
    values = max(factor_sizes), "values of the largest factor (each factor's classifier predicts its value)"
    if metric == "modularity_explicitness" and int(protocol["num_bins"]) > values[0]:
        return int(protocol["num_bins"]), "bins of a code's histogram"
    return values


def small_sample_note(metric: str, protocol: dict[str, Any], factor_sizes: Sequence[int]) -> str | None:
    """Why ``metric``'s score at ``protocol`` on factors of ``factor_sizes`` is too small a sample to mean
    anything: a size (``num_train``, ``num_eval``, ``num_test``) below :data:`MIN_POINTS_PER_CLASS` points
    for each class its classifier separates (BetaVAE, FactorVAE: the factors; DCI, SAP, explicitness: the
    values of the largest factor) or each bin its histogram fills (MIG, modularity); None when none is."""
    classes, what = _classes(metric, protocol, factor_sizes)
    needed = MIN_POINTS_PER_CLASS * classes
    small = [f"{key} = {protocol[key]}" for key in ("num_train", *HELD_OUT_NAMES) if protocol.get(key, needed) < needed]
    if not small:
        return None
    return (
        f"{', '.join(small)} < {needed} ({MIN_POINTS_PER_CLASS} points for each of the {classes} {what}): "
        "too few points for the score to mean anything"
    )


# ---------------------------------------------------------------------------- runs


def is_run_folder(path: Path) -> bool:
    """A run folder holds ``config.json`` and ``checkpoint.pt``."""
    return (path / folder.CONFIG_FILE).is_file() and (path / folder.CHECKPOINT_FILE).is_file()


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders named by ``paths``: each is a run folder, or a sweep folder whose run subfolders
    are taken (sorted by name). RunFolderError for a path that is neither."""
    found: list[Path] = []
    for path in map(Path, paths):
        if is_run_folder(path):
            found.append(path)
            continue
        if not path.is_dir():
            raise RunFolderError(f"{path} is not a folder")
        children = sorted(child for child in path.iterdir() if child.is_dir() and is_run_folder(child))
        if not children:
            raise RunFolderError(
                f"{path} is not a run folder (no {folder.CONFIG_FILE} and {folder.CHECKPOINT_FILE})"
                " nor a sweep folder holding any"
            )
        found.extend(children)
    return found


def posterior_mean_fn(model: VAE, batch_size: int = ENCODE_BATCH) -> RepresentationFn:
    """The representation ``x [n, *sample_shape] -> μ(x)`` float64 numpy ``[n, latent_dim]``: the
    encoder's posterior mean, in batches of ``batch_size``, without gradients, on the model's device."""
    device = next(model.parameters()).device

    def representation(observations: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            means = [model.encode(batch.to(device))[0].cpu() for batch in observations.split(batch_size)]
        return torch.cat(means).double().numpy()

    return representation


def reseed_observations(dataset: FactorDataset, seed: int) -> None:
    """Seed what a dataset draws with its observations (the dSprites variants' colour, noise and
    patch), so that a metric's scores depend on its seed alone, not on what was drawn before."""
    generator = getattr(dataset, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)


def skip_reason(config: RunConfig) -> str | None:
    """Why a run cannot be scored, or None when it can."""
    if config.dataset in FACTOR_DATASETS:
        return None
    return (
        f"dataset {config.dataset!r} has no ground-truth factors; "
        f"disentanglement metrics need one with factors ({', '.join(FACTOR_DATASETS)})"
    )


def scoring_versions() -> dict[str, Any]:
    """The versions of what determines a score: the run's, scikit-learn's and numpy's."""
    return folder.versions() | {"scikit-learn": sklearn.__version__, "numpy": np.__version__}


def json_ready(value: Any) -> Any:
    """``value`` with every NaN or infinite float (an undefined score, whose reason the metric gives
    under ``undefined``) replaced by None, so that it is valid JSON (``null``)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def keyed_by_factor(scores: dict[str, Any], factor_names: Sequence[str]) -> dict[str, Any]:
    """A metric's ``scores`` with each per-factor list (a key holding ``per_factor``) as a mapping from
    ``factor_names`` to its scores; a mapping already is kept. ValueError for a list of another length."""
    keyed = dict(scores)
    for key, value in scores.items():
        if "per_factor" in key and isinstance(value, list):
            if len(value) != len(factor_names):
                raise ValueError(f"{key} has {len(value)} scores for {len(factor_names)} factors {list(factor_names)}")
            keyed[key] = dict(zip(factor_names, value, strict=True))
    return keyed


def evaluate_run(
    run_dir: str | Path,
    *,
    seed: int = 0,
    protocols: dict[str, dict[str, Any]] | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score a trained run on ``protocols`` (metric name → settings; default: every metric at its
    published protocol) and return what ``metrics.json`` holds (see the module docstring).

    RunFolderError if the run cannot be loaded or its dataset has no factors.
    """
    protocols = protocols if protocols is not None else protocols_with()
    trainee = load_run(run_dir, device=device)
    reason = skip_reason(trainee.config)
    if reason is not None or not isinstance(trainee.dataset, FactorDataset):
        raise RunFolderError(f"{run_dir}: {reason or 'its dataset has no ground-truth factors'}")
    representation = posterior_mean_fn(trainee.model)
    scores, seconds, notes = {}, {}, {}
    for name, settings in protocols.items():
        note = small_sample_note(name, settings, trainee.dataset.factor_sizes)
        if note is not None:
            notes[name] = note
            if log is not None:
                log(f"warning: {run_dir}: {name}: {note}")
        started = time.perf_counter()
        reseed_observations(trainee.dataset, seed)
        result = METRICS[name](representation, trainee.dataset, seed=seed, **settings)
        scores[name] = json_ready(keyed_by_factor(result, trainee.dataset.factor_names))
        seconds[name] = round(time.perf_counter() - started, 3)
        if log is not None:
            log(f"{run_dir}: {name} done in {seconds[name]:.1f} s")
    return {
        "scores": scores,
        "protocols": protocols,
        "notes": notes,
        "seed": seed,
        "step": trainee.step,
        "dataset": trainee.config.dataset,
        "factor_names": list(trainee.dataset.factor_names),
        "representation": "posterior mean",
        "seconds": seconds,
        "versions": scoring_versions(),
    }


CODE_DTYPES = ("float32", "float16")  # how a DCI sample's codes may be stored


def check_codes_dtype(codes_dtype: str, flag: str = "--codes-dtype") -> None:
    """ConfigError unless ``codes_dtype`` is one of :data:`CODE_DTYPES`."""
    if codes_dtype not in CODE_DTYPES:
        raise ConfigError(f"{flag} must be one of {', '.join(CODE_DTYPES)}, got {codes_dtype!r}")


def dci_sample(
    run_dir: str | Path, protocol: dict[str, Any], *, seed: int = 0, device: str = "cpu", codes_dtype: str = "float32"
) -> dict[str, np.ndarray]:
    """The labelled codes that DCI at ``protocol`` (its ``num_train``, ``num_test``) and ``seed`` scores,
    drawn exactly as :func:`evaluate_run` draws them, to be scored elsewhere by :func:`dci_from_sample`.

    Codes are stored as ``codes_dtype``: ``float32`` holds the encoder's posterior means exactly (they
    are float32), so DCI from the sample is DCI from the run; ``float16`` rounds them to 11 significant
    bits (half the bytes; DCI moves by ~1e-2 at most on small samples, tests/test_study_parts.py).
    Factor classes are stored as uint8 (every factor dataset has fewer than 256 classes per factor).
    """
    check_codes_dtype(codes_dtype)
    trainee = load_run(run_dir, device=device)
    reason = skip_reason(trainee.config)
    if reason is not None or not isinstance(trainee.dataset, FactorDataset):
        raise RunFolderError(f"{run_dir}: {reason or 'its dataset has no ground-truth factors'}")
    sizes = factor_sizes_of(trainee.dataset)
    if sizes.max() > np.iinfo(np.uint8).max + 1:
        raise RunFolderError(f"{run_dir}: a factor has more than 256 classes; its classes do not fit uint8")
    reseed_observations(trainee.dataset, seed)
    train_codes, train_factors, test_codes, test_factors = train_and_test_codes(
        posterior_mean_fn(trainee.model), trainee.dataset, protocol["num_train"], protocol["num_test"], seed
    )
    return {
        "train_codes": train_codes.astype(codes_dtype),
        "train_factors": train_factors.astype(np.uint8),
        "test_codes": test_codes.astype(codes_dtype),
        "test_factors": test_factors.astype(np.uint8),
        "factor_sizes": sizes,
        "factor_names": np.array(trainee.dataset.factor_names),
        "seed": np.int64(seed),
        "step": np.int64(trainee.step),
    }


def dci_from_sample(sample: dict[str, np.ndarray], protocol: dict[str, Any]) -> dict[str, Any]:
    """DCI (its ``predictor`` of ``protocol``) of a :func:`dci_sample`, as ``metrics.json`` holds it."""
    result = dci_from_codes(
        sample["train_codes"].astype(np.float64),
        sample["train_factors"].astype(np.int64),
        sample["test_codes"].astype(np.float64),
        sample["test_factors"].astype(np.int64),
        factor_sizes=sample["factor_sizes"],
        seed=int(sample["seed"]),
        predictor=protocol["predictor"],
    )
    names = sample.get("factor_names")
    return json_ready(result if names is None else keyed_by_factor(result, [str(name) for name in names]))


def merged_with_previous(result: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """``result`` plus the metrics that only ``previous`` holds, when ``previous`` scored the same
    checkpoint step with the same seed (so that metrics can be computed one at a time); their
    per-factor lists, from files written before they were keyed, are keyed by ``result``'s factor names."""
    if not previous or previous.get("step") != result["step"] or previous.get("seed") != result["seed"]:
        return result
    merged = dict(result)
    for part in ("scores", "protocols", "seconds", "notes"):  # a metric scored now replaces all it had
        kept = {k: v for k, v in (previous.get(part) or {}).items() if k not in result["scores"]}
        merged[part] = {**kept, **result.get(part, {})}
    names = result.get("factor_names")
    for metric, scores in previous.get("scores", {}).items():
        if names is not None and metric not in result["scores"] and isinstance(scores, dict):
            try:
                merged["scores"][metric] = keyed_by_factor(scores, names)
            except ValueError:  # not this dataset's factors: kept as it was written
                pass
    return merged


def write_metrics(run_dir: str | Path, result: dict[str, Any]) -> Path:
    """Write ``RUN/metrics.json`` atomically, keeping the metrics of an earlier evaluation of the
    same step and seed that ``result`` does not recompute; return its path."""
    return folder.write_scores(run_dir, merged_with_previous(result, folder.read_scores(run_dir)))


def evaluate_paths(
    paths: Sequence[str | Path],
    *,
    seed: int = 0,
    protocols: dict[str, dict[str, Any]] | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> list[Evaluation]:
    """Score every run named by ``paths`` (runs or sweeps; all are found before any is scored) and
    write each one's ``metrics.json``; runs without factors are skipped (``log`` is told why).

    Each run folder is held while it is scored (a run still training raises FolderInUse)."""
    check_metric_seed(seed)
    run_dirs = find_run_dirs(paths)
    configs = [folder.read_config(run_dir) for run_dir in run_dirs]
    evaluations = []
    for run_dir, config in zip(run_dirs, configs, strict=True):
        reason = skip_reason(config)
        if reason is not None:
            if log is not None:
                log(f"skipped {run_dir}: {reason}")
            evaluations.append(Evaluation(run_dir, config, skipped=reason))
            continue
        with locks.hold(run_dir):
            write_metrics(run_dir, evaluate_run(run_dir, seed=seed, protocols=protocols, device=device, log=log))
        evaluations.append(Evaluation(run_dir, config, result=folder.read_scores(run_dir)))
    return evaluations


# ---------------------------------------------------------------------------- table


def _setting(config: RunConfig) -> str:
    """``ε=20``, ``β=4``; a baseline with its name: ``geco κ=30``, ``capacity ε=25``."""
    settings = config.objective_settings
    budget = f"{settings.budget_symbol}={settings.budget_value:g}"
    return budget if config.objective is None else f"{settings.name} {budget}"


def _cell(result: dict[str, Any], metric: str, key: str) -> str:
    scores = result["scores"].get(metric, {})
    value = scores.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.3f}"
    return "undefined" if key in scores.get("undefined", {}) else "—"


def _footnotes(evaluations: Sequence[Evaluation]) -> list[str]:
    """Why each undefined headline score is undefined (once per score and reason), which scores rest on too
    few points (:func:`small_sample_note`), and which DCI predictor the rows used."""
    notes: dict[str, None] = {}  # an ordered set
    predictors: dict[str, None] = {}
    for result in (ev.result for ev in evaluations if ev.result is not None):
        for metric, key, label in HEADLINE_SCORES:
            reason = result["scores"].get(metric, {}).get("undefined", {}).get(key)
            if reason is not None:
                notes[f"{label} undefined: {reason}"] = None
        for metric, note in (result.get("notes") or {}).items():
            label = next((label for name, _, label in HEADLINE_SCORES if name == metric), metric)
            notes[f"{label}: {note}"] = None
        if "dci" in result["scores"]:
            predictors[str(result["protocols"].get("dci", {}).get("predictor", "not recorded"))] = None
    if predictors:
        published = " (disentanglement_lib's, as published)" if list(predictors) == ["boosting"] else ""
        notes[f"DCI predictor: {', '.join(predictors)}{published}"] = None
    return list(notes)


def format_table(evaluations: Sequence[Evaluation]) -> str:
    """A plain-text table: one row per run, the headline score of each metric (eval/test side);
    "undefined" for a score the metric could not define (the reason follows the table)."""
    header = ["run", "setting", *(label for _, _, label in HEADLINE_SCORES)]
    rows = []
    for ev in evaluations:
        if ev.result is None:
            cells = ["skipped"] + [""] * (len(HEADLINE_SCORES) - 1)
        else:
            cells = [_cell(ev.result, metric, key) for metric, key, _ in HEADLINE_SCORES]
        rows.append([str(ev.run_dir), _setting(ev.config), *cells])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    legend = (
        "BetaVAE, FactorVAE: eval accuracy; MIG: mean normalised gap; "
        "DCI-D, DCI-C: disentanglement, completeness; DCI-I: test accuracy (informativeness); "
        "SAP: mean gap in test accuracy; Modularity: one factor per code (noise scores high too); "
        "Explicitness: test ROC-AUC (chance 0.5)"
    )
    return "\n".join([*(line.rstrip() for line in lines), legend, *_footnotes(evaluations)])


__all__ = [
    "FACTOR_DATASETS",
    "Evaluation",
    "dci_from_sample",
    "dci_sample",
    "default_protocols",
    "evaluate_paths",
    "evaluate_run",
    "find_run_dirs",
    "format_table",
    "is_run_folder",
    "json_ready",
    "keyed_by_factor",
    "posterior_mean_fn",
    "protocols_with",
    "skip_reason",
    "small_sample_note",
    "write_metrics",
]

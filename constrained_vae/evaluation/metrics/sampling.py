"""What every metric shares: the dataset and representation interfaces, protocol checks, and codes.

A metric scores a representation on a dataset with ground-truth factors:

- ``representation_fn`` maps a batch of observations (a torch tensor ``[n, *sample_shape]``) to
  codes ``[n, code_dim]`` (numpy or torch), e.g. a VAE's posterior mean;
- ``dataset`` has ``factor_sizes`` (list of ints), ``sample_factors(n, rng)`` (int ``[n, n_factors]``
  class indices; ``rng`` a numpy Generator) and ``observations(factors)`` (the tensor batch with
  those factors): :class:`FactorSource`, a subset of :class:`~constrained_vae.data.base.FactorDataset`.

Every observation batch goes through ``representation_fn`` in chunks of at most
:data:`OBSERVATIONS_PER_CALL` (a constant, so the draws depend only on the seed and the protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

RepresentationFn = Callable[[torch.Tensor], "np.ndarray | torch.Tensor"]
OBSERVATIONS_PER_CALL = 2048  # observations rendered and encoded at once (bounds memory, not results)


class FactorSource(Protocol):
    """What the metrics need of a dataset (a subset of :class:`~constrained_vae.data.base.FactorDataset`)."""

    factor_sizes: list[int]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def observations(self, factors: np.ndarray) -> torch.Tensor: ...


def check_ints(minimum: int = 1, **values: int) -> None:
    """ValueError unless every value is an integer ≥ ``minimum`` (protocol counts)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def factor_sizes_of(dataset: FactorSource) -> np.ndarray:
    """The dataset's factor sizes as int64 ``[n_factors]``; each factor needs at least 2 classes."""
    sizes = getattr(dataset, "factor_sizes", None)
    if sizes is None or not hasattr(dataset, "sample_factors") or not hasattr(dataset, "observations"):
        raise ValueError(
            f"{type(dataset).__name__} has no ground-truth factors: the metrics need factor_sizes, "
            "sample_factors(n, rng) and observations(factors)"
        )
    sizes = np.asarray(sizes)
    if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer) or (sizes < 2).any():
        raise ValueError(f"factor_sizes must be a non-empty list of integers ≥ 2, got {sizes.tolist()}")
    return sizes.astype(np.int64)


def sample_factors(dataset: FactorSource, n: int, rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    """``n`` factor rows from the dataset, checked: int64 ``[n, n_factors]``, each class in range."""
    factors = np.asarray(dataset.sample_factors(n, rng))
    if factors.shape != (n, sizes.size) or not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"sample_factors({n}) must return integers of shape {(n, sizes.size)}, got {factors.shape}")
    if (factors < 0).any() or (factors >= sizes).any():
        raise ValueError(f"sample_factors returned classes outside the factor sizes {sizes.tolist()}")
    return factors.astype(np.int64, copy=True)


def as_codes(output: Any, rows: int) -> np.ndarray:
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


def codes_of(representation_fn: RepresentationFn, dataset: FactorSource, factors: np.ndarray) -> np.ndarray:
    """Codes of the observations with ``factors`` (int ``[n, n_factors]``): float64 ``[n, code_dim]``."""
    chunks = []
    for start in range(0, factors.shape[0], OBSERVATIONS_PER_CALL):
        rows = factors[start : start + OBSERVATIONS_PER_CALL]
        codes = as_codes(representation_fn(dataset.observations(rows)), rows.shape[0])
        if chunks and codes.shape[1] != chunks[0].shape[1]:
            raise ValueError(f"representation_fn changed its code size from {chunks[0].shape[1]} to {codes.shape[1]}")
        chunks.append(codes)
    return np.concatenate(chunks)


def groups_per_call(group_size: int) -> int:
    """How many groups of ``group_size`` observations to encode at once."""
    return max(1, OBSERVATIONS_PER_CALL // group_size)


def labelled_codes(
    representation_fn: RepresentationFn, dataset: FactorSource, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random factor rows (int64 ``[n, n_factors]``) and the codes of their observations
    (float64 ``[n, code_dim]``): the sample every code-and-label metric (MIG, DCI, SAP, modularity)
    starts from."""
    factors = sample_factors(dataset, n, rng, factor_sizes_of(dataset))
    return factors, codes_of(representation_fn, dataset, factors)


def train_and_test_codes(
    representation_fn: RepresentationFn, dataset: FactorSource, num_train: int, num_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A training and a test sample of :func:`labelled_codes`, drawn in that order from one generator
    seeded with ``seed`` (disentanglement_lib's two ``generate_batch_factor_code`` calls): float64
    ``train_codes [num_train, code_dim]``, int64 ``train_factors [num_train, n_factors]``, then the same
    for the ``num_test`` test points."""
    rng = np.random.default_rng(seed)
    train_factors, train_codes = labelled_codes(representation_fn, dataset, num_train, rng)
    test_factors, test_codes = labelled_codes(representation_fn, dataset, num_test, rng)
    return train_codes, train_factors, test_codes, test_factors


def check_codes_and_factors(
    train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two labelled samples, checked: finite float64 codes ``[n, code_dim]`` and int64 factor
    classes ``[n, n_factors]`` (non-negative integers), the same ``code_dim`` and ``n_factors`` in both
    samples, as many rows of codes as of factors, and at least two rows each. ValueError otherwise."""
    checked = []
    for name, codes, factors in (("train", train_codes, train_factors), ("test", test_codes, test_factors)):
        codes, factors = np.asarray(codes), np.asarray(factors)
        numeric = np.issubdtype(codes.dtype, np.floating) or np.issubdtype(codes.dtype, np.integer)
        if codes.dtype == bool or not numeric:
            raise ValueError(f"{name}_codes must be numbers, got dtype {codes.dtype}")
        if codes.ndim != 2 or codes.shape[1] < 1:
            raise ValueError(f"{name}_codes must have shape [n, code_dim], got {codes.shape}")
        if factors.dtype == bool or not np.issubdtype(factors.dtype, np.integer):
            raise ValueError(f"{name}_factors must be integer class indices, got dtype {factors.dtype}")
        if factors.ndim != 2 or factors.shape[1] < 1:
            raise ValueError(f"{name}_factors must have shape [n, n_factors], got {factors.shape}")
        if codes.shape[0] != factors.shape[0]:
            raise ValueError(
                f"{name}_codes has {codes.shape[0]} rows but {name}_factors has {factors.shape[0]}: "
                "each row of codes needs the factor classes of the same observation"
            )
        if codes.shape[0] < 2:
            raise ValueError(f"the {name} sample needs at least 2 rows, got {codes.shape[0]}")
        if (factors < 0).any():
            raise ValueError(f"{name}_factors must be class indices ≥ 0, got a minimum of {factors.min()}")
        codes = codes.astype(np.float64)
        if not np.isfinite(codes).all():
            raise ValueError(f"{name}_codes contains NaN or infinite values")
        checked += [codes, factors.astype(np.int64)]
    train_codes, train_factors, test_codes, test_factors = checked
    if test_codes.shape[1] != train_codes.shape[1]:
        raise ValueError(f"train_codes has {train_codes.shape[1]} dimensions but test_codes has {test_codes.shape[1]}")
    if test_factors.shape[1] != train_factors.shape[1]:
        raise ValueError(
            f"train_factors has {train_factors.shape[1]} factors but test_factors has {test_factors.shape[1]}"
        )
    return train_codes, train_factors, test_codes, test_factors

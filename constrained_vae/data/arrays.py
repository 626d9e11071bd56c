"""Your own data: images or vectors held in memory, saved once as an ``.npz`` that runs name.

A run folder must be able to find its data again (to resume, to be scored, to draw its figures, in
a sweep's worker), so a dataset of your own is a file: :func:`save_arrays` writes one from
tensors, ``--dataset arrays --data-path FILE.npz`` (``RunConfig(dataset="arrays", data_path=...)``)
trains on it. The file holds:

* ``data``: ``[n, *sample_shape]``, float (any float dtype, read as float32) or uint8 (read as
  ``value / 255``). Images are ``[n, channels, height, width]``; the built-in conv models take
  ``(1 or 3, 64, 64)``, other shapes need a ``--model`` of your own. Vectors are ``[n, features]``.
* ``likelihood`` (optional): ``"bernoulli"`` (values in [0, 1]) or ``"gaussian"``. Without it:
  Bernoulli when every value lies in [0, 1], else Gaussian.
* ``factors`` (optional): int ``[n, k]``, the ground-truth factor classes of each observation,
  class indices 0 … size − 1 in column j; with ``factor_names`` (optional, ``k`` strings). The
  disentanglement metrics sample observations by their factors, so factors must form a complete
  grid: every combination of classes exactly once (``n = prod(sizes)``), as dSprites, 3D Shapes and
  MPI3D do. Without factors the run trains, and scoring is skipped with that reason.

Memory: the data are held once as float32 (``4 · n · prod(sample_shape)`` bytes); ``batches``
copies them to the run's device once.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from constrained_vae.data.base import Likelihood, TensorDataset, read_npy_header
from constrained_vae.errors import DataError

__all__ = ["ARRAYS", "ArrayDataset", "ArrayFactorDataset", "load_arrays", "peek_arrays", "save_arrays"]

ARRAYS = "arrays"  # the dataset's name on the command line
LIKELIHOODS = ("bernoulli", "gaussian")


def save_arrays(
    path: str | os.PathLike[str],
    data: torch.Tensor | np.ndarray,
    *,
    factors: torch.Tensor | np.ndarray | None = None,
    factor_names: Sequence[str] | None = None,
    likelihood: Likelihood | None = None,
) -> Path:
    """Write ``data`` (``[n, *sample_shape]``) and, if given, its ``factors`` as the ``.npz`` that
    ``--dataset arrays --data-path PATH`` reads (see the module docstring), with its likelihood stated
    (the one given, else the one the data's range implies). DataError for what could not be read back."""
    path = Path(path)
    values = {"data": _numpy(data)}
    if likelihood is not None:
        values["likelihood"] = np.array(likelihood)
    if factors is not None:
        values["factors"] = _numpy(factors)
    if factor_names is not None:
        values["factor_names"] = np.array([str(name) for name in factor_names])
    values["likelihood"] = np.array(_dataset_of(path, values).likelihood)  # checked as it will be read; stated
    with open(path, "wb") as file:
        np.savez(file, **values)
    return path


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


class ArrayDataset(TensorDataset):
    """Observations of your own, without ground-truth factors (see the module docstring)."""


class ArrayFactorDataset(ArrayDataset):
    """Observations of your own on a complete grid of ground-truth factors (the metrics' interface)."""

    def __init__(
        self, name: str, data: torch.Tensor, likelihood: Likelihood, factors: np.ndarray, factor_names: list[str]
    ) -> None:
        super().__init__(name, data, likelihood)
        self.factor_names = factor_names
        self.factor_sizes = [int(size) for size in factors.max(axis=0) + 1]
        self._rows = np.empty(int(np.prod(self.factor_sizes)), dtype=np.int64)
        self._rows[self._flat(factors)] = np.arange(len(factors))

    def _flat(self, factors: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index(tuple(np.asarray(factors, dtype=np.int64).T), self.factor_sizes)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor vectors, each class uniform and independent: int64 ``[n, k]``."""
        return np.stack([rng.integers(size, size=n) for size in self.factor_sizes], axis=1).astype(np.int64)

    def observations(self, factors: np.ndarray) -> torch.Tensor:
        """The observations with the given factor classes, float32 ``[n, *sample_shape]``."""
        return self.data[torch.from_numpy(self._rows[self._flat(factors)])]


def load_arrays(path: str | os.PathLike[str]) -> ArrayDataset:
    """The dataset in the ``.npz`` at ``path``; DataError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            values = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz of arrays ({type(error).__name__}: {error})") from None
    return _dataset_of(path, values)


def _dataset_of(path: Path, values: dict[str, np.ndarray]) -> ArrayDataset:
    unknown = sorted(set(values) - {"data", "likelihood", "factors", "factor_names"})
    if unknown:
        raise DataError(f"{path}: unknown arrays {unknown}; it may hold data, likelihood, factors, factor_names")
    if "data" not in values:
        raise DataError(f"{path}: no 'data' array (the observations, [n, *sample_shape])")
    raw = values["data"]
    if raw.dtype != np.uint8 and not np.issubdtype(raw.dtype, np.floating):
        raise DataError(f"{path}: 'data' must be float or uint8, got dtype {raw.dtype}")
    if raw.ndim not in (2, 4) or raw.shape[0] < 1 or 0 in raw.shape:
        raise DataError(
            f"{path}: 'data' must be [n, features] vectors or [n, channels, height, width] images, got shape "
            f"{list(raw.shape)}"
        )
    data = torch.from_numpy(raw.astype(np.float32) / 255.0 if raw.dtype == np.uint8 else raw.astype(np.float32))
    if not torch.isfinite(data).all():
        raise DataError(f"{path}: 'data' holds NaN or infinite values")
    likelihood = _likelihood(path, values.get("likelihood"), data)
    factors = values.get("factors")
    if factors is None:
        if "factor_names" in values:
            raise DataError(f"{path}: 'factor_names' without 'factors'")
        return ArrayDataset(ARRAYS, data, likelihood)
    factors = _check_factors(path, factors, len(data))
    names = values.get("factor_names")
    names = [f"factor {j}" for j in range(factors.shape[1])] if names is None else [str(name) for name in names]
    if len(names) != factors.shape[1] or len(set(names)) != len(names):
        raise DataError(f"{path}: 'factor_names' must be {factors.shape[1]} distinct names, got {names}")
    return ArrayFactorDataset(ARRAYS, data, likelihood, factors, names)


def _likelihood(path: Path, given: np.ndarray | None, data: torch.Tensor) -> Likelihood:
    unit = bool(data.min() >= 0 and data.max() <= 1)
    if given is None:
        return "bernoulli" if unit else "gaussian"
    likelihood = str(given)
    if likelihood not in LIKELIHOODS:
        raise DataError(f"{path}: 'likelihood' must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
    if likelihood == "bernoulli" and not unit:
        raise DataError(f"{path}: a Bernoulli likelihood needs data in [0, 1], found [{data.min():g}, {data.max():g}]")
    return likelihood  # type: ignore[return-value]


def _check_factors(path: Path, factors: np.ndarray, n: int) -> np.ndarray:
    if not np.issubdtype(factors.dtype, np.integer) or factors.ndim != 2 or factors.shape[0] != n:
        raise DataError(
            f"{path}: 'factors' must be integer class indices [n, k] with n = {n} (one row per observation), "
            f"got {factors.dtype} {list(factors.shape)}"
        )
    if factors.shape[1] < 1 or factors.min() < 0:
        raise DataError(f"{path}: 'factors' must hold class indices 0, 1, … (at least one factor)")
    sizes = factors.max(axis=0) + 1
    flat = np.ravel_multi_index(tuple(factors.astype(np.int64).T), tuple(int(s) for s in sizes))
    if n != int(np.prod(sizes)) or len(np.unique(flat)) != n:
        raise DataError(
            f"{path}: 'factors' must form a complete grid (every combination of classes exactly once: "
            f"{int(np.prod(sizes))} observations for sizes {sizes.tolist()}), found {len(np.unique(flat))} distinct "
            f"of {n}; the metrics sample observations by their factors. Leave out 'factors' to train without them"
        )
    return factors.astype(np.int64)


def peek_arrays(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], Likelihood]:
    """The sample shape of the file's ``data`` and its likelihood, which the run's defaults depend on:
    read from the headers alone when the file states its likelihood (:func:`save_arrays` always does)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            with archive.open("data.npy") as member:
                shape, _, _ = read_npy_header(member)
            if "likelihood.npy" not in archive.namelist():
                return tuple(shape[1:]), load_arrays(path).likelihood  # the data's range decides
            with archive.open("likelihood.npy") as member:
                likelihood = str(np.lib.format.read_array(member, allow_pickle=False))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except KeyError:
        raise DataError(f"{path}: no 'data' array (the observations, [n, *sample_shape])") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz of arrays ({type(error).__name__}: {error})") from None
    if likelihood not in LIKELIHOODS:
        raise DataError(f"{path}: 'likelihood' must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
    return tuple(shape[1:]), likelihood  # type: ignore[return-value]

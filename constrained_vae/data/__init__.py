"""Datasets as tensors, with their ground-truth factors where known.

:func:`load_dataset` picks one by the name used on the command line and checks
that its values suit the likelihood the run will use.
"""

from __future__ import annotations

import torch

from constrained_vae.data.base import BatchFn, Dataset, FactorDataset, TensorDataset, raise_malloc_thresholds
from constrained_vae.errors import DataError

__all__ = ["BatchFn", "Dataset", "FactorDataset", "TensorDataset", "check_likelihood_range", "load_dataset"]


def load_dataset(
    name: str,
    *,
    data_path: str | None = None,
    spectrum: list[float] | None = None,
    num_samples: int = 20000,
    seed: int = 0,
) -> Dataset:
    """The dataset called ``name`` (dsprites, dsprites-npz, digits, linear-gaussian).

    Raises glibc's malloc thresholds first, whatever the dataset (see :func:`raise_malloc_thresholds`).
    """
    raise_malloc_thresholds()
    if name == "dsprites":
        from constrained_vae.data.dsprites import DSprites

        return DSprites()
    if name == "dsprites-npz":
        from constrained_vae.data.dsprites import load_dsprites_npz

        if not data_path:
            raise DataError("--dataset dsprites-npz needs --data-path")
        return load_dsprites_npz(data_path)
    if name == "digits":
        from constrained_vae.data.synthetic import load_digits

        return load_digits()
    if name == "linear-gaussian":
        from constrained_vae.data.synthetic import linear_gaussian

        return linear_gaussian(spectrum or [16.0, 8.0, 4.0, 2.0, 1.0], num_samples, seed)
    raise DataError(f"unknown dataset {name!r}; choose dsprites, dsprites-npz, digits or linear-gaussian")


def check_likelihood_range(data: torch.Tensor, likelihood: str, source: str) -> None:
    """Bernoulli data must lie in [0, 1]; any data must be finite."""
    if not torch.isfinite(data).all():
        raise DataError(f"{source}: data contain NaN or infinite values")
    if likelihood == "bernoulli" and data.numel() and (data.min() < 0 or data.max() > 1):
        lo, hi = float(data.min()), float(data.max())
        raise DataError(f"{source}: Bernoulli likelihood needs data in [0, 1], found values in [{lo:g}, {hi:g}]")

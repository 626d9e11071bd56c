"""The dataset interface every loader returns.

A dataset is indexable by a batch of integer indices and returns a float32 tensor
of observations in the layout the models take: ``[n, channels, 64, 64]`` for
images, ``[n, features]`` for flat vectors. Datasets whose generative factors are
known also expose them (see :class:`FactorDataset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

Likelihood = Literal["bernoulli", "gaussian"]


@runtime_checkable
class Dataset(Protocol):
    """What the trainer needs from a dataset."""

    name: str
    likelihood: Likelihood  # the likelihood the data are meant for

    def __len__(self) -> int: ...

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one observation, e.g. ``(1, 64, 64)`` or ``(64,)``."""
        ...

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Observations at ``indices`` (int64, 1-D) as float32, ``[n, *sample_shape]``."""
        ...


@runtime_checkable
class FactorDataset(Dataset, Protocol):
    """A dataset with discrete ground-truth factors (the metrics' interface)."""

    factor_names: list[str]
    factor_sizes: list[int]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor class-index vectors, int64 ``[n, len(factor_sizes)]``."""
        ...

    def observations(self, factors: np.ndarray) -> torch.Tensor:
        """Observations with the given factor classes, float32 ``[n, *sample_shape]``."""
        ...


@dataclass
class TensorDataset:
    """A dataset held in memory as one float32 tensor."""

    name: str
    data: torch.Tensor
    likelihood: Likelihood

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        return self.data[indices]

"""The dataset interface every loader returns.

A dataset is indexable by a batch of integer indices and returns a float32 tensor
of observations in the layout the models take: ``[n, channels, 64, 64]`` for
images, ``[n, features]`` for flat vectors. Datasets whose generative factors are
known also expose them (see :class:`FactorDataset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Literal, Protocol, runtime_checkable

import numpy as np
import torch

Likelihood = Literal["bernoulli", "gaussian"]


class BatchFn(Protocol):
    """Observations at int64 ``[n]`` indices, on the indices' device, ``[n, *sample_shape]`` float32.

    Datasets whose observations are random (the dSprites variants' colours and noise) draw them from
    ``generator`` (on the indices' device; None: that device's default generator); the others draw
    nothing and ignore it.
    """

    def __call__(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


class Rows:
    """The rows of a tensor at the given indices: the batch function of data held in memory."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table

    def __call__(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.table[indices]


_malloc_thresholds_raised = False


def raise_malloc_thresholds() -> None:
    """Keep freed temporaries of a few MB in the process instead of returning them to the OS (once per process).

    glibc malloc serves blocks above its mmap threshold (128 KiB at start) with mmap, and trims the
    heap when more than twice that is free at its top; freeing an mmap'd block raises the threshold
    to that block's size (up to 32 MiB). Training and rendering allocate and free ~1–2 MB float
    temporaries every step (a batch of 64 images is 1 MB, and so are the conv VAE's activations),
    which glibc otherwise keeps unmapping and faulting back in (the gain: docs/benchmarks.md, "Memory
    allocator thresholds"). Freeing one 16 MiB block raises the thresholds
    (mmap 16 MiB, trim 32 MiB) as glibc itself would after such a free. Other allocators ignore this.
    """
    global _malloc_thresholds_raised
    if not _malloc_thresholds_raised:
        block = np.empty(16 << 20, dtype=np.uint8)
        del block
        _malloc_thresholds_raised = True


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

    def batches(self, device: torch.device) -> BatchFn:
        """The training path: a function from int64 indices on ``device`` to their observations there.

        It never waits for the host (no checks, no data-dependent shapes), so a GPU step can be
        queued while the previous one runs; indices must be in range. On CPU its batches equal
        :meth:`get`'s bit for bit.
        """
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

    def batches(self, device: torch.device) -> BatchFn:
        """Rows of the data, copied to ``device`` once."""
        return Rows(self.data.to(device))


def read_npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from an ``.npy`` stream positioned at its start."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")

"""Datasets as tensors, with their ground-truth factors where known.

:data:`DATASETS` is the one table of the datasets a run can train on, by the name used on the
command line: what each one reads (``--data-path``: a file or a folder), whether it has
ground-truth factors (the disentanglement metrics need them), and where it comes from.
:func:`load_dataset` builds one from its name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from constrained_vae.data.base import BatchFn, Dataset, FactorDataset, TensorDataset, raise_malloc_thresholds
from constrained_vae.errors import DataError


@dataclass(frozen=True)
class DataSource:
    """What ``--dataset NAME`` trains on.

    ``path`` says what ``--data-path`` must name ("" when the dataset needs none); ``factors``
    whether it has ground-truth factors; ``takes_factor_sizes`` whether ``--factor-sizes`` may
    describe its file's grid; ``about`` is the one-line description the command line shows.
    """

    name: str
    load: Callable[[DatasetRequest], Dataset]
    about: str
    path: str = ""
    factors: bool = True
    takes_factor_sizes: bool = False


@dataclass(frozen=True)
class DatasetRequest:
    """The run settings a dataset is built from."""

    data_path: str | None = None
    spectrum: Sequence[float] = (16.0, 8.0, 4.0, 2.0, 1.0)
    num_samples: int = 20000
    seed: int = 0
    factor_sizes: Sequence[int] | None = None


def _dsprites(request: DatasetRequest) -> Dataset:
    from constrained_vae.data.dsprites import DSprites

    return DSprites()


def _dsprites_npz(request: DatasetRequest) -> Dataset:
    from constrained_vae.data.dsprites import load_dsprites_npz

    return load_dsprites_npz(request.data_path)


def _color_dsprites(request: DatasetRequest) -> Dataset:
    from constrained_vae.data.dsprites_variants import ColorDSprites

    return ColorDSprites(seed=request.seed)


def _noisy_dsprites(request: DatasetRequest) -> Dataset:
    from constrained_vae.data.dsprites_variants import NoisyDSprites

    return NoisyDSprites(seed=request.seed)


def _scream_dsprites(request: DatasetRequest) -> Dataset:
    from constrained_vae.data.dsprites_variants import ScreamDSprites

    return ScreamDSprites(request.data_path, seed=request.seed)


def _shapes3d(request: DatasetRequest) -> Dataset:
    from constrained_vae.data.shapes3d import Shapes3D

    return Shapes3D(request.data_path)


def _mpi3d(variant: str) -> Callable[[DatasetRequest], Dataset]:
    def load(request: DatasetRequest) -> Dataset:
        from constrained_vae.data.mpi3d import FACTOR_SIZES, MPI3D

        return MPI3D(request.data_path, variant=variant, factor_sizes=request.factor_sizes or FACTOR_SIZES)

    return load


def _images(request: DatasetRequest) -> Dataset:
    from constrained_vae.data.image_folder import ImageFolder

    return ImageFolder(request.data_path)


def _arrays(request: DatasetRequest) -> Dataset:
    from constrained_vae.data.arrays import load_arrays

    return load_arrays(request.data_path)


def _digits(request: DatasetRequest) -> Dataset:
    from constrained_vae.data.synthetic import load_digits

    return load_digits()


def _linear_gaussian(request: DatasetRequest) -> Dataset:
    from constrained_vae.data.synthetic import linear_gaussian

    return linear_gaussian(list(request.spectrum), request.num_samples, request.seed)


_SOURCES = (
    DataSource("dsprites", _dsprites, "dSprites rendered procedurally on the run's device (no download)"),
    DataSource("dsprites-npz", _dsprites_npz, "the official dSprites file", path="the dSprites .npz"),
    DataSource("color-dsprites", _color_dsprites, "dSprites in a random colour per image (disentanglement_lib)"),
    DataSource("noisy-dsprites", _noisy_dsprites, "dSprites on uniform noise (disentanglement_lib)"),
    DataSource(
        "scream-dsprites",
        _scream_dsprites,
        "dSprites inverted on a patch of The Scream (disentanglement_lib)",
        path="an image of The Scream (JPEG or PNG)",
    ),
    DataSource("shapes3d", _shapes3d, "3D Shapes (Burgess & Kim 2018)", path="3dshapes.h5"),
    *(
        DataSource(
            f"mpi3d-{variant}",
            _mpi3d(variant),
            f"MPI3D {variant} (Gondal et al. 2019)",
            path=f"mpi3d_{variant}.npz",
            takes_factor_sizes=True,
        )
        for variant in ("toy", "realistic", "real")
    ),
    DataSource("images", _images, "a folder of PNG or JPEG images of one size", path="the folder", factors=False),
    DataSource(
        "arrays",
        _arrays,
        "your own images or vectors, with ground-truth factors if you have them (constrained_vae.data.save_arrays)",
        path="an .npz of 'data' [n, ...] and optionally 'factors' [n, k] (save_arrays writes one)",
    ),
    DataSource("digits", _digits, "scikit-learn's 8×8 digits", factors=False),
    DataSource("linear-gaussian", _linear_gaussian, "x = A z + noise with a closed-form β*(ε)", factors=False),
)
DATASETS: dict[str, DataSource] = {source.name: source for source in _SOURCES}
FACTOR_DATASETS: tuple[str, ...] = tuple(name for name, source in DATASETS.items() if source.factors)


def load_dataset(name: str, **settings: Any) -> Dataset:
    """The dataset called ``name`` (a key of :data:`DATASETS`), built from ``settings`` (the fields
    of :class:`DatasetRequest`).

    Raises glibc's malloc thresholds first, whatever the dataset (see :func:`raise_malloc_thresholds`).
    """
    raise_malloc_thresholds()
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    source = DATASETS[name]
    request = DatasetRequest(**settings)
    if source.path and not request.data_path:
        raise DataError(f"--dataset {name} needs --data-path ({source.path})")
    return source.load(request)


def check_likelihood_range(data: torch.Tensor, likelihood: str, source: str) -> None:
    """Bernoulli data must lie in [0, 1]; any data must be finite."""
    if not torch.isfinite(data).all():
        raise DataError(f"{source}: data contain NaN or infinite values")
    if likelihood == "bernoulli" and data.numel() and (data.min() < 0 or data.max() > 1):
        lo, hi = float(data.min()), float(data.max())
        raise DataError(f"{source}: Bernoulli likelihood needs data in [0, 1], found values in [{lo:g}, {hi:g}]")


__all__ = [
    "DATASETS",
    "FACTOR_DATASETS",
    "BatchFn",
    "DataSource",
    "Dataset",
    "DatasetRequest",
    "FactorDataset",
    "TensorDataset",
    "check_likelihood_range",
    "load_dataset",
]

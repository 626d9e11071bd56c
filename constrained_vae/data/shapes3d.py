"""3dshapes (Burgess & Kim 2018, DeepMind), read from its HDF5 file ``3dshapes.h5``.

Source: https://github.com/deepmind/3d-shapes; the file is ``3dshapes.h5`` in the Google Cloud
Storage bucket ``3d-shapes`` (https://storage.googleapis.com/3d-shapes/3dshapes.h5). Introduced in
Kim & Mnih, "Disentangling by Factorising" (ICML 2018); cite it as the repository asks
(``@misc{3dshapes18, author={Burgess, Chris and Kim, Hyunjik}}``). The repository is published under
the Apache License 2.0; check it for the terms of the data. Reading it needs ``h5py``.

The file holds ``images``, uint8 ``[480000, 64, 64, 3]`` (RGB, height × width × channel), and
``labels``, float64 ``[480000, 6]``, the factor values of each image, every combination once, in
row-major order over the factors below (orientation varies fastest):

============  =====  =====================================================
factor        size   values (as stored in ``labels``)
============  =====  =====================================================
floor_hue     10     0.0, 0.1, …, 0.9
wall_hue      10     0.0, 0.1, …, 0.9
object_hue    10     0.0, 0.1, …, 0.9
scale         8      linspace(0.75, 1.25, 8)
shape         4      0, 1, 2, 3 (four object shapes)
orientation   15     linspace(−30, 30, 15), degrees
============  =====  =====================================================

(The repository's README says the hues and the scale are "linearly spaced in [0, 1]"; the values
above are those the file holds. The loader takes the values, and the factor sizes, from the file.)

Factor classes are grid positions: class ``c`` of a factor is the ``c``-th value it takes along the
file's order, so the image of classes ``f`` is row ``sum(f · strides)`` (row-major), as in
disentanglement_lib. The loader checks that ``labels`` are such a full grid (values compared to 10⁻⁶),
and accepts a smaller one (any sizes), so tests can make small files in the published format.
(disentanglement_lib reads an older ``.npz`` release of the same images, shaped
``[10, 10, 10, 8, 4, 15, 64, 64, 3]``, with the same factor order.)

Likelihood: ``"bernoulli"``. Images are ``pixel / 255``, float32 in [0, 1], ``[n, 3, 64, 64]``;
disentanglement_lib trains every dataset, 3dshapes included, with a Bernoulli loss on [0, 1] values.

Memory: the images are held once as uint8 ``[480000, 3, 64, 64]``: 5.90 GB (5.49 GiB); the factor
classes are computed from the flat index, not stored; the factor values are kept as a table of
(10 + 10 + 10 + 8 + 4 + 15) floats. (disentanglement_lib holds them as float32: 23.6 GB.) Loading
reads the labels (23 MB, freed after the checks) and then the images in chunks of
:data:`READ_CHUNK` rows (25 MB), each transposed into place, so no second copy of the images ever
exists. ``batches(device)`` copies the 5.90 GB uint8 array to the device once (on CPU it shares it)
and converts each batch there: 48 KiB of float32 per image of the batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from constrained_vae.data.base import BatchFn, Likelihood, raise_malloc_thresholds
from constrained_vae.data.dsprites import _check_factors, _check_indices, _decode, _encode, _radix_strides
from constrained_vae.data.image_folder import ByteImages, one_line, unit_float
from constrained_vae.errors import DataError

__all__ = ["FACTOR_NAMES", "FACTOR_SIZES", "ByteImageGrid", "Shapes3D"]

FACTOR_NAMES = ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
FACTOR_SIZES = [10, 10, 10, 8, 4, 15]  # the published file's grid: 480,000 images
IMAGE_SHAPE = (64, 64, 3)  # one image as stored: height, width, RGB
KEYS = ("images", "labels")
READ_CHUNK = 2048  # images read from the file at once (25 MB)
LABEL_TOLERANCE = 1e-6  # labels equal to this (absolute, plus relative) are one factor value


class ByteImageGrid:
    """Images of a full factor grid held as uint8 ``[N, C, H, W]`` in row-major factor order.

    Row ``i`` holds the factor classes ``factors_of([i])``; images are converted to float32
    ``pixel / 255`` per batch. The base of :class:`Shapes3D` and :class:`~constrained_vae.data.mpi3d.MPI3D`.
    """

    likelihood: Likelihood = "bernoulli"

    def __init__(
        self, name: str, path: Path, factor_names: Sequence[str], factor_sizes: Sequence[int], images: torch.Tensor
    ) -> None:
        """``images``: uint8 ``[prod(factor_sizes), C, H, W]``, row-major over the factors."""
        self.name = name
        self.path = path
        self.factor_names = list(factor_names)
        self.factor_sizes = [int(s) for s in factor_sizes]
        self._images = images

    def __len__(self) -> int:
        return self._images.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``(channels, height, width)``: ``(3, 64, 64)``."""
        return tuple(self._images.shape[1:])

    def factors_of(self, indices: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class indices of flat grid indices (file rows), int64 ``[n, len(factor_sizes)]``."""
        return _decode(_check_indices(indices, len(self), self.name), self.factor_sizes)

    def indices_of(self, factors: np.ndarray) -> np.ndarray:
        """File rows of class-index rows ``[n, len(factor_sizes)]``, int64 ``[n]``."""
        return _encode(_check_factors(factors, self.factor_sizes, self.name), self.factor_sizes)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` rows of independent uniform class indices (uniform over the grid), int64 ``[n, k]``."""
        return np.stack([rng.integers(0, size, n) for size in self.factor_sizes], axis=1).astype(np.int64)

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Images at file rows ``indices`` (int64 ``[n]``), float32 ``[n, C, H, W]`` in [0, 1]."""
        rows = _check_indices(indices, len(self), self.name)
        return unit_float(self._images[torch.from_numpy(rows)])

    def observations(self, factors: np.ndarray) -> torch.Tensor:
        """Images with the given class indices ``[n, len(factor_sizes)]``, float32 ``[n, C, H, W]``."""
        return self.get(torch.from_numpy(self.indices_of(factors)))

    def batches(self, device: torch.device) -> BatchFn:
        """Images at file rows on ``device`` (:class:`ByteImages`: uint8 copied there once)."""
        return ByteImages(self._images, device)


class Shapes3D(ByteImageGrid):
    """3dshapes from ``3dshapes.h5`` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Read and check the file at ``path``; DataError, naming the file and the problem, if it is
        not a 3dshapes file (missing, not HDF5, truncated, a key missing, wrong shapes or dtypes,
        labels that are not a row-major grid)."""
        raise_malloc_thresholds()
        file = Path(path)
        images, sizes, values = _read_shapes3d(file)
        super().__init__("shapes3d", file, FACTOR_NAMES, sizes, images)
        self._values = values

    def factor_values(self, factors: np.ndarray) -> np.ndarray:
        """The file's label values of class-index rows ``[n, 6]``, float64 ``[n, 6]`` (hues, scale, shape, degrees)."""
        classes = _check_factors(factors, self.factor_sizes, self.name)
        return np.stack([table[classes[:, k]] for k, table in enumerate(self._values)], axis=1)


# ---------------------------------------------------------------------------- reading


def _check_file(file: Path) -> None:
    if not file.exists():
        raise DataError(f"{file}: file not found")
    if not file.is_file():
        raise DataError(f"{file}: not a file")


def _open_hdf5(file: Path) -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise DataError(f"{file}: reading HDF5 files needs the h5py package (pip install h5py)") from exc
    _check_file(file)
    try:
        return h5py.File(file, "r")
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: not a readable HDF5 file ({one_line(exc)})") from exc


def _member(handle: Any, key: str, file: Path) -> Any:
    import h5py

    try:
        member = handle[key]
    except (KeyError, OSError, ValueError) as exc:
        raise DataError(f"{file}: cannot read {key!r} ({one_line(exc)})") from exc
    if not isinstance(member, h5py.Dataset):
        raise DataError(f"{file}: {key!r} is a {type(member).__name__}, expected an array (HDF5 dataset)")
    return member


def _read_shapes3d(file: Path) -> tuple[torch.Tensor, list[int], list[np.ndarray]]:
    """uint8 ``[N, 3, 64, 64]`` images, the factor sizes and each factor's values, checked."""
    with _open_hdf5(file) as handle:
        try:
            found = sorted(handle.keys())
        except (OSError, ValueError) as exc:
            raise DataError(f"{file}: cannot list the HDF5 file's keys ({one_line(exc)})") from exc
        missing = [key for key in KEYS if key not in found]
        if missing:
            raise DataError(f"{file}: missing key(s) {missing}; found {found}")
        images, labels = (_member(handle, key, file) for key in KEYS)
        if len(images.shape) != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE:
            raise DataError(f"{file}: 'images' must have shape [N, 64, 64, 3], got {list(images.shape)}")
        if images.dtype != np.uint8:
            raise DataError(f"{file}: 'images' must be uint8, got dtype {images.dtype}")
        if len(labels.shape) != 2 or labels.shape[1] != len(FACTOR_NAMES):
            raise DataError(f"{file}: 'labels' must have shape [N, 6], got {list(labels.shape)}")
        if not np.issubdtype(labels.dtype, np.floating):
            raise DataError(f"{file}: 'labels' must be floats (float64), got dtype {labels.dtype}")
        num = images.shape[0]
        if labels.shape[0] != num:
            raise DataError(f"{file}: 'labels' has {labels.shape[0]} rows but 'images' has {num}")
        if num == 0:
            raise DataError(f"{file}: the file holds no images")
        try:
            label_values = labels[()].astype(np.float64, copy=False)
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{file}: cannot read 'labels' ({one_line(exc)})") from exc
        sizes, values = _grid_of(file, label_values)
        del label_values
        return _read_rows(images, file, num), sizes, values


def _grid_of(file: Path, labels: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """The factor sizes and per-class values of float64 ``labels`` ``[N, 6]``, else DataError unless
    they are a full grid in row-major order."""
    if not np.isfinite(labels).all():
        raise DataError(f"{file}: 'labels' contain NaN or infinite values")
    decimals = round(-math.log10(LABEL_TOLERANCE))
    sizes = [int(np.unique(np.round(labels[:, k], decimals)).size) for k in range(labels.shape[1])]
    num = labels.shape[0]
    if math.prod(sizes) != num:
        raise DataError(
            f"{file}: 'labels' are not a full grid: the factors take {sizes} distinct values "
            f"(product {math.prod(sizes)}) but there are {num} rows"
        )
    strides = _radix_strides(sizes)
    flat = np.arange(num, dtype=np.int64)
    values = []
    for k, (size, stride) in enumerate(zip(sizes, strides, strict=True)):
        table = labels[stride * np.arange(size), k]  # the value of each class, first met along the grid
        expected = table[(flat // stride) % size]
        bad = np.abs(labels[:, k] - expected) > LABEL_TOLERANCE * (1.0 + np.abs(expected))
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                f"{file}: 'labels' are not in grid order: row {row} has {FACTOR_NAMES[k]} {labels[row, k]:g}, "
                f"but row-major order over {FACTOR_NAMES} with sizes {sizes} puts {expected[row]:g} there"
            )
        values.append(table.copy())
    return sizes, values


def _read_rows(images: Any, file: Path, num: int) -> torch.Tensor:
    """The HDF5 ``images`` ``[N, 64, 64, 3]`` as uint8 ``[N, 3, 64, 64]``, read :data:`READ_CHUNK` rows at a time."""
    height, width, channels = IMAGE_SHAPE
    out = np.empty((num, channels, height, width), dtype=np.uint8)
    buffer = np.empty((min(READ_CHUNK, num), *IMAGE_SHAPE), dtype=np.uint8)
    for lo in range(0, num, READ_CHUNK):
        hi = min(lo + READ_CHUNK, num)
        try:
            images.read_direct(buffer, np.s_[lo:hi], np.s_[0 : hi - lo])
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{file}: cannot read 'images' rows {lo}–{hi - 1} ({one_line(exc)})") from exc
        out[lo:hi] = buffer[: hi - lo].transpose(0, 3, 1, 2)
    return torch.from_numpy(out)

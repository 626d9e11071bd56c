"""MPI3D toy, realistic and real (Gondal et al. 2019), read from their ``.npz`` files.

Source: https://github.com/rr-learning/disentanglement_dataset (Max Planck Institute for Intelligent
Systems); the files ``mpi3d_toy.npz``, ``mpi3d_realistic.npz`` and ``mpi3d_real.npz`` are linked from
there (https://huggingface.co/datasets/waleedgondal/mpi3d). Introduced in Gondal et al., "On the
Transfer of Inductive Bias from Simulation to the Real World: a New Disentanglement Dataset"
(NeurIPS 2019); licensed CC BY 4.0 (attribution: cite that paper).

Each file holds one array, ``images``, uint8 ``[1036800, 64, 64, 3]`` (RGB, height × width ×
channel), every combination of the factors once, row-major over them (vertical_axis fastest). The
file holds no labels, so the factor sizes are given (default :data:`FACTOR_SIZES`):

================  =====  ============================================================
factor            size   values
================  =====  ============================================================
object_color      6      white, green, red, blue, brown, olive
object_shape      6      cone, cube, cylinder, hexagonal, pyramid, sphere
object_size       2      small, large
camera_height     3      top, center, bottom
background_color  3      purple, sea green, salmon
horizontal_axis   40     0 … 39 (first degree of freedom of the arm holding the object)
vertical_axis     40     0 … 39 (its second degree of freedom)
================  =====  ============================================================

disentanglement_lib's ``mpi3d.py`` predates this release: it gives the toy and realistic sets
4 colours and 4 shapes (``[4, 4, 2, 3, 3, 40, 40]``, 460,800 images, the file
``sim_toy_64x_ordered_without_heldout_factors.npz``); load such a file with
``factor_sizes=DISENTANGLEMENT_LIB_SIM_SIZES``. Any other full grid of 7 factors loads with its
``factor_sizes`` (tests make small ones); a file whose image count is not ``prod(factor_sizes)``
raises :class:`~constrained_vae.errors.DataError`.

Likelihood: ``"bernoulli"``. Images are ``pixel / 255``, float32 in [0, 1], ``[n, 3, 64, 64]``;
disentanglement_lib trains every dataset, MPI3D included, with a Bernoulli loss on [0, 1] values.

Memory: the images are held once as uint8 ``[1036800, 3, 64, 64]``: 12.74 GB (11.87 GiB) per file;
the factor classes are computed from the flat index, not stored. Loading reads the ``.npy`` header
first (so a file of the wrong shape or dtype is refused before anything is allocated), then the
images in chunks of :data:`READ_CHUNK` rows (25 MB), each transposed into place, whether the archive
is stored or deflated; no second copy ever exists. ``batches(device)`` copies the 12.74 GB to the
device once (on CPU it shares it) and converts each batch there: 48 KiB of float32 per image.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
import torch

from constrained_vae.data.base import raise_malloc_thresholds, read_npy_header
from constrained_vae.data.image_folder import one_line
from constrained_vae.data.shapes3d import ByteImageGrid
from constrained_vae.errors import ConfigError, DataError

__all__ = ["DISENTANGLEMENT_LIB_SIM_SIZES", "FACTOR_NAMES", "FACTOR_SIZES", "MPI3D", "VARIANTS"]

FACTOR_NAMES = [
    "object_color",
    "object_shape",
    "object_size",
    "camera_height",
    "background_color",
    "horizontal_axis",
    "vertical_axis",
]
FACTOR_SIZES = (6, 6, 2, 3, 3, 40, 40)  # the published files: 1,036,800 images each
DISENTANGLEMENT_LIB_SIM_SIZES = (4, 4, 2, 3, 3, 40, 40)  # disentanglement_lib's older toy/realistic files: 460,800
VARIANTS = ("toy", "realistic", "real")
IMAGE_SHAPE = (64, 64, 3)  # one image as stored: height, width, RGB
READ_CHUNK = 2048  # images read from the file at once (25 MB)
ARCHIVE_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


class MPI3D(ByteImageGrid):
    """One MPI3D file (see the module docstring): 7 factors, uint8 images held once."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        variant: str = "toy",
        factor_sizes: Sequence[int] = FACTOR_SIZES,
    ) -> None:
        """Read and check the ``.npz`` at ``path``.

        ``variant``: ``"toy"``, ``"realistic"`` or ``"real"``, which names the dataset
        (``mpi3d-toy`` …; the files share one format). ``factor_sizes``: the grid, 7 sizes in
        :data:`FACTOR_NAMES` order. Raises DataError, naming the file and the problem, if the file is
        missing, not an ``.npz``, truncated, lacks ``images``, has the wrong shape or dtype, or holds
        other than ``prod(factor_sizes)`` images.
        """
        if variant not in VARIANTS:
            raise ConfigError(f"MPI3D variant must be one of {list(VARIANTS)}, got {variant!r}")
        sizes = list(factor_sizes)
        if len(sizes) != len(FACTOR_NAMES) or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sizes
        ):
            raise ConfigError(f"MPI3D factor_sizes must be {len(FACTOR_NAMES)} integers ≥ 1, got {sizes}")
        raise_malloc_thresholds()
        file = Path(path)
        images = _read_images(file, [int(s) for s in sizes])
        super().__init__(f"mpi3d-{variant}", file, FACTOR_NAMES, sizes, images)
        self.variant = variant


# ---------------------------------------------------------------------------- reading


def _open_archive(file: Path) -> zipfile.ZipFile:
    if not file.exists():
        raise DataError(f"{file}: file not found")
    if not file.is_file():
        raise DataError(f"{file}: not a file")
    try:
        return zipfile.ZipFile(file)
    except ARCHIVE_ERRORS as exc:
        raise DataError(f"{file}: not a readable .npz archive ({one_line(exc)})") from exc


def _check_header(file: Path, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, sizes: list[int]) -> None:
    if len(shape) != 4 or shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{file}: 'images' must have shape [N, 64, 64, 3], got {list(shape)}")
    if dtype != np.uint8:
        raise DataError(f"{file}: 'images' must be uint8, got dtype {dtype}")
    if fortran:
        raise DataError(f"{file}: 'images' is stored in Fortran order; expected C (row-major) order")
    expected = math.prod(sizes)
    if shape[0] != expected:
        hint = "pass factor_sizes for another grid"
        if shape[0] == math.prod(DISENTANGLEMENT_LIB_SIM_SIZES):
            hint = f"disentanglement_lib's older files have factor_sizes {list(DISENTANGLEMENT_LIB_SIM_SIZES)}"
        raise DataError(f"{file}: 'images' holds {shape[0]} images, but factor sizes {sizes} make {expected}; {hint}")


def _read_exact(member: IO[bytes], view: memoryview) -> None:
    got = 0
    while got < len(view):
        count = member.readinto(view[got:])  # type: ignore[attr-defined]
        if not count:
            raise EOFError(f"the data end {len(view) - got} bytes early")
        got += count


def _read_images(file: Path, sizes: list[int]) -> torch.Tensor:
    """uint8 ``[N, 3, 64, 64]`` images of the ``.npz`` member ``images.npy``, checked, read in chunks."""
    with _open_archive(file) as archive:
        names = archive.namelist()
        if "images.npy" not in names:
            keys = sorted(name.removesuffix(".npy") for name in names)
            raise DataError(f"{file}: missing key 'images'; found {keys}")
        try:
            with archive.open("images.npy") as member:
                shape, fortran, dtype = read_npy_header(member)
                _check_header(file, shape, fortran, dtype, sizes)
                height, width, channels = IMAGE_SHAPE
                num = shape[0]
                out = np.empty((num, channels, height, width), dtype=np.uint8)
                buffer = np.empty((min(READ_CHUNK, num), *IMAGE_SHAPE), dtype=np.uint8)
                for lo in range(0, num, READ_CHUNK):
                    hi = min(lo + READ_CHUNK, num)
                    _read_exact(member, memoryview(buffer[: hi - lo]).cast("B"))
                    out[lo:hi] = buffer[: hi - lo].transpose(0, 3, 1, 2)
        except DataError:
            raise
        except ARCHIVE_ERRORS as exc:
            raise DataError(f"{file}: cannot read 'images' ({one_line(exc)})") from exc
    return torch.from_numpy(out)

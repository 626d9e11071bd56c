"""A folder of PNG or JPEG images of one size, as a dataset without factors.

Source: your own files. Every ``*.png``, ``*.jpg`` and ``*.jpeg`` file directly in the folder
(suffix in any case; hidden files, subfolders and other files are ignored), sorted by file name
(Python string order), is one observation. All must have one size and one mode: grey (PIL mode
``L``, or bilevel ``1``, read as 0/255 grey) gives 1 channel, ``RGB`` gives 3; the first file that
differs from the first file, or that cannot be read, raises :class:`~constrained_vae.errors.DataError`
naming it. The conv models take 64 × 64 images, but the loader accepts any size and reports it in
``sample_shape`` ``(channels, height, width)``.

Values: ``pixel / 255`` as float32 in [0, 1], layout ``[n, channels, height, width]``. The likelihood
defaults to ``"bernoulli"``, as disentanglement_lib trains every image dataset (a Bernoulli loss on
values in [0, 1]); pass ``likelihood="gaussian"`` for natural images if you prefer.

Memory: the images are held once as uint8 ``[N, channels, height, width]``: N · C · H · W bytes
(100,000 RGB 64 × 64 images: 1.23 GB) and nothing else. Each file is decoded and copied into that
array in turn, so loading never holds a second copy. ``batches(device)`` copies the uint8 array to
the device once (on CPU it shares it) and converts each batch to float32 there: 4 · C · H · W bytes
per image of the batch.

This module also holds :class:`ByteImages` and :func:`unit_float`, the per-batch uint8 → float
conversion that :mod:`~constrained_vae.data.shapes3d` and :mod:`~constrained_vae.data.mpi3d` share.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from constrained_vae.data.base import BatchFn, Likelihood, raise_malloc_thresholds
from constrained_vae.data.dsprites import _check_indices
from constrained_vae.errors import ConfigError, DataError

__all__ = ["IMAGE_SUFFIXES", "ByteImages", "ImageFolder", "one_line", "unit_float"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MODES = {"1": 1, "L": 1, "RGB": 3}  # PIL mode → channels (bilevel "1" is read as grey "L")
PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def one_line(exc: BaseException) -> str:
    """``exc`` as ``Type: message`` on one line (library messages may span several)."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) as float32 ``pixel / 255`` in [0, 1], on their device."""
    return images.to(torch.float32).div_(255.0)


class ByteImages:
    """The training batches of a uint8 image array: rows → float32 images in [0, 1], on the rows' device.

    The array is copied to the device once (on CPU, shared); each batch is gathered and converted
    there, without host synchronisation. On CPU it equals ``unit_float(images[rows])`` bit for bit.
    """

    def __init__(self, images: torch.Tensor, device: torch.device) -> None:
        """``images``: uint8 ``[N, C, H, W]``."""
        self._images = images.to(device)

    def __call__(self, rows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """float32 ``[n, C, H, W]`` images at int64 ``[n]`` rows (in range, not checked)."""
        return unit_float(self._images[rows])


def _read_image(file: Path) -> tuple[np.ndarray, str]:
    """The pixels of one image file, uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB), and its mode."""
    try:
        with Image.open(file) as image:
            image.load()
            mode = image.mode
            if mode not in MODES:
                raise DataError(
                    f"{file}: PIL mode {mode!r} is neither grey (L) nor RGB; convert the files to one of them"
                )
            if mode == "1":
                image, mode = image.convert("L"), "L"
            return np.asarray(image, dtype=np.uint8), mode
    except DataError:
        raise
    except PIL_ERRORS as exc:
        raise DataError(f"{file}: not a readable PNG or JPEG image ({one_line(exc)})") from exc


def _describe(pixels: np.ndarray, mode: str) -> str:
    return f"{pixels.shape[1]}×{pixels.shape[0]} px {mode}"


class ImageFolder:
    """The images of a folder (see the module docstring), held as uint8 once; no factors."""

    def __init__(self, path: str | os.PathLike[str], likelihood: Likelihood = "bernoulli") -> None:
        """``path``: the folder. Raises DataError, naming the folder or file, for a missing or empty
        folder, an unreadable file, or files of more than one size or mode."""
        if likelihood not in ("bernoulli", "gaussian"):
            raise ConfigError(f"image folder: likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        raise_malloc_thresholds()
        folder = Path(path)
        if not folder.exists():
            raise DataError(f"{folder}: folder not found")
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder")
        files = sorted(
            (
                p
                for p in folder.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
            ),
            key=lambda p: p.name,
        )
        if not files:
            raise DataError(f"{folder}: no PNG or JPEG files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        first, mode = _read_image(files[0])
        channels = MODES[mode]
        height, width = first.shape[:2]
        images = np.empty((len(files), channels, height, width), dtype=np.uint8)
        for row, file in enumerate(files):
            pixels, file_mode = (first, mode) if row == 0 else _read_image(file)
            if file_mode != mode or pixels.shape != first.shape:
                raise DataError(
                    f"{file}: {_describe(pixels, file_mode)}, but {files[0].name} (the first file) is "
                    f"{_describe(first, mode)}; all images in {folder} must have one size and mode"
                )
            images[row] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
        self.name = "image-folder"
        self.likelihood: Likelihood = likelihood
        self.path = folder
        self.files = [file.name for file in files]
        self._images = torch.from_numpy(images)

    def __len__(self) -> int:
        return self._images.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``(channels, height, width)``: 1 or 3 channels, pixels."""
        return tuple(self._images.shape[1:])

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Images of files ``indices`` (int64 ``[n]``, in :attr:`files` order), float32 ``[n, C, H, W]`` in [0, 1]."""
        rows = _check_indices(indices, len(self), self.name)
        return unit_float(self._images[torch.from_numpy(rows)])

    def batches(self, device: torch.device) -> BatchFn:
        """Images at file indices on ``device`` (:class:`ByteImages`: uint8 copied there once)."""
        return ByteImages(self._images, device)

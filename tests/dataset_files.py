"""Files in the published formats of the benchmark datasets, made small, for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHAPES3D_SIZES = [2, 3, 2, 2, 2, 3]  # 144 images instead of 480,000
MPI3D_SIZES = (2, 2, 2, 1, 3, 2, 3)  # 144 images instead of 1,036,800


def grid_rows(sizes: list[int] | tuple[int, ...]) -> np.ndarray:
    """Every class-index combination, row-major (the last factor fastest), int64 ``[prod, k]``."""
    return np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), axis=-1).reshape(-1, len(sizes))


def random_images(n: int, seed: int) -> np.ndarray:
    """uint8 ``[n, 64, 64, 3]``, as the files store them."""
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def shapes3d_labels(sizes: list[int]) -> np.ndarray:
    """float64 labels of the full grid, with the published file's value tables cut to ``sizes``."""
    tables = [
        np.arange(sizes[0]) / 10,
        np.arange(sizes[1]) / 10,
        np.arange(sizes[2]) / 10,
        np.linspace(0.75, 1.25, sizes[3]),
        np.arange(float(sizes[4])),
        np.linspace(-30.0, 30.0, sizes[5]),
    ]
    rows = grid_rows(sizes)
    return np.stack([tables[k][rows[:, k]] for k in range(6)], axis=1)


def write_h5(path: Path, **arrays: np.ndarray) -> Path:
    import h5py

    with h5py.File(path, "w") as handle:
        for key, array in arrays.items():
            handle.create_dataset(key, data=array)
    return path


def write_npz(path: Path, images: np.ndarray, compressed: bool = False) -> Path:
    """An MPI3D .npz: np.savez (members stored) or np.savez_compressed (deflated)."""
    (np.savez_compressed if compressed else np.savez)(path, images=images)
    return path


def smooth_rgb(width: int, height: int, seed: int) -> np.ndarray:
    """uint8 ``[height, width, 3]``: random but smooth, so JPEG keeps it close."""
    small = np.random.default_rng(seed).integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))

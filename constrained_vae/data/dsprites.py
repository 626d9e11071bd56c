"""dSprites (Matthey et al. 2017): a procedural renderer and a loader for the official file.

:class:`DSprites` renders the full factor grid on demand, so no download is needed:

=============  =====  ==============================================
factor         size   values
=============  =====  ==============================================
shape          3      square, ellipse, heart (values 1, 2, 3)
scale          6      linspace(0.5, 1, 6)
orientation    40     linspace(0, 2π, 40, endpoint=False), radians
pos_x          32     linspace(0, 1, 32); 0 = left, 1 = right
pos_y          32     linspace(0, 1, 32); 0 = top, 1 = bottom
=============  =====  ==============================================

Images are 64×64, white sprite (1) on black (0), ordered row-major over
(shape, scale, orientation, pos_x, pos_y) like the official file: 737,280 in all.
Orientation turns the sprite counter-clockwise (as displayed) about its centre.
At scale 1 the square is ~16 px wide, the ellipse 22 × 11 px and the heart ~19 px. The
sprite centre moves from ~13 px to ~51 px as pos goes 0 → 1; every sprite lies within
``scale · SPRITE_UNIT_PX · SPRITE_EXTENT`` (≤ 11.5) pixels of its centre, so even the
largest stays 1.5 px clear of the frame at the extreme positions.

:func:`load_dsprites_npz` reads the official ``.npz`` file instead.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from constrained_vae.data.base import BatchFn, Rows, raise_malloc_thresholds
from constrained_vae.errors import DataError
from constrained_vae.files import atomic_write

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "IMAGE_SIZE",
    "DSprites",
    "DSpritesNPZ",
    "load_dsprites_npz",
    "render",
    "render_batch",
]

IMAGE_SIZE = 64
PACKED_BYTES = IMAGE_SIZE * IMAGE_SIZE // 8  # 512 bytes per np.packbits-packed image
FACTOR_NAMES = ["shape", "scale", "orientation", "pos_x", "pos_y"]
FACTOR_SIZES = [3, 6, 40, 32, 32]
SHAPE_NAMES = ["square", "ellipse", "heart"]

# Geometry. Shapes are drawn in "sprite units" about their centre; one unit is
# scale · SPRITE_UNIT_PX pixels. Pixel (row i, column j) has its centre at (i + 0.5, j + 0.5).
SPRITE_UNIT_PX = 11.0
SQUARE_HALF_SIDE = 0.74  # so the square's area is about the heart's
ELLIPSE_SEMI_AXES = (1.0, 0.5)  # along the sprite's x and y axes at orientation 0
# Heart: (x² + y² − 1)³ − x²y³ ≤ 0, lobes up. Its centroid is at (0, 0.2935) and its farthest
# point lies 1.2935 from there, so sprite coordinates (u, v) map to x = k·u, y = k·v + 0.2935.
HEART_CENTROID_Y = 0.2935
HEART_SCALE = 1.30  # k: the heart reaches 1.2935 / 1.30 < 1 sprite unit from its centroid
SPRITE_EXTENT = SQUARE_HALF_SIDE * math.sqrt(2.0)  # farthest any shape reaches (the square's corner)
CENTRE_MIN_PX = SPRITE_UNIT_PX * SPRITE_EXTENT + 1.5  # sprite centre at pos = 0 (~13.0 px) ...
CENTRE_MAX_PX = IMAGE_SIZE - CENTRE_MIN_PX  # ... and at pos = 1 (~51.0 px)
RENDER_VERSION = 1  # bump when the geometry changes: it names the materialise cache file

# Images rendered at once: 128 keeps each float32 temporary at 2 MB, in cache (docs/benchmarks.md,
# "dSprites render chunk").
RENDER_CHUNK = 128

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def factor_value_table() -> list[np.ndarray]:
    """The value of each class of each factor, float64, in FACTOR_NAMES order (shape: 1, 2, 3)."""
    return [
        np.arange(1.0, 4.0),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2.0 * math.pi, 40, endpoint=False),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    ]


# ---------------------------------------------------------------------------- rendering


def _as_1d(values: ArrayLike, dtype: torch.dtype, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    if tensor.ndim != 1:
        raise ValueError(f"render: {name} must be 1-D, got shape {tuple(tensor.shape)}")
    return tensor.to(dtype)


def _square_mask(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs(), v.abs()) <= SQUARE_HALF_SIDE


def _ellipse_mask(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    a, b = ELLIPSE_SEMI_AXES
    return (u * (1.0 / a)).square() + (v * (1.0 / b)).square() <= 1.0


def _heart_mask(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    x_sq = (u * HEART_SCALE).square()
    y = v * HEART_SCALE + HEART_CENTROID_Y
    return (x_sq + y.square() - 1.0).pow(3) <= x_sq * y.pow(3)


SHAPE_MASKS: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = [
    _square_mask,
    _ellipse_mask,
    _heart_mask,
]


def render(
    shape_idx: ArrayLike,
    scale: ArrayLike,
    orientation: ArrayLike,
    pos_x: ArrayLike,
    pos_y: ArrayLike,
) -> torch.Tensor:
    """Binary sprites, bool ``[n, 64, 64]`` (row 0 at the top), from 1-D factor arrays of length n.

    ``shape_idx``: 0 square, 1 ellipse, 2 heart; ``scale``: relative size (1 = largest);
    ``orientation``: radians, counter-clockwise; ``pos_x``, ``pos_y`` in [0, 1]: left→right and
    top→bottom. Values between the grid's are allowed (the sprite stays inside the frame for
    scale ≤ 1 and positions in [0, 1]).
    """
    shapes = _as_1d(shape_idx, torch.int64, "shape_idx")
    scale_t = _as_1d(scale, torch.float32, "scale")
    angle = _as_1d(orientation, torch.float32, "orientation")
    x_t = _as_1d(pos_x, torch.float32, "pos_x")
    y_t = _as_1d(pos_y, torch.float32, "pos_y")
    n = shapes.shape[0]
    if any(t.shape[0] != n for t in (scale_t, angle, x_t, y_t)):
        raise ValueError("render: all factor arrays must have the same length")
    if n and (shapes.min() < 0 or shapes.max() >= len(SHAPE_MASKS)):
        raise ValueError(f"render: shape_idx must be in 0..{len(SHAPE_MASKS) - 1}")

    dx, dy = _pixel_offsets(scale_t, x_t, y_t)
    cos, sin = torch.cos(angle), torch.sin(angle)

    images = torch.empty(n, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    for shape, mask_fn in enumerate(SHAPE_MASKS):  # three shapes, each pixel computed once
        rows = (shapes == shape).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        images[rows] = mask_fn(*_sprite_frame(dx[rows], dy[rows], cos[rows], sin[rows]))
    return images


def render_batch(
    shape_idx: torch.Tensor,
    scale: torch.Tensor,
    orientation: torch.Tensor,
    pos_x: torch.Tensor,
    pos_y: torch.Tensor,
) -> torch.Tensor:
    """:func:`render` for valid factor tensors on one device, bool ``[n, 64, 64]`` there, never waiting for the host.

    ``shape_idx`` int64, the others float32, each ``[n]`` (units as in :func:`render`), not checked.
    Every pixel is tested against all three shapes and the sprite's own test is kept: three times
    :func:`render`'s mask arithmetic, but no data-dependent indexing, so a GPU renders a batch without
    a host round trip. On CPU the images equal :func:`render`'s bit for bit.
    """
    dx, dy = _pixel_offsets(scale, pos_x, pos_y)
    u, v = _sprite_frame(dx, dy, torch.cos(orientation), torch.sin(orientation))
    images = SHAPE_MASKS[0](u, v)
    for shape in range(1, len(SHAPE_MASKS)):
        images = torch.where((shape_idx == shape)[:, None, None], SHAPE_MASKS[shape](u, v), images)
    return images


def _pixel_offsets(scale: torch.Tensor, pos_x: torch.Tensor, pos_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres relative to each sprite's centre in sprite units, ``[n, 64]`` each: dx per column
    (to the right), dy per row (up)."""
    span = CENTRE_MAX_PX - CENTRE_MIN_PX
    pixel_centres = torch.arange(IMAGE_SIZE, dtype=torch.float32, device=scale.device) + 0.5
    px_to_units = (1.0 / (scale * SPRITE_UNIT_PX))[:, None]
    dx = (pixel_centres[None, :] - (CENTRE_MIN_PX + span * pos_x)[:, None]) * px_to_units
    dy = ((CENTRE_MIN_PX + span * pos_y)[:, None] - pixel_centres[None, :]) * px_to_units
    return dx, dy


def _sprite_frame(
    dx: torch.Tensor, dy: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel offsets ``[k, 64]`` rotated by −θ into each sprite's own frame: (u, v), ``[k, 64, 64]`` each."""
    c, s = cos[:, None, None], sin[:, None, None]
    col_off, row_off = dx[:, None, :], dy[:, :, None]  # broadcast to [k, 64, 64]
    u = c * col_off + s * row_off
    v = c * row_off - s * col_off
    return u, v


# ---------------------------------------------------------------------------- mixed radix


def _check_factors(factors: np.ndarray, sizes: Sequence[int], source: str) -> np.ndarray:
    """``factors`` as int64 ``[n, len(sizes)]``, each column within its size, else DataError."""
    array = np.asarray(factors)
    if array.ndim != 2 or array.shape[1] != len(sizes):
        raise DataError(f"{source}: factors must have shape [n, {len(sizes)}], got {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{source}: factors must be integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and (np.any(array < 0) or np.any(array >= np.asarray(sizes))):
        raise DataError(f"{source}: factor classes out of range for sizes {list(sizes)}")
    return array


def _radix_strides(sizes: Sequence[int]) -> np.ndarray:
    """Row-major strides: the flat-index weight of each factor class, int64 ``[len(sizes)]``."""
    return np.cumprod([1, *sizes[:0:-1]])[::-1].astype(np.int64)


def _encode(factors: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Mixed-radix code of each row of (already checked) class indices, int64 ``[n]``."""
    return factors @ _radix_strides(sizes)


def _decode(codes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Class indices of each code, int64 ``[n, len(sizes)]`` (inverse of :func:`_encode`)."""
    return (codes[:, None] // _radix_strides(sizes)[None, :]) % np.asarray(sizes)[None, :]


def _check_indices(indices: np.ndarray | torch.Tensor, length: int, source: str) -> np.ndarray:
    """Flat indices as int64 ``[n]``, each in [0, length), else IndexError."""
    array = np.asarray(indices).astype(np.int64, copy=False).reshape(-1)
    if array.size and (array.min() < 0 or array.max() >= length):
        raise IndexError(f"{source}: indices must be in [0, {length}), got [{array.min()}, {array.max()}]")
    return array


# ---------------------------------------------------------------------------- caching


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as .npy, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _load_cached_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A cached array, checked against the expected shape and dtype; DataError if not."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: unreadable dSprites cache ({exc}); delete it to re-render") from exc
    if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
        found = f"{array.shape} {array.dtype}" if isinstance(array, np.ndarray) else type(array).__name__
        raise DataError(f"{path}: dSprites cache holds {found}, expected {shape} {dtype}; delete it")
    return array


# ---------------------------------------------------------------------------- datasets


class DSprites:
    """The procedural dSprites grid (see the module docstring), rendered on demand."""

    def __init__(self) -> None:
        raise_malloc_thresholds()
        self.name = "dsprites"
        self.likelihood = "bernoulli"
        self.factor_names = list(FACTOR_NAMES)
        self.factor_sizes = list(FACTOR_SIZES)
        self._values = factor_value_table()
        self._values_f32 = [torch.from_numpy(v.astype(np.float32)) for v in self._values]

    def __len__(self) -> int:
        return math.prod(self.factor_sizes)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (1, IMAGE_SIZE, IMAGE_SIZE)

    # -- index ↔ factors

    def factors_of(self, indices: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class indices of flat grid indices, int64 ``[n, 5]``."""
        return _decode(_check_indices(indices, len(self), self.name), self.factor_sizes)

    def indices_of(self, factors: np.ndarray) -> np.ndarray:
        """Flat grid indices of class-index rows ``[n, 5]``, int64 ``[n]``."""
        return _encode(_check_factors(factors, self.factor_sizes, self.name), self.factor_sizes)

    def factor_values(self, factors: np.ndarray) -> np.ndarray:
        """Values of class-index rows ``[n, 5]``, float64 ``[n, 5]`` (shape 1–3, radians, ...)."""
        classes = _check_factors(factors, self.factor_sizes, self.name)
        return np.stack([v[classes[:, k]] for k, v in enumerate(self._values)], axis=1)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` rows of independent uniform class indices, int64 ``[n, 5]``."""
        return np.stack([rng.integers(0, size, n) for size in self.factor_sizes], axis=1).astype(np.int64)

    # -- rendering

    def _render_classes(self, classes: np.ndarray) -> torch.Tensor:
        """Bool ``[n, 64, 64]`` images of checked class-index rows ``[n, 5]``, in bounded-memory chunks."""
        c = torch.from_numpy(classes)
        chunks = []
        for lo in range(0, max(len(c), 1), RENDER_CHUNK):
            part = c[lo : lo + RENDER_CHUNK]
            scale, angle, pos_x, pos_y = (self._values_f32[k][part[:, k]] for k in range(1, 5))
            chunks.append(render(part[:, 0], scale, angle, pos_x, pos_y))
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def observations(self, factors: np.ndarray) -> torch.Tensor:
        """Images with the given class indices ``[n, 5]``, float32 0/1 ``[n, 1, 64, 64]``."""
        classes = _check_factors(factors, self.factor_sizes, self.name)
        return self._render_classes(classes).unsqueeze(1).float()

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Images at flat grid ``indices`` (int64 ``[n]``), float32 0/1 ``[n, 1, 64, 64]``."""
        return self._render_classes(self.factors_of(indices)).unsqueeze(1).float()

    def batches(self, device: torch.device) -> BatchFn:
        """Images at flat grid indices on ``device``. On CPU each batch is rendered (:class:`GridRenderer`);
        on a GPU the whole grid is rendered there once and kept as packed bits (:meth:`packed_grid`, ~377 MB),
        so that a batch is one gather and one unpack instead of the renderer's ~45 kernels."""
        if torch.device(device).type == "cpu":
            return GridRenderer(self._values, device)
        return PackedImages.of(self.packed_grid(0, len(self), device))

    def packed_grid(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Images ``start`` .. ``stop - 1`` rendered on ``device`` and packed there: uint8 ``[stop - start, 512]``,
        the rows of :meth:`packed_images` (most significant bit first)."""
        renderer = GridRenderer(self._values, device)
        weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32, device=device)
        out = torch.empty((stop - start, PACKED_BYTES), dtype=torch.uint8, device=device)
        for lo, hi in self._chunks(start, stop):
            images = renderer(torch.arange(lo, hi, device=device))
            bits = images.reshape(hi - lo, PACKED_BYTES, 8).to(torch.int32)
            out[lo - start : hi - start] = (bits * weights).sum(-1).to(torch.uint8)
        return out

    def _chunks(self, start: int, stop: int) -> list[tuple[int, int]]:
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"{self.name}: range [{start}, {stop}) is not within [0, {len(self)}]")
        return [(lo, min(lo + RENDER_CHUNK, stop)) for lo in range(start, stop, RENDER_CHUNK)]

    def images(self, start: int, stop: int) -> np.ndarray:
        """Images ``start`` .. ``stop - 1`` of the grid, uint8 0/1 ``[stop - start, 64, 64]``."""
        out = np.empty((stop - start, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        for lo, hi in self._chunks(start, stop):
            out[lo - start : hi - start] = self._render_classes(self.factors_of(np.arange(lo, hi))).numpy()
        return out

    def packed_images(self, start: int, stop: int) -> np.ndarray:
        """Images ``start`` .. ``stop - 1`` as np.packbits rows, uint8 ``[stop - start, 512]``.

        Unpack with ``np.unpackbits(packed, axis=1).reshape(-1, 64, 64)``.
        """
        out = np.empty((stop - start, PACKED_BYTES), dtype=np.uint8)
        for lo, hi in self._chunks(start, stop):
            bits = self._render_classes(self.factors_of(np.arange(lo, hi))).numpy()
            out[lo - start : hi - start] = np.packbits(bits.reshape(hi - lo, -1), axis=1)
        return out

    def cache_path(self, cache_dir: str | os.PathLike[str], start: int = 0, stop: int | None = None) -> Path:
        """Where :meth:`materialise` caches the range ``[start, stop)``."""
        stop = len(self) if stop is None else stop
        suffix = "" if (start, stop) == (0, len(self)) else f"_{start}-{stop}"
        return Path(cache_dir) / f"dsprites_procedural_v{RENDER_VERSION}{suffix}.npy"

    def materialise(
        self, cache_dir: str | os.PathLike[str] | None = None, start: int = 0, stop: int | None = None
    ) -> np.ndarray:
        """The grid (or ``[start, stop)`` of it) as packed bits, uint8 ``[n, 512]`` (~377 MB in all).

        With ``cache_dir``, loads the cached ``.npy`` if there is one, else renders and writes it
        atomically. A cache of the wrong shape or dtype raises DataError.
        """
        stop = len(self) if stop is None else stop
        if cache_dir is None:
            return self.packed_images(start, stop)
        path = self.cache_path(cache_dir, start, stop)
        if path.exists():
            return _load_cached_npy(path, (stop - start, PACKED_BYTES), np.dtype(np.uint8))
        packed = self.packed_images(start, stop)
        _save_npy_atomic(path, packed)
        return packed


class GridRenderer:
    """The training batches of :class:`DSprites`: flat grid indices → images, rendered on the indices' device.

    On CPU it renders with :func:`render` (each pixel tested against its own shape only: faster
    there than :func:`render_batch`), elsewhere with :func:`render_batch`; the images are the same.
    """

    def __init__(self, values: Sequence[np.ndarray], device: torch.device) -> None:
        """``values``: each factor's class values (:func:`factor_value_table`)."""
        strides = _radix_strides(FACTOR_SIZES)
        self._strides = torch.tensor(strides.tolist(), dtype=torch.int64, device=device)
        self._sizes = torch.tensor(FACTOR_SIZES, dtype=torch.int64, device=device)
        self._values = [torch.from_numpy(v.astype(np.float32)).to(device) for v in values]
        self._render = render if torch.device(device).type == "cpu" else render_batch

    def __call__(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """float32 0/1 ``[n, 1, 64, 64]`` images at int64 ``[n]`` grid indices, without host synchronisation
        (except on CPU, where there is no host to wait for)."""
        classes = torch.div(indices[:, None], self._strides, rounding_mode="floor") % self._sizes
        scale, angle, pos_x, pos_y = (self._values[k][classes[:, k]] for k in range(1, 5))
        return self._render(classes[:, 0], scale, angle, pos_x, pos_y).unsqueeze(1).float()


class PackedImages:
    """Binary 64×64 images kept as np.packbits rows on a device, unpacked per batch there."""

    def __init__(self, packed: np.ndarray, device: torch.device) -> None:
        """``packed``: uint8 ``[N, 512]`` rows of :func:`np.packbits` (most significant bit first)."""
        self._packed = torch.from_numpy(packed).to(device)
        self._shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=device)

    @classmethod
    def of(cls, packed: torch.Tensor) -> PackedImages:
        """The images of uint8 ``[N, 512]`` packed rows already on their device (kept there, not copied)."""
        images = cls.__new__(cls)
        images._packed = packed
        images._shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
        return images

    def __call__(self, rows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """float32 0/1 ``[n, 1, 64, 64]`` images at int64 ``[n]`` rows, without host synchronisation."""
        bits = (self._packed[rows].unsqueeze(-1) >> self._shifts) & 1
        return bits.reshape(rows.shape[0], 1, IMAGE_SIZE, IMAGE_SIZE).float()


class DSpritesNPZ:
    """dSprites images and factors read from an ``.npz`` file (see :func:`load_dsprites_npz`).

    Factor classes are renumbered 0..size-1 per factor in increasing order of the file's classes.
    The images are kept as packed bits when binary (the official file: ~377 MB), else as float32.
    """

    def __init__(self, path: Path, images: np.ndarray, classes: np.ndarray, values: np.ndarray) -> None:
        """``images`` uint8 ``[N, 64, 64]`` or float ``[N, 64, 64]`` in [0, 1]; ``classes`` int
        ``[N, 5]`` and ``values`` float ``[N, 5]`` (the colour column already dropped)."""
        self.name = "dsprites-npz"
        self.likelihood = "bernoulli"
        self.path = path
        self.factor_names = list(FACTOR_NAMES)
        self._num = images.shape[0]
        self._binary = images.dtype == np.uint8
        if self._binary:
            self._packed = np.packbits(images.reshape(self._num, -1), axis=1)
        else:
            self._float = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        dense = np.empty_like(classes, dtype=np.int64)
        uniques = []
        for k in range(classes.shape[1]):
            unique, dense[:, k] = np.unique(classes[:, k], return_inverse=True)
            uniques.append(unique)
        self.factor_sizes = [int(u.size) for u in uniques]
        self._classes = dense
        first_row = [np.unique(dense[:, k], return_index=True)[1] for k in range(dense.shape[1])]
        self._values = [values[rows, k].astype(np.float64) for k, rows in enumerate(first_row)]
        codes = _encode(dense, self.factor_sizes)
        self._order = np.argsort(codes, kind="stable")  # first row wins among duplicates
        self._sorted_codes = codes[self._order]
        self.complete_grid = np.unique(codes).size == math.prod(self.factor_sizes)

    def __len__(self) -> int:
        return self._num

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (1, IMAGE_SIZE, IMAGE_SIZE)

    def factors_of(self, indices: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class indices of file rows, int64 ``[n, 5]``."""
        return self._classes[_check_indices(indices, len(self), self.name)]

    def indices_of(self, factors: np.ndarray) -> np.ndarray:
        """File rows holding class-index rows ``[n, 5]``, int64 ``[n]``; DataError if one is absent."""
        codes = _encode(_check_factors(factors, self.factor_sizes, self.name), self.factor_sizes)
        pos = np.searchsorted(self._sorted_codes, codes)
        found = pos < self._sorted_codes.size
        found[found] = self._sorted_codes[pos[found]] == codes[found]
        if not found.all():
            missing = _decode(codes[~found][:1], self.factor_sizes)[0].tolist()
            raise DataError(f"{self.path}: no image with factor classes {missing} ({(~found).sum()} missing)")
        return self._order[pos]

    def factor_values(self, factors: np.ndarray) -> np.ndarray:
        """The file's values for class-index rows ``[n, 5]``, float64 ``[n, 5]``."""
        classes = _check_factors(factors, self.factor_sizes, self.name)
        return np.stack([v[classes[:, k]] for k, v in enumerate(self._values)], axis=1)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` class-index rows, int64 ``[n, 5]``: independent uniform classes when the file holds
        the full grid, else the classes of uniformly drawn rows (so every row exists)."""
        if self.complete_grid:
            return np.stack([rng.integers(0, s, n) for s in self.factor_sizes], axis=1).astype(np.int64)
        return self._classes[rng.integers(0, len(self), n)]

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Images at file rows ``indices`` (int64 ``[n]``), float32 ``[n, 1, 64, 64]``."""
        rows = _check_indices(indices, len(self), self.name)
        if not self._binary:
            return self._float[torch.from_numpy(rows)].unsqueeze(1)
        bits = np.unpackbits(self._packed[rows], axis=1).reshape(rows.size, 1, IMAGE_SIZE, IMAGE_SIZE)
        return torch.from_numpy(bits).float()

    def batches(self, device: torch.device) -> BatchFn:
        """Images at file rows on ``device``: the packed bits (or float images) are copied there once
        and unpacked per batch."""
        if self._binary:
            return PackedImages(self._packed, device)
        return Rows(self._float.to(device).unsqueeze(1))

    def observations(self, factors: np.ndarray) -> torch.Tensor:
        """Images with the given class indices ``[n, 5]``, float32 ``[n, 1, 64, 64]``."""
        return self.get(torch.from_numpy(self.indices_of(factors)))


# ---------------------------------------------------------------------------- npz loading

NPZ_KEYS = ("imgs", "latents_values", "latents_classes")


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single .npy array, expected an .npz archive with {list(NPZ_KEYS)}")
    return archive


def _read_member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path}: cannot read {key!r} ({type(exc).__name__}: {exc})") from exc


def _check_npz_arrays(path: Path, imgs: np.ndarray, values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Check shapes, dtypes and ranges; return the images (uint8 if binary, else float32)."""
    if imgs.ndim != 3 or imgs.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{path}: 'imgs' must have shape [N, 64, 64], got {list(imgs.shape)}")
    for key, array in (("latents_values", values), ("latents_classes", classes)):
        if array.ndim != 2 or array.shape[1] != 6:
            raise DataError(f"{path}: {key!r} must have shape [N, 6], got {list(array.shape)}")
        if array.shape[0] != imgs.shape[0]:
            raise DataError(f"{path}: {key!r} has {array.shape[0]} rows but 'imgs' has {imgs.shape[0]}")
    if imgs.shape[0] == 0:
        raise DataError(f"{path}: the file holds no images")
    if not np.issubdtype(classes.dtype, np.integer):
        raise DataError(f"{path}: 'latents_classes' must be integers, got dtype {classes.dtype}")
    if not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
        raise DataError(f"{path}: 'latents_values' must be finite numbers")
    if np.issubdtype(imgs.dtype, np.integer) or imgs.dtype == np.bool_:
        lo, hi = int(imgs.min()), int(imgs.max())
        if lo < 0 or hi > 1:
            raise DataError(f"{path}: 'imgs' values must be 0 or 1, found values in [{lo}, {hi}]")
        return imgs.astype(np.uint8, copy=False)
    if not np.issubdtype(imgs.dtype, np.floating):
        raise DataError(f"{path}: 'imgs' must be integer or float, got dtype {imgs.dtype}")
    lo, hi = float(imgs.min()), float(imgs.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
        raise DataError(f"{path}: 'imgs' values must lie in [0, 1], found values in [{lo:g}, {hi:g}]")
    if np.isin(imgs, (0.0, 1.0)).all():
        return imgs.astype(np.uint8)
    return imgs.astype(np.float32, copy=False)


def load_dsprites_npz(path: str | os.PathLike[str]) -> DSpritesNPZ:
    """The official dSprites ``.npz`` (keys imgs, latents_values, latents_classes) as a dataset.

    Column 0 of the latents (colour, constant) is dropped; columns 1–5 are the factors. Raises
    DataError, naming the file and the problem, for anything that is not such a file.
    """
    file = Path(path)
    with _open_npz(file) as archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise DataError(f"{file}: missing key(s) {missing}; found {sorted(archive.files)}")
        imgs, values, classes = (_read_member(archive, key, file) for key in NPZ_KEYS)
    imgs = _check_npz_arrays(file, imgs, values, classes)
    return DSpritesNPZ(file, imgs, classes[:, 1:].astype(np.int64), values[:, 1:].astype(np.float64))

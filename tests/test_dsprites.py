"""The procedural dSprites renderer, its grid indexing and caching, and the .npz loader."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from constrained_vae.data.base import FactorDataset, TensorDataset
from constrained_vae.data.dsprites import (
    FACTOR_SIZES,
    DSprites,
    DSpritesNPZ,
    PackedImages,
    load_dsprites_npz,
    render,
    render_batch,
)
from constrained_vae.errors import DataError

SQUARE, ELLIPSE, HEART = 0, 1, 2


@pytest.fixture(scope="module")
def dsprites() -> DSprites:
    return DSprites()


def grid(dsprites: DSprites, **fixed: int | list[int]) -> np.ndarray:
    """Class-index rows of every combination, with some factors fixed to a class or list of classes."""
    axes = [
        np.atleast_1d(fixed.get(name, range(size)))
        for name, size in zip(dsprites.factor_names, FACTOR_SIZES, strict=True)
    ]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 5)


def centre_of_mass(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(column, row) centre of mass of ``[n, 1, 64, 64]`` images, in pixels."""
    weights = images[:, 0]
    coords = torch.arange(64, dtype=torch.float32)
    mass = weights.sum(dim=(1, 2))
    cols = (weights.sum(dim=1) * coords).sum(dim=1) / mass
    rows = (weights.sum(dim=2) * coords).sum(dim=1) / mass
    return cols, rows


# ---------------------------------------------------------------------------- protocol and grid


def test_implements_factor_dataset(dsprites: DSprites) -> None:
    assert isinstance(dsprites, FactorDataset)
    assert dsprites.name == "dsprites" and dsprites.likelihood == "bernoulli"
    assert dsprites.factor_names == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    assert dsprites.factor_sizes == [3, 6, 40, 32, 32]
    assert len(dsprites) == 737_280
    assert dsprites.sample_shape == (1, 64, 64)


def test_flat_index_round_trip_and_row_major_order(dsprites: DSprites) -> None:
    rng = np.random.default_rng(0)
    indices = np.concatenate([[0, 1, 31, 32, len(dsprites) - 1], rng.integers(0, len(dsprites), 1000)])
    assert np.array_equal(dsprites.indices_of(dsprites.factors_of(indices)), indices)
    assert dsprites.factors_of(np.array([0]))[0].tolist() == [0, 0, 0, 0, 0]
    assert dsprites.factors_of(np.array([1]))[0].tolist() == [0, 0, 0, 0, 1]  # pos_y varies fastest
    assert dsprites.factors_of(np.array([32]))[0].tolist() == [0, 0, 0, 1, 0]
    assert dsprites.factors_of(np.array([32 * 32]))[0].tolist() == [0, 0, 1, 0, 0]
    assert dsprites.factors_of(np.array([40 * 32 * 32]))[0].tolist() == [0, 1, 0, 0, 0]
    assert dsprites.factors_of(np.array([6 * 40 * 32 * 32]))[0].tolist() == [1, 0, 0, 0, 0]
    assert dsprites.factors_of(np.array([len(dsprites) - 1]))[0].tolist() == [2, 5, 39, 31, 31]


def test_factor_values(dsprites: DSprites) -> None:
    values = dsprites.factor_values(np.array([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31], [1, 1, 20, 16, 15]]))
    np.testing.assert_allclose(values[0], [1, 0.5, 0, 0, 0])
    np.testing.assert_allclose(values[1], [3, 1, 2 * math.pi * 39 / 40, 1, 1])
    np.testing.assert_allclose(values[2], [2, 0.6, math.pi, 16 / 31, 15 / 31])


def test_bad_indices_and_factors_are_rejected(dsprites: DSprites) -> None:
    with pytest.raises(IndexError):
        dsprites.get(torch.tensor([len(dsprites)]))
    with pytest.raises(IndexError):
        dsprites.factors_of(np.array([-1]))
    with pytest.raises(DataError, match="out of range"):
        dsprites.observations(np.array([[3, 0, 0, 0, 0]]))
    with pytest.raises(DataError, match="shape"):
        dsprites.observations(np.zeros((2, 4), dtype=np.int64))


# ---------------------------------------------------------------------------- images


def test_rendering_is_deterministic(dsprites: DSprites) -> None:
    indices = torch.from_numpy(np.random.default_rng(1).integers(0, len(dsprites), 256))
    first = dsprites.get(indices)
    assert torch.equal(first, dsprites.get(indices))
    assert torch.equal(first, DSprites().get(indices))
    assert first.dtype == torch.float32 and first.shape == (256, 1, 64, 64)


def test_images_are_binary_nonempty_and_clear_of_the_border(dsprites: DSprites) -> None:
    """Largest and smallest scale, all shapes and orientations, at the four corners and centre."""
    factors = grid(dsprites, scale=[0, 5], pos_x=[0, 16, 31], pos_y=[0, 16, 31])
    images = dsprites.observations(factors)[:, 0]
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    assert (images.sum(dim=(1, 2)) > 0).all()
    border = images[:, 0].sum() + images[:, -1].sum() + images[:, :, 0].sum() + images[:, :, -1].sum()
    assert border == 0


def test_smallest_sprites_are_nonempty_everywhere(dsprites: DSprites) -> None:
    """Scale 0 (fewest pixels), every shape and orientation, every second position."""
    factors = grid(dsprites, scale=0, pos_x=list(range(0, 32, 2)), pos_y=list(range(1, 32, 2)))
    counts = dsprites.observations(factors).sum(dim=(1, 2, 3))
    assert counts.min() >= 20


def test_pos_x_moves_right_and_pos_y_moves_down(dsprites: DSprites) -> None:
    """pos_x 0→1 moves the centre of mass right (column grows); pos_y 0→1 moves it down (row grows)."""
    for shape in (SQUARE, ELLIPSE, HEART):
        along_x = dsprites.observations(grid(dsprites, shape=shape, scale=3, orientation=7, pos_y=10))
        cols, rows = centre_of_mass(along_x)
        assert (cols.diff() > 0).all() and rows.max() - rows.min() < 0.5
        assert cols[0] < 16 and cols[-1] > 48  # the centre crosses most of the image
        along_y = dsprites.observations(grid(dsprites, shape=shape, scale=3, orientation=7, pos_x=20))
        cols, rows = centre_of_mass(along_y)
        assert (rows.diff() > 0).all() and cols.max() - cols.min() < 0.5
        assert rows[0] < 16 and rows[-1] > 48


def test_scale_increases_pixel_count(dsprites: DSprites) -> None:
    for shape in (SQUARE, ELLIPSE, HEART):
        counts = dsprites.observations(grid(dsprites, shape=shape, orientation=3, pos_x=16, pos_y=16)).sum(
            dim=(1, 2, 3)
        )
        assert (counts.diff() > 0).all()


def test_largest_sprites_span_a_quarter_to_a_third_of_the_image(dsprites: DSprites) -> None:
    images = dsprites.observations(np.array([[s, 5, 0, 16, 16] for s in (SQUARE, ELLIPSE, HEART)]))[:, 0]
    widths = (images.amax(dim=1) > 0).sum(dim=1)  # columns holding any white pixel
    assert ((widths >= 14) & (widths <= 24)).all(), widths


def test_orientation(dsprites: DSprites) -> None:
    """Class 10 of 40 is π/2: the ellipse turns upright, the square maps (almost) onto itself."""
    ellipse = dsprites.observations(np.array([[ELLIPSE, 5, 0, 16, 16], [ELLIPSE, 5, 10, 16, 16]]))
    assert (ellipse[0] != ellipse[1]).sum() > 50
    square = dsprites.observations(np.array([[SQUARE, 5, 0, 16, 16], [SQUARE, 5, 10, 16, 16]]))
    assert (square[0] != square[1]).sum() <= 0.1 * square[0].sum()
    heart = dsprites.observations(np.array([[HEART, 5, 0, 16, 16], [HEART, 5, 20, 16, 16]]))
    assert (heart[0] != heart[1]).sum() > 30  # a heart turned upside down differs
    mass = dsprites.observations(grid(dsprites, shape=HEART, scale=5, pos_x=16, pos_y=16)).sum(dim=(1, 2, 3))
    assert mass.max() - mass.min() < 0.1 * mass.mean()  # rotation keeps the area


def test_orientation_turns_counter_clockwise_as_displayed(dsprites: DSprites) -> None:
    """At π/4 (class 5) the ellipse's long axis runs from lower left to upper right."""
    ellipse = dsprites.observations(np.array([[ELLIPSE, 5, 5, 16, 16]]))[0, 0]
    cols, rows = centre_of_mass(ellipse[None, None])
    upper_right = ellipse[: int(rows), int(cols) + 1 :].sum()
    upper_left = ellipse[: int(rows), : int(cols)].sum()
    assert upper_right > 2 * upper_left


def test_shapes_differ(dsprites: DSprites) -> None:
    images = dsprites.observations(np.array([[s, 5, 3, 16, 16] for s in (SQUARE, ELLIPSE, HEART)]))
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert (images[a] != images[b]).sum() > 30


def test_heart_is_upright_with_lobes_on_top(dsprites: DSprites) -> None:
    """At orientation 0 the heart is wider in its upper half (the lobes) than at its tip."""
    heart = dsprites.observations(np.array([[HEART, 5, 0, 16, 16]]))[0, 0]
    rows = heart.sum(dim=1).nonzero().squeeze(1)
    top_width = heart[rows[0] + 2].sum()
    bottom_width = heart[rows[-1] - 1].sum()
    assert top_width > bottom_width


def test_observations_match_get(dsprites: DSprites) -> None:
    factors = dsprites.sample_factors(200, np.random.default_rng(2))
    assert factors.dtype == np.int64 and factors.shape == (200, 5)
    assert (factors >= 0).all() and (factors < np.array(FACTOR_SIZES)).all()
    expected = dsprites.get(torch.from_numpy(dsprites.indices_of(factors)))
    assert torch.equal(dsprites.observations(factors), expected)


def test_render_takes_values_and_matches_the_dataset(dsprites: DSprites) -> None:
    factors = dsprites.sample_factors(50, np.random.default_rng(3))
    values = dsprites.factor_values(factors)
    images = render(factors[:, 0], values[:, 1], values[:, 2], values[:, 3], values[:, 4])
    assert images.shape == (50, 64, 64)
    assert torch.equal(images.float(), dsprites.observations(factors)[:, 0])
    assert render([], [], [], [], []).shape == (0, 64, 64)


# ---------------------------------------------------------------------------- blocks and caching


def test_images_and_packed_blocks_match_get(dsprites: DSprites) -> None:
    start, stop = 123_450, 123_450 + 2100  # crosses a rendering-chunk boundary
    block = dsprites.images(start, stop)
    assert block.dtype == np.uint8 and block.shape == (stop - start, 64, 64)
    expected = dsprites.get(torch.arange(start, stop))[:, 0].numpy().astype(np.uint8)
    assert np.array_equal(block, expected)
    packed = dsprites.materialise(start=start, stop=stop)
    assert packed.dtype == np.uint8 and packed.shape == (stop - start, 512)
    assert np.array_equal(np.unpackbits(packed, axis=1).reshape(-1, 64, 64), block)
    with pytest.raises(IndexError):
        dsprites.images(0, len(dsprites) + 1)


def test_materialise_cache_round_trip(dsprites: DSprites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start, stop = 5000, 5300
    first = dsprites.materialise(tmp_path, start=start, stop=stop)
    path = dsprites.cache_path(tmp_path, start, stop)
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left

    def fail(*args: object) -> None:
        raise AssertionError("rendered although a cache exists")

    monkeypatch.setattr(DSprites, "packed_images", fail)
    assert np.array_equal(dsprites.materialise(tmp_path, start=start, stop=stop), first)


def test_materialise_rejects_a_bad_cache(dsprites: DSprites, tmp_path: Path) -> None:
    path = dsprites.cache_path(tmp_path, 0, 10)
    np.save(path, np.zeros((10, 7), dtype=np.uint8))
    with pytest.raises(DataError, match="expected"):
        dsprites.materialise(tmp_path, start=0, stop=10)
    path.write_text("not an array")
    with pytest.raises(DataError, match="unreadable"):
        dsprites.materialise(tmp_path, start=0, stop=10)


# ---------------------------------------------------------------------------- npz loader


def small_npz_arrays(dsprites: DSprites) -> dict[str, np.ndarray]:
    """A 2 shapes × 2 scales × 3 orientations × 4 × 4 positions file (192 rows) in the official form."""
    factors = grid(
        dsprites,
        shape=[0, 2],
        scale=[1, 4],
        orientation=[0, 10, 20],
        pos_x=[0, 5, 10, 31],
        pos_y=[0, 7, 14, 31],
    )
    values = dsprites.factor_values(factors)
    imgs = dsprites.observations(factors)[:, 0].numpy().astype(np.uint8)
    ones = np.ones((len(factors), 1))
    return {
        "imgs": imgs,
        "latents_values": np.concatenate([ones, values], axis=1),
        "latents_classes": np.concatenate([np.zeros_like(ones, dtype=np.int64), factors], axis=1),
    }


@pytest.fixture(scope="module")
def npz_arrays(dsprites: DSprites) -> dict[str, np.ndarray]:
    return small_npz_arrays(dsprites)


def test_npz_loads_with_sizes_and_lookups(dsprites: DSprites, npz_arrays: dict, tmp_path: Path) -> None:
    path = tmp_path / "small.npz"
    np.savez_compressed(path, **npz_arrays)
    data = load_dsprites_npz(path)
    assert isinstance(data, DSpritesNPZ) and isinstance(data, FactorDataset)
    assert data.name == "dsprites-npz" and data.likelihood == "bernoulli" and len(data) == 192
    assert data.factor_sizes == [2, 2, 3, 4, 4] and data.complete_grid
    # Dense class 1 of shape is the file's class 2 (heart), of scale the file's class 4, etc.
    dense = np.array([[1, 1, 2, 3, 0], [0, 0, 1, 2, 3]])
    original = np.array([[2, 4, 20, 31, 0], [0, 1, 10, 10, 31]])
    assert torch.equal(data.observations(dense), dsprites.observations(original))
    np.testing.assert_allclose(data.factor_values(dense), dsprites.factor_values(original))
    rows = torch.tensor([0, 77, 191])
    assert torch.equal(data.get(rows)[:, 0], torch.from_numpy(npz_arrays["imgs"][rows.numpy()]).float())
    assert np.array_equal(data.indices_of(data.factors_of(rows)), rows.numpy())
    sampled = data.sample_factors(64, np.random.default_rng(4))
    assert data.observations(sampled).shape == (64, 1, 64, 64)


def test_npz_missing_combination_raises(npz_arrays: dict, tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    np.savez(path, **{key: array[1:] for key, array in npz_arrays.items()})  # drop row 0
    data = load_dsprites_npz(path)
    assert not data.complete_grid
    assert data.sample_factors(10, np.random.default_rng(5)).shape == (10, 5)
    with pytest.raises(DataError, match="no image with factor classes"):
        data.observations(np.zeros((1, 5), dtype=np.int64))


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_dsprites_npz(tmp_path / "absent.npz")


def test_npz_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("this is not an npz archive\n")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_dsprites_npz(path)


def test_npz_corrupt_zip(npz_arrays: dict, tmp_path: Path) -> None:
    path = tmp_path / "truncated.npz"
    np.savez(path, **npz_arrays)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=re.escape(path.name)):
        load_dsprites_npz(path)


def test_npz_missing_key(npz_arrays: dict, tmp_path: Path) -> None:
    path = tmp_path / "nokey.npz"
    np.savez(path, imgs=npz_arrays["imgs"], latents_values=npz_arrays["latents_values"])
    with pytest.raises(DataError, match=r"missing key.*latents_classes"):
        load_dsprites_npz(path)


@pytest.mark.parametrize(
    ("key", "change", "message"),
    [
        ("imgs", lambda a: a[:, :32], r"'imgs' must have shape \[N, 64, 64\]"),
        ("latents_values", lambda a: a[:, 1:], r"'latents_values' must have shape \[N, 6\]"),
        ("latents_classes", lambda a: a[:10], "'latents_classes' has 10 rows but 'imgs' has 192"),
        ("imgs", lambda a: a * 255, r"values must be 0 or 1, found values in \[0, 255\]"),
        ("imgs", lambda a: a.astype(np.float32) * 1.5, r"must lie in \[0, 1\]"),
        ("imgs", lambda a: a.astype(np.float32) - 0.5, r"must lie in \[0, 1\]"),
    ],
)
def test_npz_bad_arrays(npz_arrays: dict, tmp_path: Path, key: str, change, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **{**npz_arrays, key: change(npz_arrays[key])})
    with pytest.raises(DataError, match=message) as info:
        load_dsprites_npz(path)
    assert str(path) in str(info.value)


def test_npz_float_images_in_unit_range_are_kept(npz_arrays: dict, tmp_path: Path) -> None:
    path = tmp_path / "soft.npz"
    soft = npz_arrays["imgs"].astype(np.float32) * 0.5 + 0.25
    np.savez(path, **{**npz_arrays, "imgs": soft})
    data = load_dsprites_npz(path)
    assert torch.equal(data.get(torch.tensor([3]))[0, 0], torch.from_numpy(soft[3]))


# ---------------------------------------------------------------------------- training batches (data on the device)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_render_batch_equals_render_on_and_off_the_grid() -> None:
    """The GPU renderer (every shape tested, no data-dependent indexing) draws render's images bit for bit on CPU."""
    g = torch.Generator().manual_seed(4)
    n = 600
    shapes = torch.randint(3, (n,), generator=g)
    scale = 0.5 + 0.5 * torch.rand(n, generator=g)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    pos_x, pos_y = torch.rand(n, generator=g), torch.rand(n, generator=g)
    assert torch.equal(render_batch(shapes, scale, angle, pos_x, pos_y), render(shapes, scale, angle, pos_x, pos_y))


def test_batches_equal_get_for_every_dataset(dsprites: DSprites, npz_arrays: dict, tmp_path: Path) -> None:
    np.savez(tmp_path / "binary.npz", **npz_arrays)
    np.savez(tmp_path / "soft.npz", **{**npz_arrays, "imgs": npz_arrays["imgs"].astype(np.float32) * 0.5 + 0.25})
    g = torch.Generator().manual_seed(5)
    for data in (dsprites, load_dsprites_npz(tmp_path / "binary.npz"), load_dsprites_npz(tmp_path / "soft.npz")):
        indices = torch.randint(len(data), (300,), generator=g)
        batch = data.batches(torch.device("cpu"))(indices)
        assert batch.dtype == torch.float32 and batch.shape == (300, 1, 64, 64)
        assert torch.equal(batch, data.get(indices)), data.name
    tensor_data = TensorDataset("t", torch.randn(50, 3), likelihood="gaussian")
    indices = torch.randint(50, (20,), generator=g)
    assert torch.equal(tensor_data.batches(torch.device("cpu"))(indices), tensor_data.get(indices))


def test_the_packed_grid_of_the_gpu_path_is_the_grid_packed(dsprites: DSprites) -> None:
    """What a GPU keeps of dSprites (the grid rendered and packed on the device), made here on the CPU."""
    packed = dsprites.packed_grid(5000, 9000, torch.device("cpu"))
    assert np.array_equal(packed.numpy(), dsprites.packed_images(5000, 9000))
    rows = torch.randint(4000, (300,), generator=torch.Generator().manual_seed(8))
    assert torch.equal(PackedImages.of(packed)(rows), dsprites.get(rows + 5000))


def test_every_dataset_path_raises_the_malloc_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    from constrained_vae.data import base, load_dataset

    monkeypatch.setattr(base, "_malloc_thresholds_raised", False)
    load_dataset("linear-gaussian", spectrum=[2.0, 1.0], num_samples=10)
    assert base._malloc_thresholds_raised


@CUDA
def test_cuda_batches_match_the_cpu_ones(dsprites: DSprites, npz_arrays: dict, tmp_path: Path) -> None:
    """Rendered on the GPU: the same images but for rare pixels on a shape's edge (float rounding)."""
    cuda = torch.device("cuda")
    indices = torch.randint(len(dsprites), (2000,), generator=torch.Generator().manual_seed(6))
    on_gpu = dsprites.batches(cuda)(indices.to(cuda)).cpu()
    assert on_gpu.shape == (2000, 1, 64, 64)
    assert (on_gpu != dsprites.get(indices)).float().mean() < 1e-4
    np.savez(tmp_path / "binary.npz", **npz_arrays)
    data = load_dsprites_npz(tmp_path / "binary.npz")
    rows = torch.randint(len(data), (100,), generator=torch.Generator().manual_seed(7))
    assert torch.equal(data.batches(cuda)(rows.to(cuda)).cpu(), data.get(rows))

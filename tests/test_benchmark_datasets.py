"""disentanglement_lib's benchmark datasets: 3dshapes, MPI3D, the dSprites variants, and image folders.

Every file here is made by the test in the published format (keys, shapes, dtypes, factor order)
on a small grid; the dSprites variants are checked against a transcription of disentanglement_lib's
``dsprites.py`` fed the same random numbers.
"""

from __future__ import annotations

import importlib.util
import io
import math
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import (
    MPI3D_SIZES,
    SHAPES3D_SIZES,
    random_images,
    shapes3d_labels,
    smooth_rgb,
    write_h5,
    write_npz,
)
from PIL import Image
from scipy import stats

from constrained_vae.data import mpi3d, shapes3d
from constrained_vae.data.base import Dataset, FactorDataset
from constrained_vae.data.dsprites import DSprites
from constrained_vae.data.dsprites_variants import ColorDSprites, NoisyDSprites, ScreamDSprites
from constrained_vae.data.image_folder import ImageFolder
from constrained_vae.data.mpi3d import MPI3D
from constrained_vae.data.shapes3d import Shapes3D
from constrained_vae.errors import ConfigError, DataError

needs_h5py = pytest.mark.skipif(importlib.util.find_spec("h5py") is None, reason="needs h5py")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CPU = torch.device("cpu")


def as_observations(images_nhwc: np.ndarray) -> torch.Tensor:
    """What a loader should return for file images: float32 ``[n, 3, 64, 64]``, pixel / 255."""
    return torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))


def assert_one_line_error(call: Callable[[], object], file: Path, match: str = "") -> str:
    """``call`` raises DataError whose message is one line naming ``file`` (and containing ``match``)."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert str(file) in message and "\n" not in message, message
    assert match in message, message
    return message


# ---------------------------------------------------------------------------- 3dshapes files


@pytest.fixture(scope="module")
def shapes3d_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small 3dshapes.h5 and its images and labels."""
    images, labels = random_images(math.prod(SHAPES3D_SIZES), seed=1), shapes3d_labels(SHAPES3D_SIZES)
    path = tmp_path_factory.mktemp("shapes3d") / "3dshapes.h5"
    return write_h5(path, images=images, labels=labels), images, labels


# ---------------------------------------------------------------------------- MPI3D files


@pytest.fixture(scope="module")
def mpi3d_images() -> np.ndarray:
    return random_images(math.prod(MPI3D_SIZES), seed=2)


@pytest.fixture(scope="module")
def mpi3d_file(tmp_path_factory: pytest.TempPathFactory, mpi3d_images: np.ndarray) -> Path:
    """A small mpi3d_toy.npz."""
    return write_npz(tmp_path_factory.mktemp("mpi3d") / "mpi3d_toy.npz", mpi3d_images)


# ---------------------------------------------------------------------------- image files


@pytest.fixture(scope="module")
def scream_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400 × 500 (portrait, like The Scream) RGB JPEG."""
    path = tmp_path_factory.mktemp("scream") / "scream.jpg"
    Image.fromarray(smooth_rgb(400, 500, seed=3)).save(path, quality=95)
    return path


# ---------------------------------------------------------------------------- every dataset


def build(kind: str, request: pytest.FixtureRequest) -> Dataset:
    if kind == "shapes3d":
        if importlib.util.find_spec("h5py") is None:
            pytest.skip("needs h5py")
        return Shapes3D(request.getfixturevalue("shapes3d_file")[0])
    if kind == "mpi3d":
        return MPI3D(request.getfixturevalue("mpi3d_file"), factor_sizes=MPI3D_SIZES)
    if kind == "color":
        return ColorDSprites()
    if kind == "noisy":
        return NoisyDSprites()
    if kind == "scream":
        return ScreamDSprites(request.getfixturevalue("scream_file"))
    folder = request.getfixturevalue("tmp_path") / "images"
    folder.mkdir()
    for k in range(5):
        Image.fromarray(smooth_rgb(64, 64, seed=10 + k)).save(folder / f"{k}.png")
    return ImageFolder(folder)


FACTOR_KINDS = ["shapes3d", "mpi3d", "color", "noisy", "scream"]
RANDOM_KINDS = ["color", "noisy", "scream"]


@pytest.mark.parametrize("kind", [*FACTOR_KINDS, "folder"])
def test_every_dataset_has_float32_images_in_the_unit_interval_and_batches_on_cpu_equal_get(
    kind: str, request: pytest.FixtureRequest
) -> None:
    dataset = build(kind, request)
    assert isinstance(dataset, Dataset) and dataset.likelihood == "bernoulli"
    assert isinstance(dataset, FactorDataset) == (kind != "folder")
    assert dataset.sample_shape == (3, 64, 64)
    indices = torch.from_numpy(np.random.default_rng(4).integers(0, len(dataset), 37))
    torch.manual_seed(5)
    batch = dataset.batches(CPU)(indices)
    got = (
        dataset.get(indices, generator=torch.Generator().manual_seed(5))
        if kind in RANDOM_KINDS
        else dataset.get(indices)
    )
    assert batch.dtype == torch.float32 and batch.shape == (37, 3, 64, 64)
    assert torch.equal(batch, got)
    assert batch.min() >= 0 and batch.max() <= 1


@pytest.mark.parametrize("kind", FACTOR_KINDS)
def test_sample_factors_is_uniform_over_the_grid_and_in_range(kind: str, request: pytest.FixtureRequest) -> None:
    dataset = build(kind, request)
    sizes = np.asarray(dataset.factor_sizes)
    factors = dataset.sample_factors(20_000, np.random.default_rng(6))
    assert factors.dtype == np.int64 and factors.shape == (20_000, sizes.size)
    assert (factors >= 0).all() and (factors < sizes).all()
    for k, size in enumerate(sizes):  # each factor uniform over its classes
        assert size == 1 or stats.chisquare(np.bincount(factors[:, k], minlength=size)).pvalue > 1e-3
    if sizes.prod() <= 1000:  # and, on the small grids, every grid point equally likely
        flat = np.ravel_multi_index(tuple(factors.T), tuple(sizes))
        assert stats.chisquare(np.bincount(flat, minlength=sizes.prod())).pvalue > 1e-3


# ---------------------------------------------------------------------------- 3dshapes


@needs_h5py
def test_shapes3d_reads_the_factor_sizes_from_the_labels_of_a_small_grid(shapes3d_file) -> None:
    path, images, _ = shapes3d_file
    dataset = Shapes3D(path)
    assert dataset.name == "shapes3d"
    assert dataset.factor_names == ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
    assert dataset.factor_sizes == SHAPES3D_SIZES and len(dataset) == images.shape[0]
    assert shapes3d.FACTOR_SIZES == [10, 10, 10, 8, 4, 15] and math.prod(shapes3d.FACTOR_SIZES) == 480_000


@needs_h5py
def test_shapes3d_observations_are_the_file_images_of_those_factors_in_row_major_order(
    shapes3d_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, images, labels = shapes3d_file
    monkeypatch.setattr(shapes3d, "READ_CHUNK", 50)  # the rows cross chunk boundaries
    dataset = Shapes3D(path)
    factors = np.random.default_rng(7).integers(0, SHAPES3D_SIZES, (60, 6))
    rows = np.ravel_multi_index(tuple(factors.T), SHAPES3D_SIZES)
    assert torch.equal(dataset.observations(factors), as_observations(images[rows]))
    np.testing.assert_array_equal(dataset.factor_values(factors), labels[rows])
    np.testing.assert_array_equal(dataset.factors_of(rows), factors)
    assert torch.equal(dataset.get(torch.arange(len(dataset))), as_observations(images))


@needs_h5py
@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing key", "missing key(s) ['labels']"),
        ("images wrong shape", "'images' must have shape [N, 64, 64, 3]"),
        ("images wrong dtype", "'images' must be uint8"),
        ("labels wrong shape", "'labels' must have shape [N, 6]"),
        ("labels wrong dtype", "'labels' must be floats"),
        ("rows differ", "'labels' has 143 rows but 'images' has 144"),
        ("shuffled labels", "not in grid order"),
        ("not a full grid", "not a full grid"),
        ("images a group", "expected an array"),
        ("truncated", "not a readable HDF5 file"),
        ("not HDF5", "not a readable HDF5 file"),
        ("missing file", "file not found"),
    ],
)
def test_a_bad_shapes3d_file_raises_one_line_naming_it(shapes3d_file, tmp_path: Path, case: str, match: str) -> None:
    good, images, labels = shapes3d_file
    path = tmp_path / "3dshapes.h5"
    if case == "missing key":
        write_h5(path, images=images)
    elif case == "images wrong shape":
        write_h5(path, images=images[:, :32, :32], labels=labels)
    elif case == "images wrong dtype":
        write_h5(path, images=images.astype(np.float32), labels=labels)
    elif case == "labels wrong shape":
        write_h5(path, images=images, labels=labels[:, :5])
    elif case == "labels wrong dtype":
        write_h5(path, images=images, labels=labels.astype("S8"))
    elif case == "rows differ":
        write_h5(path, images=images, labels=labels[:-1])
    elif case == "shuffled labels":
        write_h5(path, images=images, labels=labels[np.random.default_rng(8).permutation(len(labels))])
    elif case == "not a full grid":
        write_h5(path, images=images, labels=np.concatenate([labels[:-1], labels[:1] + 0.5]))
    elif case == "images a group":
        import h5py

        with h5py.File(path, "w") as handle:
            handle.create_group("images")
            handle.create_dataset("labels", data=labels)
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "not HDF5":
        path.write_text("floor hue, wall hue\n")
    assert_one_line_error(lambda: Shapes3D(path), path, match)


# ---------------------------------------------------------------------------- MPI3D


@pytest.mark.parametrize("compressed", [False, True])
def test_mpi3d_observations_are_the_file_images_of_those_factors_in_row_major_order(
    mpi3d_images: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compressed: bool
) -> None:
    monkeypatch.setattr(mpi3d, "READ_CHUNK", 50)  # the rows cross chunk boundaries
    path = write_npz(tmp_path / "mpi3d_real.npz", mpi3d_images, compressed)
    dataset = MPI3D(path, variant="real", factor_sizes=MPI3D_SIZES)
    assert dataset.name == "mpi3d-real" and dataset.factor_sizes == list(MPI3D_SIZES)
    assert dataset.factor_names[0] == "object_color" and dataset.factor_names[-1] == "vertical_axis"
    factors = np.random.default_rng(9).integers(0, MPI3D_SIZES, (60, 7))
    rows = np.ravel_multi_index(tuple(factors.T), MPI3D_SIZES)
    assert torch.equal(dataset.observations(factors), as_observations(mpi3d_images[rows]))
    assert torch.equal(dataset.get(torch.arange(len(dataset))), as_observations(mpi3d_images))


def test_mpi3d_defaults_to_the_published_grid_of_1036800_images_and_refuses_other_settings(mpi3d_file: Path) -> None:
    assert mpi3d.FACTOR_SIZES == (6, 6, 2, 3, 3, 40, 40) and math.prod(mpi3d.FACTOR_SIZES) == 1_036_800
    with pytest.raises(ConfigError, match="variant"):
        MPI3D(mpi3d_file, variant="complex", factor_sizes=MPI3D_SIZES)
    with pytest.raises(ConfigError, match="7 integers"):
        MPI3D(mpi3d_file, factor_sizes=MPI3D_SIZES[:6])


def npz_with_header_only(path: Path, shape: tuple[int, ...]) -> Path:
    """An .npz whose images.npy has a header claiming ``shape`` (uint8) and no data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", header.getvalue())  # magic string and header
    return path


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing key", "missing key 'images'; found ['imgs']"),
        ("wrong shape", "'images' must have shape [N, 64, 64, 3]"),
        ("wrong dtype", "'images' must be uint8"),
        ("wrong count", "holds 143 images, but factor sizes [2, 2, 2, 1, 3, 2, 3] make 144"),
        ("disentanglement_lib count", "older files have factor_sizes [4, 4, 2, 3, 3, 40, 40]"),
        ("data cut short", "cannot read 'images'"),
        ("truncated", "not a readable .npz archive"),
        ("a .npy file", "not a readable .npz archive"),
        ("not npz", "not a readable .npz archive"),
        ("missing file", "file not found"),
    ],
)
def test_a_bad_mpi3d_file_raises_one_line_naming_it(mpi3d_images: np.ndarray, tmp_path: Path, case: str, match: str):
    path = tmp_path / "mpi3d_toy.npz"
    sizes = MPI3D_SIZES
    if case == "missing key":
        np.savez(path, imgs=mpi3d_images)
    elif case == "wrong shape":
        np.savez(path, images=mpi3d_images[:, :, :, 0])
    elif case == "wrong dtype":
        np.savez(path, images=mpi3d_images.astype(np.float32))
    elif case == "wrong count":
        np.savez(path, images=mpi3d_images[:-1])
    elif case == "disentanglement_lib count":  # refused from the header, before any data is read
        npz_with_header_only(path, (460_800, 64, 64, 3))
        sizes = mpi3d.FACTOR_SIZES
    elif case == "data cut short":
        npz_with_header_only(path, (144, 64, 64, 3))
    elif case == "truncated":
        np.savez(path, images=mpi3d_images)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "a .npy file":
        with path.open("wb") as handle:
            np.save(handle, mpi3d_images)
    elif case == "not npz":
        path.write_text("object colour, object shape\n")
    assert_one_line_error(lambda: MPI3D(path, factor_sizes=sizes), path, match)


# ---------------------------------------------------------------------------- dSprites variants:
# disentanglement_lib's definitions (dsprites.py), transcribed, NHWC numpy, fed our random numbers.


class ReplayRandomState:
    """Stands in for numpy's RandomState: returns recorded numbers in the order the code asks for them."""

    def __init__(self, uniforms: list[np.ndarray] = (), ints: list[int] = ()) -> None:  # type: ignore[assignment]
        self.uniforms, self.ints = list(uniforms), list(ints)

    def uniform(self, low: float, high: float, size) -> np.ndarray:
        u = self.uniforms.pop(0)
        assert u.shape == tuple(np.atleast_1d(size)) and (u >= 0).all() and (u < 1).all()
        return low + (high - low) * u  # numpy's uniform

    def randint(self, low: int, high: int) -> int:
        value = self.ints.pop(0)
        assert low <= value < high
        return value


def dl_color(no_color_observations: np.ndarray, random_state) -> np.ndarray:
    observations = np.repeat(no_color_observations, 3, axis=3)
    color = np.repeat(
        np.repeat(random_state.uniform(0.5, 1, [observations.shape[0], 1, 1, 3]), observations.shape[1], axis=1),
        observations.shape[2],
        axis=2,
    )
    return observations * color


def dl_noisy(no_color_observations: np.ndarray, random_state) -> np.ndarray:
    observations = np.repeat(no_color_observations, 3, axis=3)
    color = random_state.uniform(0, 1, [observations.shape[0], 64, 64, 3])
    return np.minimum(observations + color, 1.0)


def dl_scream(no_color_observations: np.ndarray, scream: np.ndarray, random_state) -> np.ndarray:
    observations = np.repeat(no_color_observations, 3, axis=3)
    for i in range(observations.shape[0]):
        x_crop = random_state.randint(0, scream.shape[0] - 64)
        y_crop = random_state.randint(0, scream.shape[1] - 64)
        background = (scream[x_crop : x_crop + 64, y_crop : y_crop + 64] + random_state.uniform(0, 1, size=3)) / 2.0
        mask = observations[i] == 1
        background[mask] = 1 - background[mask]
        observations[i] = background
    return observations


def dl_prepare_scream(path: Path) -> np.ndarray:
    scream = Image.open(path)
    scream.thumbnail((350, 274))  # theirs: thumbnail((350, 274, 3)), which Pillow 13 refuses (ValueError)
    return np.array(scream) * 1.0 / 255.0


@pytest.fixture(scope="module")
def sprite_factors() -> tuple[np.ndarray, np.ndarray]:
    """Class rows of 24 random grid points, and their binary sprites as disentanglement_lib holds them
    (float32 ``[n, 64, 64, 1]``)."""
    factors = DSprites().sample_factors(24, np.random.default_rng(11))
    sprites = DSprites().observations(factors)[:, 0, :, :, None].numpy()
    return factors, sprites


def nhwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).double().numpy()


def test_color_dsprites_is_disentanglement_libs_definition_given_the_same_random_numbers(sprite_factors) -> None:
    factors, sprites = sprite_factors
    dataset = ColorDSprites()
    u = torch.rand(len(factors), 3, 1, 1, generator=torch.Generator().manual_seed(12))
    ours = dataset.observations(factors, generator=torch.Generator().manual_seed(12))
    theirs = dl_color(sprites, ReplayRandomState(uniforms=[nhwc(u)]))
    np.testing.assert_allclose(nhwc(ours), theirs, rtol=0, atol=1e-6)
    sprite = ours.amax(dim=1, keepdim=True) > 0  # a coloured sprite on black, one colour per image
    assert torch.equal(sprite.float(), torch.from_numpy(sprites).permute(0, 3, 1, 2))
    colours = ours.amax(dim=(2, 3))
    assert (colours >= 0.5).all() and (colours < 1).all()
    assert torch.equal(ours, torch.where(sprite, colours[:, :, None, None], 0.0))


def test_noisy_dsprites_is_disentanglement_libs_definition_given_the_same_random_numbers(sprite_factors) -> None:
    factors, sprites = sprite_factors
    u = torch.rand(len(factors), 3, 64, 64, generator=torch.Generator().manual_seed(13))
    ours = NoisyDSprites().observations(factors, generator=torch.Generator().manual_seed(13))
    theirs = dl_noisy(sprites, ReplayRandomState(uniforms=[nhwc(u)]))
    np.testing.assert_allclose(nhwc(ours), theirs, rtol=0, atol=1e-6)
    assert (ours[torch.from_numpy(sprites[..., 0] == 1)[:, None].expand(-1, 3, -1, -1)] == 1).all()


@pytest.mark.parametrize("image_format", ["jpg", "png"])
def test_scream_dsprites_is_disentanglement_libs_definition_given_the_same_random_numbers(
    sprite_factors, scream_file: Path, tmp_path: Path, image_format: str
) -> None:
    factors, sprites = sprite_factors
    path = scream_file if image_format == "jpg" else tmp_path / "scream.png"
    if image_format == "png":
        Image.fromarray(smooth_rgb(300, 200, seed=14)).save(path)  # landscape: the width bound binds
    scream = dl_prepare_scream(path)
    assert scream.shape == ((274, 219, 3) if image_format == "jpg" else (200, 300, 3))
    n, height, width = len(factors), scream.shape[0], scream.shape[1]
    generator = torch.Generator().manual_seed(15)
    top = torch.randint(0, height - 64, (n,), generator=generator)
    left = torch.randint(0, width - 64, (n,), generator=generator)
    colour = torch.rand(n, 3, generator=generator)
    ours = ScreamDSprites(path).observations(factors, generator=torch.Generator().manual_seed(15))
    replay = ReplayRandomState(
        uniforms=[c.double().numpy() for c in colour],
        ints=[int(v) for pair in zip(top, left, strict=True) for v in pair],
    )
    theirs = dl_scream(sprites, scream, replay)
    np.testing.assert_allclose(nhwc(ours), theirs, rtol=0, atol=1e-6)
    assert not replay.uniforms and not replay.ints


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_variant_batches_draw_from_the_default_generator_so_a_resumed_run_draws_the_same(
    kind: str, request: pytest.FixtureRequest
) -> None:
    first, second = (torch.arange(8) * 9001, torch.arange(8) * 777)
    dataset = build(kind, request)
    batches = dataset.batches(CPU)
    torch.manual_seed(16)
    batches(first)
    saved = torch.get_rng_state()  # what the training loop checkpoints
    uninterrupted = batches(second)
    assert not torch.equal(uninterrupted, batches(second))  # fresh draws at every call
    torch.manual_seed(99)
    torch.set_rng_state(saved)  # a resumed run: a new dataset, the saved state restored
    assert torch.equal(build(kind, request).batches(CPU)(second), uninterrupted)


def test_variant_get_draws_from_its_own_generator_unless_given_one() -> None:
    dataset = NoisyDSprites(seed=3)
    indices = torch.arange(4) * 1000
    before = torch.get_rng_state()
    first = dataset.get(indices)
    assert torch.equal(torch.get_rng_state(), before)  # the training stream is left alone
    dataset.generator.manual_seed(3)
    assert torch.equal(dataset.get(indices), first)
    assert torch.equal(dataset.get(indices, generator=torch.Generator().manual_seed(3)), first)
    assert dataset.factor_sizes == [3, 6, 40, 32, 32] and len(dataset) == 737_280


@pytest.mark.parametrize(
    ("case", "match"),
    [("missing", "file not found"), ("not an image", "not a readable image"), ("too small", "60×60 px")],
)
def test_a_bad_scream_image_raises_one_line_naming_it(tmp_path: Path, case: str, match: str) -> None:
    path = tmp_path / "scream.jpg"
    if case == "not an image":
        path.write_text("Munch, 1893\n")
    elif case == "too small":
        Image.fromarray(smooth_rgb(60, 60, seed=17)).save(path)
    assert_one_line_error(lambda: ScreamDSprites(path), path, match)


# ---------------------------------------------------------------------------- image folders


def write_images(folder: Path, images: dict[str, np.ndarray]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, pixels in images.items():
        Image.fromarray(pixels).save(folder / name)
    return folder


def test_an_image_folder_holds_its_files_sorted_by_name_with_channels_and_size_as_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(18)
    rgb = {name: rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for name in ["b.png", "10.png", "a.PNG"]}
    folder = write_images(tmp_path / "rgb", rgb)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"ignored")
    (folder / "sub.png").mkdir()
    dataset = ImageFolder(folder)
    assert dataset.files == ["10.png", "a.PNG", "b.png"] and dataset.sample_shape == (3, 24, 40)
    expected = as_observations(np.stack([rgb[name] for name in dataset.files]))
    assert torch.equal(dataset.get(torch.arange(3)), expected)
    assert torch.equal(dataset.batches(CPU)(torch.tensor([2, 0])), expected[[2, 0]])

    grey = {f"{k}.jpg": smooth_rgb(64, 64, seed=k)[..., 0] for k in range(3)}
    dataset = ImageFolder(write_images(tmp_path / "grey", grey), likelihood="gaussian")
    assert dataset.sample_shape == (1, 64, 64) and dataset.likelihood == "gaussian"
    decoded = np.stack([np.asarray(Image.open(tmp_path / "grey" / name)) for name in sorted(grey)])
    assert torch.equal(dataset.get(torch.arange(3)), torch.from_numpy(decoded[:, None] / np.float32(255)))


@pytest.mark.parametrize(
    ("case", "odd", "match"),
    [
        ("mixed sizes", "b.png", "32×32 px RGB, but a.png (the first file) is 64×64 px RGB"),
        ("mixed modes", "b.png", "64×64 px L, but a.png (the first file) is 64×64 px RGB"),
        ("unsupported mode", "a.png", "PIL mode 'RGBA' is neither grey (L) nor RGB"),
        ("corrupt file", "b.png", "not a readable PNG or JPEG image"),
        ("empty folder", "", "no PNG or JPEG files"),
        ("missing folder", "", "folder not found"),
    ],
)
def test_a_bad_image_folder_raises_one_line_naming_the_first_odd_file(
    tmp_path: Path, case: str, odd: str, match: str
) -> None:
    folder = tmp_path / "images"
    square = smooth_rgb(64, 64, seed=19)
    if case == "mixed sizes":
        write_images(folder, {"a.png": square, "b.png": square[:32, :32], "c.png": square[:32, :32]})
    elif case == "mixed modes":
        write_images(folder, {"a.png": square, "b.png": square[..., 0], "c.png": square[..., 0]})
    elif case == "unsupported mode":
        write_images(folder, {"a.png": np.concatenate([square, square[..., :1]], axis=2)})
    elif case == "corrupt file":
        write_images(folder, {"a.png": square})
        (folder / "b.png").write_bytes((folder / "a.png").read_bytes()[:100])
    elif case == "empty folder":
        folder.mkdir()
        (folder / "notes.txt").write_text("no images here")
    message = assert_one_line_error(lambda: ImageFolder(folder), folder / odd if odd else folder, match)
    assert "c.png" not in message


# ---------------------------------------------------------------------------- on a GPU


@needs_cuda
@pytest.mark.parametrize("kind", [*FACTOR_KINDS, "folder"])
def test_cuda_batches_never_wait_for_the_host_and_match_the_cpu_images(kind: str, request: pytest.FixtureRequest):
    dataset = build(kind, request)
    cuda = torch.device("cuda")
    indices = torch.from_numpy(np.random.default_rng(20).integers(0, len(dataset), 64))
    batches = dataset.batches(cuda)
    on_device = indices.to(cuda)
    batches(on_device)  # warm up (first-call allocations)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = batches(on_device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert batch.device.type == "cuda" and batch.shape == (64, 3, 64, 64) and batch.dtype == torch.float32
    batch = batch.cpu()
    assert batch.min() >= 0 and batch.max() <= 1
    if kind in RANDOM_KINDS:  # other random numbers; the sprites where the CPU puts them, but for rare edge pixels
        sprites = DSprites().get(indices) == 1
        if kind == "color":
            assert ((batch.amax(dim=1, keepdim=True) > 0) != sprites).float().mean() < 1e-3
        elif kind == "noisy":
            assert ((batch.amin(dim=1, keepdim=True) == 1) != sprites).float().mean() < 1e-3
    else:
        torch.testing.assert_close(batch, dataset.get(indices), rtol=0, atol=1e-7)

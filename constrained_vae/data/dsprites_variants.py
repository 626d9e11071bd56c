"""color-dsprites, noisy-dsprites and scream-dsprites, as disentanglement_lib defines them.

Source: Locatello et al., "Challenging Common Assumptions in the Unsupervised Learning of
Disentangled Representations" (ICML 2019), https://github.com/google-research/disentanglement_lib
(Apache License 2.0), ``disentanglement_lib/data/ground_truth/dsprites.py``: ``ColorDSprites``,
``NoisyDSprites`` and ``ScreamDSprites``. This is a re-implementation of their definitions on the
procedural dSprites renderer (:class:`~constrained_vae.data.dsprites.DSprites`), so no dSprites file
is needed; scream-dsprites needs a picture of Edvard Munch's *The Scream* (public domain), which
disentanglement_lib downloads from https://upload.wikimedia.org/wikipedia/commons/f/f4/The_Scream.jpg.

The factors are dSprites' (the sprite's colour or background is noise, not a factor):

=============  =====  ==============================================
factor         size   values
=============  =====  ==============================================
shape          3      square, ellipse, heart
scale          6      linspace(0.5, 1, 6)
orientation    40     linspace(0, 2π, 40, endpoint=False), radians
pos_x          32     linspace(0, 1, 32); 0 = left, 1 = right
pos_y          32     linspace(0, 1, 32); 0 = top, 1 = bottom
=============  =====  ==============================================

737,280 grid points, row-major as in dSprites. Each observation is 3 × 64 × 64, float32 in [0, 1],
drawn afresh from the binary sprite ``s`` (0/1) at every call, per observation:

- **color-dsprites**: ``s · c`` with one colour ``c ~ U[0.5, 1)³`` per observation (channel by
  channel), so the sprite is coloured and the background stays black.
- **noisy-dsprites**: ``min(s + u, 1)`` with ``u ~ U[0, 1)`` for every pixel and channel: a white
  sprite on a background of uniform noise.
- **scream-dsprites**: a random 64 × 64 patch ``p`` of the prepared image (top-left corner row
  ``~ randint(0, H − 64)``, column ``~ randint(0, W − 64)``, upper bounds excluded, as numpy's
  ``randint``), mixed with one random colour: ``b = (p + c) / 2``, ``c ~ U[0, 1)³``; the sprite's
  pixels are inverted, ``1 − b``, the rest stay ``b``. The image is prepared as disentanglement_lib
  does: PIL's ``thumbnail((350, 274))`` (shrunk, aspect kept, to fit in 350 × 274 px; it is never
  enlarged) then ``pixel / 255``. Unlike disentanglement_lib it is converted to RGB if it is not.

Random numbers: :meth:`batches` (the training path) draws them with ``torch.rand`` / ``torch.randint``
from the generator it is given (on the batch's device; None: torch's default generator there): the
training loop passes each run's own stream, which it seeds and checkpoints, so a resumed run draws
what an uninterrupted one would. :meth:`get` and
:meth:`observations` draw from their ``generator`` argument, else from the dataset's own CPU
generator :attr:`generator` (seeded with ``seed`` at construction; each call advances it: reseed it
with ``dataset.generator.manual_seed(s)`` for a repeatable evaluation). Given generators in the same
state, ``batches(cpu)`` and ``get`` return the same images bit for bit. Draw order per batch of n:
colour ``rand(n, 3, 1, 1)``; noise ``rand(n, 3, 64, 64)``; scream ``randint(0, H − 64, (n,))`` (rows),
``randint(0, W − 64, (n,))`` (columns), then ``rand(n, 3)`` (colours).

Likelihood: ``"bernoulli"``: disentanglement_lib trains every dataset, these included, with a
Bernoulli loss on [0, 1] values.

Memory: nothing per image. The sprites are rendered per batch (the factor value tables are a few
hundred bytes); scream-dsprites holds its prepared image as float32 ``[3, H, W]`` with H ≤ 274 and
W ≤ 350 (≤ 1.15 MB; ~0.7 MB for a portrait like The Scream, about 222 × 274 px), copied once to the
device by :meth:`batches`. A batch of n needs n · 48 KiB of float32 output and temporaries of that order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from constrained_vae.data.base import BatchFn, Likelihood
from constrained_vae.data.dsprites import IMAGE_SIZE, DSprites
from constrained_vae.data.image_folder import PIL_ERRORS, one_line
from constrained_vae.errors import DataError

__all__ = [
    "SCREAM_THUMBNAIL",
    "ColorDSprites",
    "NoisyDSprites",
    "ScreamDSprites",
    "color_sprites",
    "load_scream",
    "noisy_sprites",
    "scream_sprites",
]

SCREAM_THUMBNAIL = (350, 274)  # (width, height) bound; disentanglement_lib writes thumbnail((350, 274, 3))


# ---------------------------------------------------------------------------- the definitions


def color_sprites(sprites: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """color-dsprites from binary sprites float32 ``[n, 1, 64, 64]``: float32 ``[n, 3, 64, 64]`` in [0, 1].

    Each sprite times one colour ``U[0.5, 1)³``, drawn as ``0.5 + 0.5 · rand(n, 3, 1, 1)`` from
    ``generator`` (None: the default generator of the sprites' device).
    """
    u = torch.rand(sprites.shape[0], 3, 1, 1, generator=generator, device=sprites.device)
    return sprites * (0.5 + 0.5 * u)


def noisy_sprites(sprites: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """noisy-dsprites from binary sprites float32 ``[n, 1, 64, 64]``: float32 ``[n, 3, 64, 64]`` in [0, 1].

    ``min(sprite + u, 1)`` with ``u = rand(n, 3, 64, 64)`` from ``generator`` (None: the default
    generator of the sprites' device).
    """
    u = torch.rand(sprites.shape[0], 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator, device=sprites.device)
    return torch.clamp(sprites + u, max=1.0)


def scream_sprites(
    sprites: torch.Tensor, scream: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """scream-dsprites from binary sprites float32 ``[n, 1, 64, 64]``: float32 ``[n, 3, 64, 64]`` in [0, 1].

    ``scream``: the prepared image, float32 ``[3, H, W]`` in [0, 1] on the sprites' device, H, W > 64
    (:func:`load_scream`). Per sprite a patch at row ``randint(0, H − 64)``, column
    ``randint(0, W − 64)``, and a colour ``rand(3)``, all from ``generator`` (None: the default
    generator of the sprites' device): background ``(patch + colour) / 2``, inverted on the sprite.
    Fixed shapes and on-device gathers only, so it never waits for the host.
    """
    n, device = sprites.shape[0], sprites.device
    _, height, width = scream.shape
    top = torch.randint(0, height - IMAGE_SIZE, (n,), generator=generator, device=device)
    left = torch.randint(0, width - IMAGE_SIZE, (n,), generator=generator, device=device)
    colour = torch.rand(n, 3, generator=generator, device=device)
    offsets = torch.arange(IMAGE_SIZE, device=device)
    rows = (top[:, None] + offsets)[:, None, :, None]  # [n, 1, 64, 1]
    cols = (left[:, None] + offsets)[:, None, None, :]  # [n, 1, 1, 64]
    channels = torch.arange(3, device=device)[None, :, None, None]  # [1, 3, 1, 1]
    background = (scream[channels, rows, cols] + colour[:, :, None, None]) / 2  # [n, 3, 64, 64]
    return torch.where(sprites == 1, 1 - background, background)


def load_scream(path: str | os.PathLike[str]) -> torch.Tensor:
    """The image at ``path`` prepared as disentanglement_lib does, float32 ``[3, H, W]`` in [0, 1].

    ``thumbnail((350, 274))`` (fit within 350 × 274 px, aspect kept, never enlarged; Pillow's
    default bicubic filter), converted to RGB if it is not, then ``pixel / 255``. DataError, naming
    the file, if it is missing, unreadable, or not larger than 64 px each way after the thumbnail.
    """
    file = Path(path)
    if not file.exists():
        raise DataError(f"{file}: file not found")
    if not file.is_file():
        raise DataError(f"{file}: not a file")
    try:
        with Image.open(file) as image:
            image.thumbnail(SCREAM_THUMBNAIL)
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            pixels = np.array(rgb, dtype=np.uint8)
    except PIL_ERRORS as exc:
        raise DataError(f"{file}: not a readable image ({one_line(exc)})") from exc
    height, width = pixels.shape[:2]
    if height <= IMAGE_SIZE or width <= IMAGE_SIZE:
        raise DataError(
            f"{file}: the image is {width}×{height} px after fitting it within "
            f"{SCREAM_THUMBNAIL[0]}×{SCREAM_THUMBNAIL[1]}; scream-dsprites needs more than {IMAGE_SIZE} px each way"
        )
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous().float() / 255.0


# ---------------------------------------------------------------------------- datasets


Dress = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]  # (sprites, generator) → observations


class DressedBatches:
    """Training batches of a variant: grid indices → sprites rendered on the indices' device → dressed there."""

    def __init__(self, sprites: BatchFn, dress: Dress) -> None:
        self._sprites = sprites
        self._dress = dress

    def __call__(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """float32 ``[n, 3, 64, 64]`` at int64 ``[n]`` grid indices (in range, not checked), dressed with
        random numbers from ``generator`` (None: the device's default generator)."""
        return self._dress(self._sprites(indices), generator)


class _SpriteVariant:
    """A dSprites variant: the procedural grid's factors, 3-channel observations redrawn at every call."""

    name: str
    likelihood: Likelihood = "bernoulli"

    def __init__(self, seed: int = 0) -> None:
        """``seed``: of :attr:`generator`, the CPU generator :meth:`get` and :meth:`observations` use by default."""
        self._base = DSprites()
        self.factor_names = list(self._base.factor_names)
        self.factor_sizes = list(self._base.factor_sizes)
        self.generator = torch.Generator().manual_seed(seed)

    def _dress(self, sprites: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def _device_dress(self, device: torch.device) -> Dress:
        return self._dress

    def __len__(self) -> int:
        return len(self._base)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3, IMAGE_SIZE, IMAGE_SIZE)

    def factors_of(self, indices: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class indices of flat grid indices, int64 ``[n, 5]``."""
        return self._base.factors_of(indices)

    def indices_of(self, factors: np.ndarray) -> np.ndarray:
        """Flat grid indices of class-index rows ``[n, 5]``, int64 ``[n]``."""
        return self._base.indices_of(factors)

    def factor_values(self, factors: np.ndarray) -> np.ndarray:
        """Values of class-index rows ``[n, 5]``, float64 ``[n, 5]`` (as dSprites')."""
        return self._base.factor_values(factors)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` rows of independent uniform class indices, int64 ``[n, 5]``."""
        return self._base.sample_factors(n, rng)

    def get(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Observations at flat grid ``indices`` (int64 ``[n]``), float32 ``[n, 3, 64, 64]`` in [0, 1],
        drawn from ``generator`` (a CPU generator; None: :attr:`generator`)."""
        return self._dress(self._base.get(indices), self.generator if generator is None else generator)

    def observations(self, factors: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """Observations with class indices ``[n, 5]``, float32 ``[n, 3, 64, 64]`` in [0, 1], drawn from
        ``generator`` (a CPU generator; None: :attr:`generator`)."""
        return self._dress(self._base.observations(factors), self.generator if generator is None else generator)

    def batches(self, device: torch.device) -> BatchFn:
        """Observations at grid indices on ``device``, rendered and drawn there (:class:`DressedBatches`)."""
        return DressedBatches(self._base.batches(device), self._device_dress(torch.device(device)))


class ColorDSprites(_SpriteVariant):
    """color-dsprites (see the module docstring): the sprite in a random colour ``U[0.5, 1)³``, black background."""

    name = "color-dsprites"

    def _dress(self, sprites: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return color_sprites(sprites, generator)


class NoisyDSprites(_SpriteVariant):
    """noisy-dsprites (see the module docstring): a white sprite on uniform noise."""

    name = "noisy-dsprites"

    def _dress(self, sprites: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return noisy_sprites(sprites, generator)


class ScreamDSprites(_SpriteVariant):
    """scream-dsprites (see the module docstring): the sprite inverted on a random patch of an image."""

    name = "scream-dsprites"

    def __init__(self, scream_path: str | os.PathLike[str], seed: int = 0) -> None:
        """``scream_path``: a JPEG or PNG (disentanglement_lib's ``scream/scream.jpg``), read by :func:`load_scream`."""
        self.scream_path = Path(scream_path)
        self._scream = load_scream(self.scream_path)
        super().__init__(seed)

    def _dress(self, sprites: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return scream_sprites(sprites, self._scream, generator)

    def _device_dress(self, device: torch.device) -> Dress:
        scream = self._scream.to(device)
        return lambda sprites, generator: scream_sprites(sprites, scream, generator)

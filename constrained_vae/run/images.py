"""What a run's model shows, as arrays: posterior means, decoded means, reconstructions and latent traversals.

The computations behind the run's figures (:mod:`constrained_vae.plots.run_figures`) and its TensorBoard
images (:mod:`constrained_vae.run.tensorboard`), so that both show the same thing. Nothing here draws, and
nothing takes gradients or draws from torch's random streams (a run that logs images trains the same numbers).

Decoded images are the likelihood's mean (pixel probabilities for a Bernoulli decoder), clipped to [0, 1].
Image data is ``[C, H, W]`` observations with C = 1 or 3, or flat Bernoulli ones with a square number of
features (digits' 8×8); other data (linear-gaussian's vectors) has no images (:func:`image_shape` is None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from constrained_vae.core.losses import gaussian_kl_per_dim

BATCH = 256  # observations or codes per forward pass
GAP_PX = 2  # pixels between tiles of a mosaic


def draw_observations(dataset, n: int, seed: int) -> torch.Tensor:
    """``n`` observations drawn uniformly (with replacement) from ``dataset``, ``[n, *sample_shape]``."""
    generator = torch.Generator().manual_seed(seed)
    return dataset.get(torch.randint(len(dataset), (n,), generator=generator))


def encode(model, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and log-variance of ``observations``, each ``[n, latent_dim]`` on the host, without gradients."""
    device = next(model.parameters()).device
    with torch.no_grad():
        pairs = [model.encode(batch.to(device)) for batch in observations.split(BATCH)]
    mu = torch.cat([mu.detach().cpu() for mu, _ in pairs])
    return mu, torch.cat([log_var.detach().cpu() for _, log_var in pairs])


def decode_mean(model, likelihood, codes: torch.Tensor) -> torch.Tensor:
    """The likelihood's mean at ``codes`` ``[n, latent_dim]`` (pixel probabilities for Bernoulli), on the host."""
    device = next(model.parameters()).device
    with torch.no_grad():
        means = [likelihood.mean(model.decode(batch.to(device))).cpu() for batch in codes.split(BATCH)]
    return torch.cat(means)


def kl_per_dimension(mu: torch.Tensor, log_var: torch.Tensor) -> np.ndarray:
    """KL(q(z_d|x) ‖ N(0, 1)) of each latent dimension, averaged over the batch: nats ``[latent_dim]``."""
    return gaussian_kl_per_dim(mu.double(), log_var.double()).mean(dim=0).numpy()


def traversal_codes(mu: torch.Tensor, dims: Sequence[int], values: torch.Tensor) -> torch.Tensor:
    """Codes ``[len(dims) · len(values), latent_dim]``: row block i is ``mu`` with dimension
    ``dims[i]`` set to each of ``values`` in turn."""
    codes = mu.repeat(len(dims) * len(values), 1)
    for i, dim in enumerate(dims):
        codes[i * len(values) : (i + 1) * len(values), dim] = values
    return codes


def image_shape(sample_shape: tuple[int, ...], likelihood: str) -> tuple[int, ...] | None:
    """How to show one observation: ``(H, W)`` or ``(H, W, 3)``; None when it is not an image."""
    if len(sample_shape) == 3 and sample_shape[0] in (1, 3):
        return sample_shape[1:] if sample_shape[0] == 1 else (*sample_shape[1:], 3)
    if len(sample_shape) == 1 and likelihood == "bernoulli" and math.isqrt(sample_shape[0]) ** 2 == sample_shape[0]:
        side = math.isqrt(sample_shape[0])
        return (side, side)
    return None


def as_images(batch: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """Observations ``[n, *sample_shape]`` as displayable images ``[n, *shape]`` clipped to [0, 1]."""
    array = batch.detach().cpu().float().numpy()
    if len(shape) == 3:  # channels last for RGB
        array = np.moveaxis(array, 1, -1)
    return np.clip(array.reshape(len(array), *shape), 0.0, 1.0)


def mosaic(images: np.ndarray, gap: int = GAP_PX) -> np.ndarray:
    """Tiles ``[rows, cols, H, W(, 3)]`` as one image with ``gap``-pixel white lines between them."""
    rows, cols, height, width = images.shape[:4]
    canvas = np.ones((rows * (height + gap) - gap, cols * (width + gap) - gap, *images.shape[4:]))
    for r in range(rows):
        for c in range(cols):
            top, left = r * (height + gap), c * (width + gap)
            canvas[top : top + height, left : left + width] = images[r, c]
    return canvas


@dataclass
class Traversals:
    """Latent traversals around a seed observation: ``grid[i, j]`` decodes the seed's posterior mean with
    latent ``dims[i]`` set to ``values[j]``; rows in decreasing order of their dimension's KL."""

    grid: np.ndarray  # [len(dims), len(values), H, W(, 3)]
    dims: list[int]
    values: np.ndarray  # the traversed values (prior standard deviations)
    seed_pair: np.ndarray  # [2, H, W(, 3)]: the seed observation and its reconstruction


def traversals(
    model, likelihood, seed: torch.Tensor, mu: torch.Tensor, kl: np.ndarray, shape, steps: int, limit: float
) -> Traversals:
    """Each latent of the seed observation ``seed`` ``[1, *sample_shape]`` (posterior mean ``mu``
    ``[latent_dim]``) swept over ``steps`` values from −``limit`` to ``limit``, rows ordered by ``kl`` (nats)."""
    dims = [int(d) for d in np.argsort(-kl, kind="stable")]
    values = torch.linspace(-limit, limit, steps)
    traversed = decode_mean(model, likelihood, traversal_codes(mu, dims, values))
    grid = as_images(traversed, shape).reshape(len(dims), steps, *shape)
    seed_pair = np.concatenate(
        [as_images(seed, shape), as_images(decode_mean(model, likelihood, mu.reshape(1, -1)), shape)]
    )
    return Traversals(grid, dims, values.numpy(), seed_pair)


@dataclass
class Reconstructions:
    """Observations and the decoder's mean at their posterior means, ``[n, H, W(, 3)]`` each, and the mean
    NLL of the observations under those decoded means (nats per observation)."""

    originals: np.ndarray
    reconstructions: np.ndarray
    nll: float


def reconstructions(model, likelihood, originals: torch.Tensor, mu: torch.Tensor, shape) -> Reconstructions:
    """``originals`` ``[n, *sample_shape]`` decoded at their posterior means ``mu`` ``[n, latent_dim]``."""
    device = next(model.parameters()).device
    with torch.no_grad():
        decoded = model.decode(mu.to(device))
        nll = float(likelihood.nll_per_sample(decoded, originals.to(device)).mean())
        means = likelihood.mean(decoded)
    return Reconstructions(as_images(originals, shape), as_images(means, shape), nll)


__all__ = [
    "Reconstructions",
    "Traversals",
    "as_images",
    "decode_mean",
    "draw_observations",
    "encode",
    "image_shape",
    "kl_per_dimension",
    "mosaic",
    "reconstructions",
    "traversal_codes",
    "traversals",
]

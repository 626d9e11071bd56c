"""The β-VAE paper's figures of one trained run, as PNG (or PDF) files in ``RUN/figures/``.

- ``latent_traversals.png``: each latent dimension swept over −3…3 (±3 prior standard
  deviations) with the others held at a seed image's posterior mean; rows ordered by the
  dimension's average KL, which each row's label gives (Higgins et al. 2017, Fig. 1, 7);
- ``reconstructions.png``: originals above their reconstructions (decoded posterior mean), with the
  NLL of those images at their posterior means (not the run's tail NLL, which samples z);
- ``prior_samples.png``: decoded samples z ~ N(0, I);
- ``kl_per_dimension.png``: the average KL of each latent dimension in nats (which carry information).

Decoded images show the likelihood's mean (pixel probabilities for a Bernoulli decoder).
Image figures need image-like data (``[C, H, W]`` observations, or flat Bernoulli ones with a
square number of features, like digits' 8×8); for other data only the KL chart is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.axes
import matplotlib.image
import numpy as np
import torch
from matplotlib.figure import Figure
from mpl_toolkits.axes_grid1 import make_axes_locatable

from constrained_vae.plots.figure import DPI, check_output, new_figure, save_figure
from constrained_vae.run import locks
from constrained_vae.run.images import (
    GAP_PX,
    as_images,
    decode_mean,
    draw_observations,
    encode,
    image_shape,
    kl_per_dimension,
    mosaic,
    reconstructions,
    traversals,
)
from constrained_vae.run.loop import load_run
from constrained_vae.run.trainee import Trainee

FIGURES_DIR = "figures"


# ---------------------------------------------------------------------------- drawing (the arrays: run.images)


def _tile_centres(count: int, size: int, gap: int = GAP_PX) -> np.ndarray:
    return np.arange(count) * (size + gap) + (size - 1) / 2


def _show(ax: matplotlib.axes.Axes, image: np.ndarray) -> matplotlib.image.AxesImage:
    return ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")


def _pixel_colorbar(fig: Figure, image: matplotlib.image.AxesImage, ax, label: str) -> None:
    """A colour bar as tall as the image shown in ``ax``, labelled with the pixels' meaning."""
    bar_ax = make_axes_locatable(ax).append_axes("right", size=0.12, pad=0.1)
    bar = fig.colorbar(image, cax=bar_ax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


# ---------------------------------------------------------------------------- figures


def _signed(value: float) -> str:
    """``value`` as ``+1.2`` / ``-1.2`` / ``0.0`` (no negative zero)."""
    rounded = round(float(value), 1) + 0.0
    return f"{rounded:+.1f}" if rounded else "0.0"


def plot_traversals(
    seed_pair: np.ndarray,
    traversals: np.ndarray,
    dims: Sequence[int],
    kl: np.ndarray,
    seed_mu: np.ndarray,
    values: np.ndarray,
) -> Figure:
    """The seed image and its reconstruction (``seed_pair`` ``[2, H, W(, 3)]``) beside a grid
    ``traversals`` ``[len(dims), len(values), H, W(, 3)]``; row i sweeps latent ``dims[i]`` over
    ``values`` and is labelled with the dimension's KL (nats) and the seed's posterior mean μ."""
    rows, cols, height, width = traversals.shape[:4]
    fig = new_figure(figsize=(2.4 + 0.75 * cols, 0.9 + 0.75 * rows))
    grid = fig.add_gridspec(1, 2, width_ratios=[1.3, cols], wspace=0.75)
    seed_grid = grid[0].subgridspec(4, 1, hspace=0.35)
    for row, (image, title) in enumerate(zip(seed_pair, ("seed image", "its reconstruction"), strict=True)):
        seed_ax = fig.add_subplot(seed_grid[row + 1])
        _show(seed_ax, image)
        seed_ax.set_title(title, fontsize=8)
        seed_ax.axis("off")
    ax = fig.add_subplot(grid[1])
    shown = _show(ax, mosaic(traversals))
    ax.set_yticks(_tile_centres(rows, height))
    ax.set_yticklabels([f"z{d}  KL {kl[d]:.2f} nats  μ={_signed(seed_mu[d])}" for d in dims], fontsize=8)
    ax.set_xticks(_tile_centres(cols, width))
    ax.set_xticklabels([_signed(v) for v in values], fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlabel("value of the traversed latent z_d (prior σ = 1); other latents at the seed's posterior mean μ")
    ax.set_title("Latent traversals over −3…3, rows ordered by average KL per dimension (nats per image)", fontsize=10)
    _pixel_colorbar(fig, shown, ax, "decoded pixel probability")
    return fig


def plot_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, nll: float) -> Figure:
    """Originals (top row) above their reconstructions (bottom row), ``[n, H, W(, 3)]`` each; ``nll`` (nats per
    image) is the mean NLL of these originals decoded at their posterior means, which the caption says."""
    n, height = originals.shape[0], originals.shape[1]
    fig = new_figure(figsize=(1.2 + 0.8 * n, 2.6))
    ax = fig.subplots()
    shown = _show(ax, mosaic(np.stack([originals, reconstructions])))
    ax.set_yticks(_tile_centres(2, height))
    ax.set_yticklabels(["original", "reconstruction"], fontsize=9)
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.set_title("Reconstructions: decoder mean at the posterior mean z = μ(x)", fontsize=10)
    # Which NLL this is: these images' at z = μ, not summary.json's (training batches, z ~ q(z|x)).
    ax.set_xlabel(
        f"NLL of these {n} images decoded at z = μ: {nll:.1f} nats per image\n"
        "(not the run's tail NLL in summary.json, a mean over training batches with z ~ q(z|x))",
        fontsize=8,
    )
    _pixel_colorbar(fig, shown, ax, "pixel value / probability")
    return fig


def plot_prior_samples(samples: np.ndarray, cols: int) -> Figure:
    """Decoded prior samples ``[n, H, W(, 3)]`` in a grid ``cols`` wide."""
    rows = math.ceil(len(samples) / cols)
    padded = np.ones((rows * cols, *samples.shape[1:]))
    padded[: len(samples)] = samples
    fig = new_figure(figsize=(0.8 * cols + 1.2, 0.8 * rows + 0.6))
    ax = fig.subplots()
    shown = _show(ax, mosaic(padded.reshape(rows, cols, *samples.shape[1:])))
    ax.axis("off")
    ax.set_title(f"{len(samples)} samples from the prior z ~ N(0, I), decoded (mean of p(x|z))", fontsize=10)
    _pixel_colorbar(fig, shown, ax, "decoded pixel probability")
    return fig


def plot_kl_per_dimension(kl: np.ndarray, num_observations: int, budget: str) -> Figure:
    """A bar per latent dimension: its average KL in nats; the total and the run's budget in the title."""
    fig = new_figure(figsize=(max(5.0, 0.5 * len(kl) + 2.0), 3.8))
    ax = fig.subplots()
    bars = ax.bar(np.arange(len(kl)), kl, color="C0")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in kl], fontsize=7, padding=2)
    ax.set_xticks(np.arange(len(kl)))
    ax.set_xticklabels([f"z{d}" for d in range(len(kl))])
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL(q(z_d|x) ‖ N(0, 1)) (nats per image)")
    ax.set_title(
        f"KL per latent dimension, mean over {num_observations} images: total {kl.sum():.2f} nats ({budget})",
        fontsize=10,
    )
    ax.set_ylim(0, max(float(kl.max()), 1e-3) * 1.15)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


# ---------------------------------------------------------------------------- run → files


def _budget(config) -> str:
    """The run's budget in words: ``ε = 20 nats``, ``fixed β = 4``, ``κ = 30 nats``."""
    objective = config.objective_settings
    if objective.constant_multiplier:
        return f"fixed β = {objective.budget_value:g}"
    return f"{objective.budget_symbol} = {objective.budget_value:g} nats"


def _traversal_figure(model, likelihood, observations, mu, kl, shape, steps: int, limit: float) -> Figure:
    """Latent traversals around the first observation's posterior mean, rows by decreasing KL."""
    shown = traversals(model, likelihood, observations[:1], mu[0], kl, shape, steps, limit)
    return plot_traversals(shown.seed_pair, shown.grid, shown.dims, kl, mu[0].numpy(), shown.values)


def _reconstruction_figure(model, likelihood, originals: torch.Tensor, mu: torch.Tensor, shape) -> Figure:
    """``originals`` above the decoder's mean at their posterior means ``mu``, with their mean NLL."""
    shown = reconstructions(model, likelihood, originals, mu, shape)
    return plot_reconstructions(shown.originals, shown.reconstructions, shown.nll)


def _prior_sample_figure(model, likelihood, count: int, seed: int, shape) -> Figure:
    """``count`` decoded samples z ~ N(0, I), drawn with ``seed``."""
    prior = torch.randn(count, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    return plot_prior_samples(as_images(decode_mean(model, likelihood, prior), shape), cols=min(8, count))


def write_figures(
    run_dir: str | Path,
    *,
    seed: int = 0,
    num_kl_observations: int = 1024,
    traversal_steps: int = 11,
    traversal_limit: float = 3.0,
    num_reconstructions: int = 10,
    num_prior_samples: int = 64,
    device: str = "cpu",
    formats: Sequence[str] = ("png",),
    dpi: int = DPI,
) -> list[Path]:
    """Write the figures of a trained run into ``RUN/figures/``, in each of ``formats`` at ``dpi``
    pixels per inch, and return their paths.

    ``num_kl_observations`` random observations give each dimension's average KL (nats); the
    first of them is the traversal seed image and the first ``num_reconstructions`` are the
    reconstructed ones. ``seed`` fixes the observations and the prior samples. Raises
    RunFolderError (from :func:`~constrained_vae.run.loop.load_run`) for a folder that is not a run,
    and FolderInUse while another process (a training run) holds it.
    """
    counts = dict(
        num_kl_observations=num_kl_observations,
        traversal_steps=traversal_steps,
        num_reconstructions=num_reconstructions,
        num_prior_samples=num_prior_samples,
    )
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    check_output(formats, dpi)
    trainee = load_run(run_dir, device=device)
    with locks.hold(run_dir):
        output = dict(formats=tuple(formats), dpi=dpi)
        return _write_figures(trainee, Path(run_dir) / FIGURES_DIR, seed, traversal_limit, output, **counts)


def _write_figures(
    trainee: Trainee,
    out_dir: Path,
    seed: int,
    traversal_limit: float,
    output: dict[str, Any],
    *,
    num_kl_observations: int,
    traversal_steps: int,
    num_reconstructions: int,
    num_prior_samples: int,
) -> list[Path]:
    model, likelihood, config = trainee.model, trainee.likelihood, trainee.config
    out_dir.mkdir(exist_ok=True)
    observations = draw_observations(trainee.dataset, num_kl_observations, seed)
    mu, log_var = encode(model, observations)
    kl = kl_per_dimension(mu, log_var)
    figure = plot_kl_per_dimension(kl, num_kl_observations, _budget(config))
    paths = save_figure(figure, out_dir / "kl_per_dimension", **output)
    shape = image_shape(tuple(trainee.dataset.sample_shape), config.likelihood)
    if shape is None:
        return paths
    figure = _traversal_figure(model, likelihood, observations, mu, kl, shape, traversal_steps, traversal_limit)
    paths += save_figure(figure, out_dir / "latent_traversals", **output)
    originals, means = observations[:num_reconstructions], mu[:num_reconstructions]
    paths += save_figure(
        _reconstruction_figure(model, likelihood, originals, means, shape), out_dir / "reconstructions", **output
    )
    paths += save_figure(
        _prior_sample_figure(model, likelihood, num_prior_samples, seed, shape), out_dir / "prior_samples", **output
    )
    return paths


__all__ = [
    "FIGURES_DIR",
    "plot_kl_per_dimension",
    "plot_prior_samples",
    "plot_reconstructions",
    "plot_traversals",
    "write_figures",
]

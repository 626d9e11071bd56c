"""Encoders, decoders and VAEs.

A VAE returns the posterior parameters, the reparameterised sample and the
decoder output (logits for a Bernoulli likelihood, the mean for a Gaussian one);
it never computes a loss (that is :mod:`constrained_vae.core.likelihoods`' job).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from constrained_vae.errors import ConfigError

ModelKind = Literal["conv", "mlp", "linear", "higgins-mlp"]
MODELS: tuple[str, ...] = ("conv", "mlp", "linear", "higgins-mlp")
HIGGINS_HIDDEN = 1200  # Higgins et al. 2017, Appendix A.2, Table 1 (2D shapes)
IMAGE_SIZE = 64


@dataclass
class VAEOutput:
    """One forward pass: posterior N(mu, exp(log_var)), sample z, decoder output."""

    mu: torch.Tensor  # [n, latent_dim]
    log_var: torch.Tensor  # [n, latent_dim], log σ² of q(z|x)
    z: torch.Tensor  # [n, latent_dim], reparameterised sample
    decoded: torch.Tensor  # [n, *sample_shape]: logits (Bernoulli) or mean (Gaussian)


class VAE(nn.Module):
    """A Gaussian-posterior VAE: ``encoder(x) -> (μ, log σ²)``, ``decoder(z) -> output``."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each ``[n, latent_dim]``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> VAEOutput:
        """Encode ``x``, sample z = μ + σ·noise (``noise`` ~ N(0, I) of shape ``[n, latent_dim]``,
        drawn here from torch's default generator when None), and decode z."""
        mu, log_var = self.encode(x)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + noise * torch.exp(0.5 * log_var)
        return VAEOutput(mu=mu, log_var=log_var, z=z, decoded=self.decode(z))


class _GaussianHead(nn.Module):
    """Splits a ``[n, 2·latent_dim]`` output into (μ, log σ²)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.body(x).chunk(2, dim=1)
        return mu, log_var


def _check_image_input(x: torch.Tensor, channels: int) -> None:
    expected = (channels, IMAGE_SIZE, IMAGE_SIZE)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ConfigError(f"conv VAE expects images of shape [n, {channels}, 64, 64], got {list(x.shape)}")


class ConvEncoder(nn.Module):
    """The β-VAE paper's encoder for 64×64 images.

    Four 4×4 stride-2 convolutions (32, 32, 64, 64 channels, ReLU), a 256-unit
    fully connected layer, and a linear layer to 2·latent_dim (μ, log σ²).
    """

    def __init__(self, channels: int, latent_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.head = _GaussianHead(
            nn.Sequential(
                nn.Conv2d(channels, 32, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(32, 32, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(64, 64, 4, 2, 1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(64 * 4 * 4, 256),
                nn.ReLU(),
                nn.Linear(256, 2 * latent_dim),
            )
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_image_input(x, self.channels)
        return self.head(x)


class ConvDecoder(nn.Sequential):
    """The mirror of :class:`ConvEncoder`: latent → 256 → 64×4×4 → four 4×4 stride-2
    transposed convolutions (64, 32, 32, channels) → ``[n, channels, 64, 64]``."""

    def __init__(self, channels: int, latent_dim: int) -> None:
        super().__init__(
            nn.Linear(latent_dim, 256),
            nn.ReLU(),
            nn.Linear(256, 64 * 4 * 4),
            nn.ReLU(),
            nn.Unflatten(1, (64, 4, 4)),
            nn.ConvTranspose2d(64, 64, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, 2, 1),
        )


def _mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class HigginsEncoder(nn.Module):
    """The β-VAE paper's 2D-shapes encoder: the flattened image → 1200 → 1200 (ReLU) → 2·latent_dim."""

    def __init__(self, channels: int, latent_dim: int) -> None:
        super().__init__()
        self.channels = channels
        size = channels * 64 * 64
        self.head = _GaussianHead(
            nn.Sequential(nn.Flatten(), _mlp([size, HIGGINS_HIDDEN, HIGGINS_HIDDEN, 2 * latent_dim]))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_image_input(x, self.channels)
        return self.head(x)


def higgins_decoder(channels: int, latent_dim: int) -> nn.Sequential:
    """The β-VAE paper's 2D-shapes decoder: latent → 1200 ×3 (tanh) → logits ``[n, channels, 64, 64]``."""
    sizes = [latent_dim, HIGGINS_HIDDEN, HIGGINS_HIDDEN, HIGGINS_HIDDEN, channels * 64 * 64]
    return nn.Sequential(_mlp(sizes, nn.Tanh), nn.Unflatten(1, (channels, 64, 64)))


class _FlatInput(nn.Module):
    """Checks that flat inputs have ``features`` columns, then applies ``body``."""

    def __init__(self, body: nn.Module, features: int) -> None:
        super().__init__()
        self.body = body
        self.features = features

    def forward(self, x: torch.Tensor):
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ConfigError(f"expected flat inputs of shape [n, {self.features}], got {list(x.shape)}")
        return self.body(x)


class LinearEncoder(nn.Module):
    """μ = A x + b; log σ² a learned vector shared by all inputs (the linear VAE's
    optimal posterior variance does not depend on x)."""

    def __init__(self, features: int, latent_dim: int) -> None:
        super().__init__()
        self.mean = _FlatInput(nn.Linear(features, latent_dim), features)
        self.log_var = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.mean(x)
        return mu, self.log_var.expand_as(mu)


def build_vae(kind: ModelKind, sample_shape: tuple[int, ...], latent_dim: int, hidden: int = 256) -> VAE:
    """A VAE for observations of ``sample_shape``.

    ``conv``: the paper's architecture, for ``(channels, 64, 64)`` with 1 or 3 channels;
    ``mlp``: two hidden ReLU layers of ``hidden`` units each way, for ``(features,)``;
    ``linear``: a linear encoder (see :class:`LinearEncoder`) and a linear decoder;
    ``higgins-mlp``: the β-VAE paper's fully connected 2D-shapes model, for ``(channels, 64, 64)``.
    """
    if latent_dim < 1:
        raise ConfigError(f"latent dimension must be at least 1, got {latent_dim}")
    if kind in ("conv", "higgins-mlp"):
        if len(sample_shape) != 3 or sample_shape[0] not in (1, 3) or sample_shape[1:] != (64, 64):
            raise ConfigError(f"{kind} VAE needs images of shape (1 or 3, 64, 64), got {sample_shape}")
        channels = sample_shape[0]
        if kind == "higgins-mlp":
            return VAE(HigginsEncoder(channels, latent_dim), higgins_decoder(channels, latent_dim), latent_dim)
        return VAE(ConvEncoder(channels, latent_dim), ConvDecoder(channels, latent_dim), latent_dim)
    if len(sample_shape) != 1:
        raise ConfigError(f"{kind} VAE needs flat observations (features,), got {sample_shape}")
    features = sample_shape[0]
    if kind == "mlp":
        encoder = _GaussianHead(_FlatInput(_mlp([features, hidden, hidden, 2 * latent_dim]), features))
        return VAE(encoder, _mlp([latent_dim, hidden, hidden, features]), latent_dim)
    if kind == "linear":
        return VAE(LinearEncoder(features, latent_dim), nn.Linear(latent_dim, features), latent_dim)
    raise ConfigError(f"unknown model kind {kind!r}; choose one of {', '.join(MODELS)}")

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

ModelKind = Literal["conv", "dlib-conv", "mlp", "linear", "higgins-mlp"]
DLIB_CONV = "dlib-conv"
MODEL_DESCRIPTIONS: dict[str, str] = {
    "conv": "the β-VAE paper's conv VAE for 64×64 images (four 4×4 stride-2 convs of 32, 32, 64, 64; FC 256)",
    DLIB_CONV: "disentanglement_lib's conv_encoder / deconv_decoder for 64×64 images "
    "(google-research/disentanglement_lib, disentanglement_lib/methods/shared/architectures.py): "
    "as conv but 2×2 kernels in the third and fourth convs, TensorFlow 'same' padding, Glorot-uniform init",
    "mlp": "two hidden ReLU layers of 256 units each way, for flat data",
    "linear": "a linear encoder (input-independent variance) and a linear decoder, for flat data",
    "higgins-mlp": "the β-VAE paper's 2D-shapes MLP for 64×64 images (FC 1200, 1200 / 1200 ×3 tanh)",
}
MODELS: tuple[str, ...] = tuple(MODEL_DESCRIPTIONS)
IMAGE_MODELS: tuple[str, ...] = ("conv", DLIB_CONV, "higgins-mlp")  # for (1 or 3, 64, 64) images
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


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``padding="same"`` along one spatial axis of ``size`` pixels: the zeros padded
    (before, after). The output has ⌈size / stride⌉ pixels; the total padding is
    max((out − 1)·stride + kernel − size, 0), its odd pixel after (right, bottom)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def tf_same_conv(c_in: int, c_out: int, kernel: int, stride: int, size: int) -> nn.Module:
    """``tf.layers.conv2d(..., padding="same")`` on ``size``×``size`` inputs: symmetric padding inside
    the convolution, asymmetric padding as an explicit zero pad before it."""
    before, after = tf_same_padding(size, kernel, stride)
    if before == after:
        return nn.Conv2d(c_in, c_out, kernel, stride, padding=before)
    return nn.Sequential(nn.ZeroPad2d((before, after, before, after)), nn.Conv2d(c_in, c_out, kernel, stride))


class _CropEnd(nn.Module):
    """Keeps the first ``size`` rows and columns of ``[..., H, W]``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.size, : self.size]


def tf_same_deconv(c_in: int, c_out: int, kernel: int, stride: int, size: int) -> nn.Module:
    """``tf.layers.conv2d_transpose(..., padding="same")`` on ``size``×``size`` inputs: the output has
    size·stride pixels. It is the gradient of a "same" convolution of size·stride pixels, so it drops
    that convolution's padding (before, after) from the full transposed output, (size − 1)·stride + kernel."""
    if kernel < stride:
        raise ValueError(f"a 'same' transposed convolution needs kernel ≥ stride, got {kernel} < {stride}")
    before, after = tf_same_padding(size * stride, kernel, stride)
    deconv = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding=before)
    return deconv if before == after else nn.Sequential(deconv, _CropEnd(size * stride))


def _glorot_init(module: nn.Module) -> None:
    """TensorFlow's layer defaults: Glorot-uniform kernels, zero biases (fans include the kernel area)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class DlibConvEncoder(nn.Module):
    """disentanglement_lib's ``conv_encoder`` (``disentanglement_lib/methods/shared/architectures.py``,
    google-research/disentanglement_lib), for 64×64 images.

    Convolutions e1, e2: 4×4, stride 2, 32 channels; e3, e4: 2×2, stride 2, 64 channels; all
    TensorFlow "same" padding and ReLU (64 → 32 → 16 → 8 → 4 pixels). The 4×4×64 features are
    flattened in TensorFlow's (height, width, channel) order into e5, FC 256 with ReLU, and two linear
    heads give the posterior mean and log-variance (``means``, ``log_var``), each ``[n, latent_dim]``.
    """

    def __init__(self, channels: int, latent_dim: int) -> None:
        super().__init__()
        self.channels = channels
        layers: list[nn.Module] = []
        size, c_in = IMAGE_SIZE, channels
        for c_out, kernel in ((32, 4), (32, 4), (64, 2), (64, 2)):  # e1 … e4
            layers += [tf_same_conv(c_in, c_out, kernel, 2, size), nn.ReLU()]
            size, c_in = -(-size // 2), c_out
        self.convs = nn.Sequential(*layers)
        self.e5 = nn.Sequential(nn.Linear(c_in * size * size, 256), nn.ReLU())
        self.means = nn.Linear(256, latent_dim)
        self.log_var = nn.Linear(256, latent_dim)
        _glorot_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_image_input(x, self.channels)
        features = self.convs(x).permute(0, 2, 3, 1).flatten(1)  # tf.layers.flatten of NHWC
        hidden = self.e5(features)
        return self.means(hidden), self.log_var(hidden)


class DlibDeconvDecoder(nn.Module):
    """disentanglement_lib's ``deconv_decoder`` (same file): latent → FC 256 → FC 1024 (ReLU), read as
    4×4×64 in (height, width, channel) order, then four 4×4 stride-2 transposed convolutions with
    TensorFlow "same" padding (64, 32, 32 channels with ReLU, then ``channels`` linear) → Bernoulli
    logits ``[n, channels, 64, 64]``."""

    def __init__(self, channels: int, latent_dim: int) -> None:
        super().__init__()
        self.dense = nn.Sequential(nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 1024), nn.ReLU())
        layers: list[nn.Module] = []
        size, c_in = 4, 64
        for i, c_out in enumerate((64, 32, 32, channels)):  # d3 … d6
            layers.append(tf_same_deconv(c_in, c_out, 4, 2, size))
            if i < 3:
                layers.append(nn.ReLU())
            size, c_in = size * 2, c_out
        self.deconvs = nn.Sequential(*layers)
        _glorot_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        grid = self.dense(z).unflatten(1, (4, 4, 64)).permute(0, 3, 1, 2)  # tf.reshape to NHWC, as NCHW
        return self.deconvs(grid)


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
    ``dlib-conv``: disentanglement_lib's (:class:`DlibConvEncoder`, :class:`DlibDeconvDecoder`), as ``conv``;
    ``mlp``: two hidden ReLU layers of ``hidden`` units each way, for ``(features,)``;
    ``linear``: a linear encoder (see :class:`LinearEncoder`) and a linear decoder;
    ``higgins-mlp``: the β-VAE paper's fully connected 2D-shapes model, for ``(channels, 64, 64)``.
    """
    if latent_dim < 1:
        raise ConfigError(f"latent dimension must be at least 1, got {latent_dim}")
    if kind in IMAGE_MODELS:
        if len(sample_shape) != 3 or sample_shape[0] not in (1, 3) or sample_shape[1:] != (64, 64):
            raise ConfigError(f"{kind} VAE needs images of shape (1 or 3, 64, 64), got {sample_shape}")
        channels = sample_shape[0]
        if kind == "higgins-mlp":
            return VAE(HigginsEncoder(channels, latent_dim), higgins_decoder(channels, latent_dim), latent_dim)
        if kind == DLIB_CONV:
            return VAE(DlibConvEncoder(channels, latent_dim), DlibDeconvDecoder(channels, latent_dim), latent_dim)
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

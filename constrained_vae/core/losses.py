"""Loss terms as pure functions on tensors, in nats.

Conventions (part of the API):

* KL divergences are in nats per sample: summed over latent dimensions, averaged
  over the batch.
* Negative log-likelihoods are in nats per sample: summed over every data
  dimension (pixels × channels, or features), averaged over the batch.

Functions named ``*_per_sample`` return one value per batch element (``[n]``)
so that callers can weight or inspect samples; the plain names return the batch
mean (a scalar).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl_per_dim(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) || N(0, I)) for each sample and latent dimension, in nats.

    ``0.5 · (μ² + σ² − 1 − log σ²)``, elementwise; shape ``[n, latent_dim]``.
    ``σ² − 1`` is computed as ``expm1(log σ²)``: near the prior the naive form
    cancels catastrophically and can even go negative.
    """
    return 0.5 * (mu.pow(2) + torch.expm1(log_var) - log_var)


def gaussian_kl_per_sample(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL to the standard normal prior summed over latent dimensions: ``[n]`` nats."""
    return gaussian_kl_per_dim(mu, log_var).sum(dim=1)


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL to the standard normal prior in nats per sample (sum over dims, batch mean)."""
    return gaussian_kl_per_sample(mu, log_var).mean()


def _sum_over_data_dims(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], -1).sum(dim=1)


def bernoulli_nll_per_sample(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """−log Bernoulli(x | sigmoid(logits)) summed over data dims: ``[n]`` nats.

    ``x`` may hold values in [0, 1] (the cross-entropy is used for grey values).
    """
    return _sum_over_data_dims(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli NLL from logits in nats per sample (sum over data dims, batch mean)."""
    return bernoulli_nll_per_sample(logits, x).mean()


def gaussian_nll_per_sample(mean: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """−log N(x | mean, σ²) summed over data dims: ``[n]`` nats.

    ``log_sigma`` is log σ (the standard deviation), a scalar or a tensor that
    broadcasts against ``x`` (one σ per data dimension, say).
    """
    log_sigma = torch.as_tensor(log_sigma, dtype=x.dtype, device=x.device)
    per_dim = 0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2) + log_sigma + 0.5 * LOG_2PI
    return _sum_over_data_dims(per_dim.expand_as(x))


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL in nats per sample (sum over data dims, batch mean)."""
    return gaussian_nll_per_sample(mean, x, log_sigma).mean()

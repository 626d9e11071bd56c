"""Decoder likelihoods p(x|z): a decoder output and data → negative log-likelihood in nats per
sample (summed over data dimensions; see :mod:`constrained_vae.core.losses`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from constrained_vae.core import losses
from constrained_vae.errors import ConfigError

LIKELIHOODS = ("bernoulli", "gaussian")


class BernoulliLikelihood(nn.Module):
    """p(x|z) = Bernoulli(sigmoid(logits)); data in [0, 1]."""

    def nll_per_sample(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return losses.bernoulli_nll_per_sample(decoded, x)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(decoded)


class GaussianLikelihood(nn.Module):
    """p(x|z) = N(mean, σ² I), σ fixed or learned (one σ for all data dimensions)."""

    def __init__(self, sigma: float = 1.0, learn_sigma: bool = False) -> None:
        super().__init__()
        if not (math.isfinite(sigma) and sigma > 0):
            raise ConfigError(f"Gaussian likelihood σ must be a positive number, got {sigma}")
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> float:
        return float(self.log_sigma.detach().exp())

    def nll_per_sample(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return losses.gaussian_nll_per_sample(decoded, x, self.log_sigma)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        return decoded


def build_likelihood(name: str, sigma: float = 1.0, learn_sigma: bool = False) -> nn.Module:
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(sigma, learn_sigma)
    raise ConfigError(f"unknown likelihood {name!r}; choose {' or '.join(LIKELIHOODS)}")

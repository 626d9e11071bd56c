"""``fixed-beta`` (the β-VAE paper's Eq. 4, Higgins et al. 2017): minimise ``NLL + β·KL``; the multiplier is β.

With λ = β it has the gradient in θ of the constrained objective's Lagrangian
(:mod:`constrained_vae.core.objectives.constrained`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cooper
import torch
from torch import nn

from constrained_vae.core.models import VAE
from constrained_vae.core.objectives.base import (
    ObjectiveSettings,
    Optimization,
    VAEProblem,
    positive_budget,
    setting,
    unconstrained,
)


@dataclass(frozen=True)
class FixedBetaSettings(ObjectiveSettings):
    """β: the weight on KL, in nats of NLL per nat of KL."""

    beta: float | None = setting(positive_budget("β = 0 drops the KL term, and a negative β rewards KL"))

    name = "fixed-beta"
    budget = "beta"
    budget_symbol = "β"
    constant_multiplier = True

    def optimization(self, model: VAE, likelihood: nn.Module, primal: torch.optim.Optimizer) -> Optimization:
        return unconstrained(self, FixedBetaProblem(model, likelihood, self.beta), primal)


class FixedBetaProblem(VAEProblem):
    """min NLL + β·KL, an unconstrained cooper problem."""

    def __init__(self, model: VAE, likelihood: nn.Module, beta: float) -> None:
        super().__init__(model, likelihood)
        self.beta = float(beta)
        self.beta_tensor = self.scalar(self.beta)

    def terms_state(self, nll: torch.Tensor, kl: torch.Tensor) -> cooper.CMPState:
        return cooper.CMPState(loss=nll + self.beta * kl, misc={"nll": nll.detach(), "kl": kl.detach()})

    def report(self) -> tuple[torch.Tensor, None]:
        return self.beta_tensor, None

"""``capacity`` (Burgess et al. 2018, "Understanding disentangling in β-VAE", Section 5): minimise
``NLL + γ·|KL − C(t)|`` with the capacity C rising linearly from 0 to its target ε over
``anneal_steps`` steps (:class:`~constrained_vae.core.schedules.LinearRamp`). Their dSprites
setting: γ = 1000, C up to 25 nats over 100,000 steps. The multiplier is ±γ (the sign of KL − C),
which is no effective β.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cooper
import torch
from torch import nn

from constrained_vae.core.checks import check_positive
from constrained_vae.core.models import VAE
from constrained_vae.core.objectives.annealed import AnnealedSettings
from constrained_vae.core.objectives.base import (
    DefaultContext,
    Optimization,
    VAEProblem,
    setting,
    unconstrained,
)
from constrained_vae.core.schedules import LinearRamp

DEFAULT_GAMMA = 1000.0  # Burgess et al. 2018, dSprites


@dataclass(frozen=True)
class CapacitySettings(AnnealedSettings):
    """ε, ``anneal_steps`` (:class:`AnnealedSettings`) and γ, the weight on |KL − C(t)|."""

    capacity_gamma: float | None = setting(check_positive)

    name = "capacity"
    reports_effective_beta = False

    def with_defaults(self, context: DefaultContext) -> CapacitySettings:
        settings = super().with_defaults(context)
        if settings.capacity_gamma is None:
            settings = dataclasses.replace(settings, capacity_gamma=DEFAULT_GAMMA)
        return settings

    def optimization(self, model: VAE, likelihood: nn.Module, primal: torch.optim.Optimizer) -> Optimization:
        problem = CapacityProblem(model, likelihood, self.epsilon, self.capacity_gamma, self.anneal_steps)
        return unconstrained(self, problem, primal)


class CapacityProblem(VAEProblem):
    """min NLL + γ·|KL − C(t)|, C rising linearly from 0 to ``capacity`` over ``anneal_steps`` steps."""

    def __init__(self, model: VAE, likelihood: nn.Module, capacity: float, gamma: float, anneal_steps: int) -> None:
        super().__init__(model, likelihood)
        self.capacity, self.gamma, self.anneal_steps = float(capacity), float(gamma), int(anneal_steps)
        self.schedule = LinearRamp(self.capacity, self.anneal_steps)
        self.state = {
            "step": torch.zeros((), device=self.device, dtype=torch.long),
            "weight": self.scalar(0.0),
            "target": self.scalar(0.0),
        }

    def target(self, step: torch.Tensor) -> torch.Tensor:
        """C(t) in nats for t steps done."""
        return self.schedule(step, self.dtype)

    def terms_state(self, nll: torch.Tensor, kl: torch.Tensor) -> cooper.CMPState:
        target = self.target(self.state["step"])
        self.state["target"].copy_(target)
        self.state["weight"].copy_(self.gamma * torch.sign(kl.detach() - target))
        self.state["step"].add_(1)
        loss = nll + self.gamma * (kl - target).abs()
        return cooper.CMPState(loss=loss, misc={"nll": nll.detach(), "kl": kl.detach()})

    def report(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.state["weight"].clone(), self.state["target"].clone()

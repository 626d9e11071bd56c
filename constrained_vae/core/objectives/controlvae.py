"""``controlvae`` (Shao et al. 2020, "ControlVAE", ICML, Section 3): ``NLL + β(t)·KL`` with β(t) set
each step by their PI controller on the batch KL, ``β = β_min + K_p/(1 + exp(e)) + I``,
``e = C(t) − KL``, ``I ← I − K_i·e`` (frozen while the unclipped β is below β_min), β clipped at
β_min. Their dSprites settings (paper, and ``Disentangling/`` in their code): K_p = 0.01,
K_i = 0.001, β_min = 1, set point C starting at 0.5 nats and rising by 0.15 every 5,000 steps to its
target (:class:`~constrained_vae.core.schedules.StaircaseRamp`); here the period is scaled so the
target ε is reached after ``anneal_steps``. The multiplier is β(t).
"""

from __future__ import annotations

from dataclasses import dataclass

import cooper
import torch
from torch import nn

from constrained_vae.core.models import VAE
from constrained_vae.core.objectives.annealed import AnnealedSettings
from constrained_vae.core.objectives.base import Optimization, VAEProblem, unconstrained
from constrained_vae.core.schedules import StaircaseRamp

CONTROLVAE_KP = 0.01  # Shao et al. 2020, disentangling
CONTROLVAE_KI = 0.001
CONTROLVAE_BETA_MIN = 1.0
CONTROLVAE_SET_POINT_START = 0.5  # nats
CONTROLVAE_SET_POINT_STEP = 0.15  # nats per period (5,000 steps in the paper)


@dataclass(frozen=True)
class ControlVAESettings(AnnealedSettings):
    """ε and ``anneal_steps`` (:class:`AnnealedSettings`): the set point's target and its climb."""

    name = "controlvae"

    def optimization(self, model: VAE, likelihood: nn.Module, primal: torch.optim.Optimizer) -> Optimization:
        return unconstrained(self, ControlVAEProblem(model, likelihood, self.epsilon, self.anneal_steps), primal)


class ControlVAEProblem(VAEProblem):
    """NLL + β(t)·KL with β(t) from ControlVAE's PI controller on the batch KL (Shao et al. 2020)."""

    def __init__(self, model: VAE, likelihood: nn.Module, target: float, anneal_steps: int) -> None:
        super().__init__(model, likelihood)
        self.target = float(target)
        self.schedule = StaircaseRamp.reaching(
            self.target, CONTROLVAE_SET_POINT_START, CONTROLVAE_SET_POINT_STEP, anneal_steps
        )
        self.state = {
            "step": torch.zeros((), device=self.device, dtype=torch.long),
            "integral": self.scalar(0.0),
            "unclipped": self.scalar(CONTROLVAE_BETA_MIN),  # W(t−1) in their code, 1 at the start
            "beta": self.scalar(CONTROLVAE_BETA_MIN),
            "set_point": self.scalar(min(self.target, CONTROLVAE_SET_POINT_START)),
        }

    @property
    def period(self) -> int:
        """Steps between two rises of the set point."""
        return self.schedule.period

    def set_point(self, step: torch.Tensor) -> torch.Tensor:
        """C(t): 0.5 nats, +0.15 every :attr:`period` steps, capped at the target."""
        return self.schedule(step, self.dtype)

    def controller(self, kl: torch.Tensor) -> torch.Tensor:
        """One PI update from this batch's KL (detached); returns β(t) and updates the state."""
        s = self.state
        set_point = self.set_point(s["step"])
        error = set_point - kl
        proportional = CONTROLVAE_KP / (1.0 + torch.exp(error)) + CONTROLVAE_BETA_MIN
        integral = torch.where(
            s["unclipped"] < CONTROLVAE_BETA_MIN, s["integral"], s["integral"] - CONTROLVAE_KI * error
        )
        unclipped = proportional + integral
        s["integral"].copy_(integral)
        s["unclipped"].copy_(unclipped)
        s["beta"].copy_(torch.clamp(unclipped, min=CONTROLVAE_BETA_MIN))
        s["set_point"].copy_(set_point)
        s["step"].add_(1)
        return s["beta"].clone()

    def terms_state(self, nll: torch.Tensor, kl: torch.Tensor) -> cooper.CMPState:
        beta = self.controller(kl.detach())
        return cooper.CMPState(loss=nll + beta * kl, misc={"nll": nll.detach(), "kl": kl.detach()})

    def report(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.state["beta"].clone(), self.state["set_point"].clone()

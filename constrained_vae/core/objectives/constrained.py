"""``constrained`` (the β-VAE paper's Eq. 3, Higgins et al. 2017): minimise NLL subject to
``KL − ε ≤ 0`` on the batch estimate, with the Lagrangian ``NLL + λ·(KL − ε)``; the multiplier is λ.

At a KKT point λ* = −dNLL/dKL at KL = ε: the effective β of the budget ε.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from constrained_vae.core import dual
from constrained_vae.core.models import VAE
from constrained_vae.core.objectives.base import positive_budget, setting
from constrained_vae.core.objectives.budget import BudgetProblem, BudgetSettings


class KLConstrainedProblem(BudgetProblem):
    """min NLL subject to KL ≤ ε (nats per sample), one inequality constraint."""

    constraint_name = "kl_constraint"

    def __init__(
        self,
        model: VAE | None,
        likelihood: nn.Module | None,
        epsilon: float,
        multiplier_init: float = dual.DEFAULT_MULTIPLIER_INIT,
        *,
        update: dual.DualUpdate | str = dual.DEFAULT_UPDATE,
        dual_lr: float = dual.DEFAULT_LOG_LR,
        ema_decay: float = dual.DEFAULT_EMA,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        update = dual.DualUpdate.parse(update) if isinstance(update, str) else update
        super().__init__(
            model, likelihood, epsilon, multiplier_init, update, dual_lr, ema_decay, device=device, dtype=dtype
        )
        self.epsilon = self.budget

    @property
    def multiplier(self) -> float:
        """The current λ (reads the device)."""
        return self.lagrange_multiplier

    def split(self, nll: torch.Tensor, kl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return nll, kl

    def report(self) -> tuple[torch.Tensor, torch.Tensor]:
        return dual.multiplier_value(self.constraint), self.budget_tensor


@dataclass(frozen=True)
class ConstrainedSettings(BudgetSettings):
    """ε: the KL budget in nats per sample; the multiplier's rule and numbers (``MultiplierSettings``)."""

    epsilon: float | None = setting(positive_budget("a KL budget of 0 nats per sample cannot be met: λ → ∞"))

    name = "constrained"
    budget = "epsilon"
    budget_symbol = "ε"
    bounded_term = "kl"
    multiplier_symbol = "λ"
    problem_type = KLConstrainedProblem

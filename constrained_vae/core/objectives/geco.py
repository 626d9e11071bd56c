"""``geco`` (Rezende & Viola 2018, "Taming VAEs", Section 3): the mirror problem, minimise KL subject
to ``NLL − κ ≤ 0``, Lagrangian ``KL + λ·(NLL − κ)``, with their update: λ multiplicative (``log``)
on the moving average of the violation (α = 0.99), λ₀ = 1. The multiplier reported is the
effective β = 1/λ, and ``--multiplier-init`` is the initial β.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from constrained_vae.core import dual
from constrained_vae.core.checks import check_non_negative
from constrained_vae.core.models import VAE
from constrained_vae.core.objectives.base import setting
from constrained_vae.core.objectives.budget import BudgetProblem, BudgetSettings

GECO_UPDATE = "log" + dual.EMA_SUFFIX  # GECO's own rule: multiplicative, on the moving average


class GECOProblem(BudgetProblem):
    """min KL subject to NLL ≤ κ (Rezende & Viola 2018); reports the effective β = 1/λ.

    ``beta_init`` is the initial β = 1/λ₀ (> 0, as :class:`GECOSettings` checks).
    """

    constraint_name = "nll_constraint"

    def __init__(
        self,
        model: VAE | None,
        likelihood: nn.Module | None,
        kappa: float,
        beta_init: float = dual.DEFAULT_MULTIPLIER_INIT,
        *,
        update: dual.DualUpdate | str = GECO_UPDATE,
        dual_lr: float = dual.DEFAULT_LOG_LR,
        ema_decay: float = dual.DEFAULT_EMA,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        update = dual.DualUpdate.parse(update) if isinstance(update, str) else update
        super().__init__(
            model, likelihood, kappa, 1.0 / beta_init, update, dual_lr, ema_decay, device=device, dtype=dtype
        )
        self.kappa = self.budget

    def split(self, nll: torch.Tensor, kl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return kl, nll

    def report(self) -> tuple[torch.Tensor, None]:
        return 1.0 / dual.multiplier_value(self.constraint), None


@dataclass(frozen=True)
class GECOSettings(BudgetSettings):
    """κ: the NLL budget in nats per sample; the multiplier's rule (``log+ema`` or ``log``) and numbers."""

    kappa: float | None = setting(check_non_negative)

    name = "geco"
    budget = "kappa"
    budget_symbol = "κ"
    bounded_term = "nll"
    multiplier_note = "(1/λ)"
    reports_inverse_multiplier = True
    default_update = GECO_UPDATE
    positive_multiplier = True
    problem_type = GECOProblem

"""One inequality constraint with a learned multiplier: the shape of ``constrained`` and ``geco``.

min ``objective`` subject to ``constrained − budget ≤ 0``, with the Lagrangian
``objective + λ·(constrained − budget)``, λ ≥ 0 a cooper multiplier moved by one of the rules of
:mod:`constrained_vae.core.dual` (``--dual-update``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import cooper
import torch
from torch import nn

from constrained_vae.core import dual
from constrained_vae.core.models import VAE
from constrained_vae.core.objectives.base import (
    DefaultContext,
    ObjectiveSettings,
    Optimization,
    VAEProblem,
)


@dataclass(frozen=True)
class BudgetSettings(dual.MultiplierSettings, ObjectiveSettings):
    """The settings of an objective with one learned multiplier: its budget and the multiplier's settings."""

    learns_multiplier = True
    problem_type: ClassVar[type[BudgetProblem]]  # the problem it builds, from (model, likelihood, budget, λ₀, ...)

    def check(self) -> None:
        self.check_multiplier(self.name)

    def with_defaults(self, context: DefaultContext) -> BudgetSettings:
        return dataclasses.replace(self, **self.multiplier_defaults(context.additive_dual_lr))

    def optimization(self, model: VAE, likelihood: nn.Module, primal: torch.optim.Optimizer) -> Optimization:
        problem = self.problem(model, likelihood)
        dual_optimizer = self.make_dual_optimizer(problem.dual_parameters())
        optimizer = cooper.optim.SimultaneousOptimizer(
            cmp=problem, primal_optimizers=primal, dual_optimizers=dual_optimizer
        )
        return Optimization(self, problem, optimizer)

    def problem(
        self,
        model: VAE | None,
        likelihood: nn.Module | None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> BudgetProblem:
        """The objective's problem (complete settings); ``model`` None makes a model-free one on ``device``."""
        return self.problem_type(
            model,
            likelihood,
            self.budget_value,
            self.multiplier_init,
            update=self.update,
            dual_lr=self.dual_lr,
            ema_decay=self.dual_ema or dual.DEFAULT_EMA,
            device=device,
            dtype=dtype,
        )


class BudgetProblem(VAEProblem):
    """min ``objective`` subject to ``constrained − budget ≤ 0``: one inequality, one multiplier.

    The constrained term and the objective term are the KL and the NLL (``constrained``)
    or the NLL and the KL (``geco``). ``update`` says how λ moves (:mod:`constrained_vae.core.dual`).
    """

    constraint_name: str  # the attribute cooper registers the constraint under: its key in checkpoints

    def __init__(
        self,
        model: VAE | None,
        likelihood: nn.Module | None,
        budget: float,
        multiplier_init: float,
        update: dual.DualUpdate,
        dual_lr: float,
        ema_decay: float,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(model, likelihood, device=device, dtype=dtype)
        self.budget = float(budget)
        self.budget_tensor = self.scalar(self.budget)
        self.update = update
        setattr(self, self.constraint_name, dual.make_constraint(update, multiplier_init, dual_lr, self.budget_tensor))
        self.average = dual.ViolationAverage(ema_decay, self.device, self.dtype) if update.ema else None
        if self.average is not None:
            self.state = {"ema_value": self.average.value, "ema_started": self.average.started}

    @property
    def constraint(self) -> cooper.Constraint:
        return getattr(self, self.constraint_name)

    @property
    def lagrange_multiplier(self) -> float:
        """The current λ of the constraint (reads the device)."""
        return float(dual.multiplier_value(self.constraint))

    def terms_state(self, nll: torch.Tensor, kl: torch.Tensor) -> cooper.CMPState:
        objective, constrained = self.split(nll, kl)
        violation = constrained - self.budget
        strict = self.average.update(violation) if self.average is not None else None
        state = cooper.ConstraintState(violation=violation, strict_violation=strict)
        return cooper.CMPState(
            loss=objective, observed_constraints={self.constraint: state}, misc={"nll": nll.detach(), "kl": kl.detach()}
        )

    def split(self, nll: torch.Tensor, kl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the term minimised, the term constrained)."""
        raise NotImplementedError

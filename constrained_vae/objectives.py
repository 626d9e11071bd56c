"""The fixed-β and the KL-constrained objectives, as cooper problems.

Both report the same named terms each step (:class:`StepTerms`):

* ``fixed-beta`` (the β-VAE paper's Eq. 4): minimise ``NLL + β·KL``; no multiplier,
  the logged multiplier is β.
* ``constrained`` (the paper's Eq. 3, GECO-style): minimise NLL subject to
  ``KL − ε ≤ 0`` on the batch estimate, with the Lagrangian
  ``L(θ, λ) = NLL + λ·(KL − ε)``, λ ≥ 0 a dense cooper multiplier. The primal
  optimizer (Adam) descends L in θ; the dual optimizer (SGD, ``maximize=True``)
  ascends it in λ, whose gradient is ``KL − ε``, and cooper projects λ onto λ ≥ 0.

With λ = β the two objectives have the same gradient in θ. NLL and KL are in
nats per sample (see :mod:`constrained_vae.losses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cooper
import torch
from torch import nn

from constrained_vae import losses
from constrained_vae.models import VAE


@dataclass
class StepTerms:
    """One optimisation step's figures, in nats per sample, as 0-d tensors on the model's device.

    They stay on the device so that a step never waits for the host; the loop reads
    them at logging boundaries.
    """

    nll: torch.Tensor
    kl: torch.Tensor
    loss: torch.Tensor  # NLL + β·KL, or the Lagrangian NLL + λ·(KL − ε) with the λ used this step
    multiplier: torch.Tensor  # λ after the step, or β
    budget: torch.Tensor | None = None  # the KL budget in force this step (ε), None without one


def vae_terms(model: VAE, likelihood: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-mean NLL (one posterior sample) and analytic KL, each a scalar in nats."""
    out = model(x)
    nll = likelihood.nll_per_sample(out.decoded, x).mean()
    kl = losses.gaussian_kl(out.mu, out.log_var)
    return nll, kl


class FixedBetaProblem(cooper.ConstrainedMinimizationProblem):
    """min NLL + β·KL, an unconstrained cooper problem."""

    def __init__(self, model: VAE, likelihood: nn.Module, beta: float) -> None:
        super().__init__()
        self.model = model
        self.likelihood = likelihood
        self.beta = float(beta)

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        nll, kl = vae_terms(self.model, self.likelihood, x)
        return cooper.CMPState(loss=nll + self.beta * kl, misc={"nll": nll.detach(), "kl": kl.detach()})


class KLConstrainedProblem(cooper.ConstrainedMinimizationProblem):
    """min NLL subject to KL ≤ ε (nats per sample), one inequality constraint."""

    def __init__(self, model: VAE, likelihood: nn.Module, epsilon: float, multiplier_init: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.likelihood = likelihood
        self.epsilon = float(epsilon)
        reference = next(model.parameters())  # λ lives on the model's device, in its dtype
        init = torch.tensor([float(multiplier_init)], dtype=reference.dtype)
        multiplier = cooper.multipliers.DenseMultiplier(init=init, device=reference.device, dtype=reference.dtype)
        self.kl_constraint = cooper.Constraint(
            constraint_type=cooper.ConstraintType.INEQUALITY,
            formulation_type=cooper.formulations.Lagrangian,
            multiplier=multiplier,
        )

    @property
    def multiplier(self) -> float:
        """The current λ."""
        return float(self.kl_constraint.multiplier.weight.detach()[0])

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        nll, kl = vae_terms(self.model, self.likelihood, x)
        violation = cooper.ConstraintState(violation=kl - self.epsilon)
        return cooper.CMPState(
            loss=nll,
            observed_constraints={self.kl_constraint: violation},
            misc={"nll": nll.detach(), "kl": kl.detach()},
        )


class Objective:
    """A cooper problem with its optimizer; :meth:`step` does one update on a batch."""

    def __init__(self, problem: FixedBetaProblem | KLConstrainedProblem, optimizer: cooper.optim.CooperOptimizer):
        self.problem = problem
        self.optimizer = optimizer

    @property
    def mode(self) -> str:
        return "constrained" if isinstance(self.problem, KLConstrainedProblem) else "fixed-beta"

    @property
    def multiplier(self) -> float:
        """λ in constrained mode, β in fixed-β mode."""
        if isinstance(self.problem, KLConstrainedProblem):
            return self.problem.multiplier
        return self.problem.beta

    def step(self, x: torch.Tensor) -> StepTerms:
        """One update on the batch ``x``; the terms stay on the device (no host synchronisation)."""
        rollout = self.optimizer.roll(compute_cmp_state_kwargs={"x": x})
        misc = rollout.cmp_state.misc
        if isinstance(self.problem, KLConstrainedProblem):
            multiplier = self.problem.kl_constraint.multiplier.weight.detach()[0].clone()
            budget = torch.tensor(self.problem.epsilon, device=multiplier.device, dtype=multiplier.dtype)
        else:
            multiplier = torch.tensor(self.problem.beta, device=misc["kl"].device, dtype=misc["kl"].dtype)
            budget = None
        return StepTerms(
            nll=misc["nll"],
            kl=misc["kl"],
            loss=rollout.primal_lagrangian_store.lagrangian.detach(),
            multiplier=multiplier,
            budget=budget,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "problem": self.problem.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.problem.load_state_dict(state["problem"])


def build_objective(
    model: VAE,
    likelihood: nn.Module,
    *,
    epsilon: float | None = None,
    beta: float | None = None,
    lr: float = 1e-3,
    dual_lr: float = 1e-2,
    multiplier_init: float = 1.0,
) -> Objective:
    """The constrained objective when ``epsilon`` is given, the fixed-β one when ``beta`` is.

    The primal parameters are the model's and the likelihood's (a learned σ).
    """
    if (epsilon is None) == (beta is None):
        raise ValueError("give exactly one of epsilon or beta")
    params = list(model.parameters()) + list(likelihood.parameters())
    primal = torch.optim.Adam(params, lr=lr)
    if beta is not None:
        problem = FixedBetaProblem(model, likelihood, beta)
        return Objective(problem, cooper.optim.UnconstrainedOptimizer(cmp=problem, primal_optimizers=primal))
    problem = KLConstrainedProblem(model, likelihood, epsilon, multiplier_init)
    dual = torch.optim.SGD(problem.dual_parameters(), lr=dual_lr, maximize=True)
    optimizer = cooper.optim.SimultaneousOptimizer(cmp=problem, primal_optimizers=primal, dual_optimizers=dual)
    return Objective(problem, optimizer)

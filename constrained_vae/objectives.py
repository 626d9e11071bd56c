"""The objectives a run can train, as cooper problems, each reporting the same named terms.

Every objective reports, each step (:class:`StepTerms`), the NLL and KL in nats per
sample, the loss it descended, the **effective β** (the weight on KL per unit of NLL
in that step's gradient) and the KL budget in force, if any:

* ``fixed-beta`` (the β-VAE paper's Eq. 4): minimise ``NLL + β·KL``; the multiplier is β.
* ``constrained`` (the paper's Eq. 3, GECO-style): minimise NLL subject to
  ``KL − ε ≤ 0`` on the batch estimate, with the Lagrangian ``NLL + λ·(KL − ε)``, λ ≥ 0
  a cooper multiplier updated by one of the rules of :mod:`constrained_vae.dual`
  (``--dual-update``). The multiplier is λ.
* ``capacity`` (Burgess et al. 2018, "Understanding disentangling in β-VAE"): minimise
  ``NLL + γ·|KL − C(t)|`` with the capacity C rising linearly from 0 to its target ε
  over ``anneal_steps`` steps. Their dSprites setting: γ = 1000, C up to 25 nats over
  100,000 steps. The multiplier is ±γ (the sign of KL − C).
* ``controlvae`` (Shao et al. 2020, "ControlVAE", ICML): ``NLL + β(t)·KL`` with β(t) set
  each step by their PI controller on the batch KL, ``β = β_min + K_p/(1 + exp(e)) + I``,
  ``e = C(t) − KL``, ``I ← I − K_i·e`` (frozen while the unclipped β is below β_min),
  β clipped at β_min. Their dSprites settings (paper, and ``Disentangling/`` in
  their code): K_p = 0.01, K_i = 0.001, β_min = 1, set point C starting at 0.5 nats and
  rising by 0.15 every 5,000 steps to its target; here the period is scaled so the
  target ε is reached after ``anneal_steps``. The multiplier is β(t).
* ``geco`` (Rezende & Viola 2018, "Taming VAEs"): the mirror problem, minimise KL
  subject to ``NLL − κ ≤ 0``, Lagrangian ``KL + λ·(NLL − κ)``, with their update: λ
  multiplicative (``log``) on the moving average of the violation (α = 0.99), λ_0 = 1.
  The multiplier reported is the effective β = 1/λ.

With λ = β, ``fixed-beta`` and ``constrained`` have the same gradient in θ. NLL and KL
are in nats per sample (see :mod:`constrained_vae.losses`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cooper
import torch
from torch import nn

from constrained_vae import dual, losses
from constrained_vae.config import (
    DEFAULT_CAPACITY_GAMMA,
    DEFAULT_DUAL_EMA,
    DEFAULT_DUAL_KP,
    DEFAULT_DUAL_UPDATE,
    GECO_DUAL_UPDATES,
    OBJECTIVES,
)
from constrained_vae.errors import ConfigError
from constrained_vae.models import VAE
from constrained_vae.optimizers import primal_optimizer

CONTROLVAE_KP = 0.01  # Shao et al. 2020, disentangling
CONTROLVAE_KI = 0.001
CONTROLVAE_BETA_MIN = 1.0
CONTROLVAE_SET_POINT_START = 0.5  # nats
CONTROLVAE_SET_POINT_STEP = 0.15  # nats per period (5,000 steps in the paper)


@dataclass
class StepTerms:
    """One optimisation step's figures, in nats per sample, as 0-d tensors on the model's device.

    They stay on the device so that a step never waits for the host; the loop reads
    them at logging boundaries.
    """

    nll: torch.Tensor
    kl: torch.Tensor
    loss: torch.Tensor  # the loss descended this step (NLL + β·KL, or the Lagrangian with this step's λ)
    multiplier: torch.Tensor  # the effective β after the step: λ, β, β(t), ±γ or 1/λ (GECO)
    budget: torch.Tensor | None = None  # the KL budget in force this step (ε, or C(t)); None without one


def vae_terms(model: VAE, likelihood: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-mean NLL (one posterior sample) and analytic KL, each a scalar in nats."""
    out = model(x)
    nll = likelihood.nll_per_sample(out.decoded, x).mean()
    kl = losses.gaussian_kl(out.mu, out.log_var)
    return nll, kl


class VAEProblem(cooper.ConstrainedMinimizationProblem):
    """A problem on a VAE: its terms, its reported multiplier and budget, its extra state.

    ``state`` holds the tensors (counters, controller memory) that a checkpoint must
    carry beyond cooper's multipliers.
    """

    mode: str

    def __init__(self, model: VAE, likelihood: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.likelihood = likelihood
        reference = next(model.parameters())
        self.device, self.dtype = reference.device, reference.dtype
        self.state: dict[str, torch.Tensor] = {}

    def scalar(self, value: float) -> torch.Tensor:
        return torch.tensor(float(value), device=self.device, dtype=self.dtype)

    def report(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The effective β after the last step, and the KL budget that step used (or None)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"extra": {k: v.clone() for k, v in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for key, value in state.get("extra", {}).items():
            self.state[key].copy_(value)


class FixedBetaProblem(VAEProblem):
    """min NLL + β·KL, an unconstrained cooper problem."""

    mode = "fixed-beta"

    def __init__(self, model: VAE, likelihood: nn.Module, beta: float) -> None:
        super().__init__(model, likelihood)
        self.beta = float(beta)
        self.beta_tensor = self.scalar(self.beta)  # made once: a tensor from a float per step would sync CUDA

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        nll, kl = vae_terms(self.model, self.likelihood, x)
        return cooper.CMPState(loss=nll + self.beta * kl, misc={"nll": nll.detach(), "kl": kl.detach()})

    def report(self) -> tuple[torch.Tensor, None]:
        return self.beta_tensor, None


class BudgetProblem(VAEProblem):
    """min ``objective`` subject to ``constrained − budget ≤ 0``: one inequality, one multiplier.

    The constrained term and the objective term are the KL and the NLL (``constrained``)
    or the NLL and the KL (``geco``). ``update`` says how λ moves (:mod:`constrained_vae.dual`).
    """

    def __init__(
        self,
        model: VAE,
        likelihood: nn.Module,
        budget: float,
        multiplier_init: float,
        update: dual.DualUpdate,
        dual_lr: float,
        ema_decay: float,
    ) -> None:
        super().__init__(model, likelihood)
        self.budget = float(budget)
        self.budget_tensor = self.scalar(self.budget)  # made once (see FixedBetaProblem)
        self.update = update
        # registered with cooper under constraint_name (the key of its multiplier in checkpoints)
        setattr(
            self, self.constraint_name, dual.make_constraint(update, multiplier_init, dual_lr, next(model.parameters()))
        )
        self.average = dual.ViolationAverage(ema_decay, self.device, self.dtype) if update.ema else None
        if self.average is not None:
            self.state = {"ema_value": self.average.value, "ema_started": self.average.started}

    constraint_name: str

    @property
    def constraint(self) -> cooper.Constraint:
        return getattr(self, self.constraint_name)

    @property
    def lagrange_multiplier(self) -> float:
        """The current λ of the constraint."""
        return float(dual.multiplier_value(self.constraint))

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        nll, kl = vae_terms(self.model, self.likelihood, x)
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


class KLConstrainedProblem(BudgetProblem):
    """min NLL subject to KL ≤ ε (nats per sample), one inequality constraint."""

    mode = "constrained"
    constraint_name = "kl_constraint"

    def __init__(
        self,
        model: VAE,
        likelihood: nn.Module,
        epsilon: float,
        multiplier_init: float = 1.0,
        *,
        update: dual.DualUpdate | str = "gradient",
        dual_lr: float = 1e-2,
        ema_decay: float = DEFAULT_DUAL_EMA,
    ) -> None:
        update = dual.DualUpdate.parse(update) if isinstance(update, str) else update
        super().__init__(model, likelihood, epsilon, multiplier_init, update, dual_lr, ema_decay)
        self.epsilon = self.budget

    @property
    def multiplier(self) -> float:
        """The current λ."""
        return self.lagrange_multiplier

    def split(self, nll: torch.Tensor, kl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return nll, kl

    def report(self) -> tuple[torch.Tensor, torch.Tensor]:
        return dual.multiplier_value(self.constraint), self.budget_tensor


class GECOProblem(BudgetProblem):
    """min KL subject to NLL ≤ κ (Rezende & Viola 2018); reports the effective β = 1/λ."""

    mode = "geco"
    constraint_name = "nll_constraint"

    def __init__(
        self,
        model: VAE,
        likelihood: nn.Module,
        kappa: float,
        beta_init: float = 1.0,
        *,
        update: dual.DualUpdate | str = "log+ema",
        dual_lr: float = 1e-2,
        ema_decay: float = DEFAULT_DUAL_EMA,
    ) -> None:
        update = dual.DualUpdate.parse(update) if isinstance(update, str) else update
        if str(update) not in GECO_DUAL_UPDATES:
            raise ConfigError(
                f"geco reports β = 1/λ, which needs λ > 0: use --dual-update {' or '.join(GECO_DUAL_UPDATES)}"
            )
        if not beta_init > 0:
            raise ConfigError(f"geco needs a positive --multiplier-init (the initial β = 1/λ), got {beta_init}")
        super().__init__(model, likelihood, kappa, 1.0 / beta_init, update, dual_lr, ema_decay)
        self.kappa = self.budget

    def split(self, nll: torch.Tensor, kl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return kl, nll

    def report(self) -> tuple[torch.Tensor, None]:
        return 1.0 / dual.multiplier_value(self.constraint), None


class CapacityProblem(VAEProblem):
    """min NLL + γ·|KL − C(t)|, C rising linearly from 0 to ``capacity`` over ``anneal_steps`` steps."""

    mode = "capacity"

    def __init__(self, model: VAE, likelihood: nn.Module, capacity: float, gamma: float, anneal_steps: int) -> None:
        super().__init__(model, likelihood)
        self.capacity, self.gamma, self.anneal_steps = float(capacity), float(gamma), int(anneal_steps)
        self.state = {
            "step": torch.zeros((), device=self.device, dtype=torch.long),
            "weight": self.scalar(0.0),
            "target": self.scalar(0.0),
        }

    def target(self, step: torch.Tensor) -> torch.Tensor:
        """C(t) in nats: ε·min(1, t / anneal_steps) for t steps done."""
        return self.capacity * torch.clamp(step.to(self.dtype) / self.anneal_steps, max=1.0)

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        nll, kl = vae_terms(self.model, self.likelihood, x)
        target = self.target(self.state["step"])
        self.state["target"].copy_(target)
        self.state["weight"].copy_(self.gamma * torch.sign(kl.detach() - target))
        self.state["step"].add_(1)
        loss = nll + self.gamma * (kl - target).abs()
        return cooper.CMPState(loss=loss, misc={"nll": nll.detach(), "kl": kl.detach()})

    def report(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.state["weight"].clone(), self.state["target"].clone()


class ControlVAEProblem(VAEProblem):
    """NLL + β(t)·KL with β(t) from ControlVAE's PI controller on the batch KL (Shao et al. 2020)."""

    mode = "controlvae"

    def __init__(self, model: VAE, likelihood: nn.Module, target: float, anneal_steps: int) -> None:
        super().__init__(model, likelihood)
        self.target = float(target)
        rise = self.target - CONTROLVAE_SET_POINT_START
        self.period = max(1, math.ceil(anneal_steps * CONTROLVAE_SET_POINT_STEP / rise)) if rise > 0 else 1
        self.state = {
            "step": torch.zeros((), device=self.device, dtype=torch.long),
            "integral": self.scalar(0.0),
            "unclipped": self.scalar(CONTROLVAE_BETA_MIN),  # W(t−1) in their code, 1 at the start
            "beta": self.scalar(CONTROLVAE_BETA_MIN),
            "set_point": self.scalar(min(self.target, CONTROLVAE_SET_POINT_START)),
        }

    def set_point(self, step: torch.Tensor) -> torch.Tensor:
        """C(t): 0.5 nats, +0.15 every ``period`` steps, capped at the target."""
        raised = CONTROLVAE_SET_POINT_START + CONTROLVAE_SET_POINT_STEP * torch.div(
            step + 1, self.period, rounding_mode="floor"
        ).to(self.dtype)
        return torch.clamp(raised, max=self.target)

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

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        nll, kl = vae_terms(self.model, self.likelihood, x)
        beta = self.controller(kl.detach())
        return cooper.CMPState(loss=nll + beta * kl, misc={"nll": nll.detach(), "kl": kl.detach()})

    def report(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.state["beta"].clone(), self.state["set_point"].clone()


class Objective:
    """A cooper problem with its optimizer; :meth:`step` does one update on a batch."""

    def __init__(self, problem: VAEProblem, optimizer: cooper.optim.CooperOptimizer):
        self.problem = problem
        self.optimizer = optimizer

    @property
    def mode(self) -> str:
        return self.problem.mode

    @property
    def multiplier(self) -> float:
        """The effective β after the last step (λ in constrained mode, β in fixed-β mode)."""
        return float(self.problem.report()[0])

    def step(self, x: torch.Tensor) -> StepTerms:
        """One update on the batch ``x``; the terms stay on the device (no host synchronisation)."""
        rollout = self.optimizer.roll(compute_cmp_state_kwargs={"x": x})
        misc = rollout.cmp_state.misc
        multiplier, budget = self.problem.report()
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
    objective: str | None = None,
    kappa: float | None = None,
    lr: float = 1e-3,
    optimizer: str | None = None,
    dual_lr: float = 1e-2,
    multiplier_init: float = 1.0,
    dual_update: str = DEFAULT_DUAL_UPDATE,
    dual_kp: float = DEFAULT_DUAL_KP,
    dual_ema: float = DEFAULT_DUAL_EMA,
    capacity_gamma: float = DEFAULT_CAPACITY_GAMMA,
    anneal_steps: int | None = None,
) -> Objective:
    """The objective ``objective`` (by default: constrained when ``epsilon`` is given, fixed-β when ``beta`` is).

    ``epsilon`` is the KL budget or target (constrained, capacity, controlvae), ``beta``
    the fixed β, ``kappa`` GECO's NLL budget. The primal parameters are the model's and
    the likelihood's (a learned σ), descended by ``optimizer`` (Adam when None) at ``lr``.
    """
    if objective is None:
        if (epsilon is None) == (beta is None):
            raise ValueError("give exactly one of epsilon or beta")
        objective = "constrained" if epsilon is not None else "fixed-beta"
    params = list(model.parameters()) + list(likelihood.parameters())
    primal = primal_optimizer(params, optimizer, lr)
    if objective in ("constrained", "geco"):
        update = dual.DualUpdate.parse(dual_update)
        if objective == "constrained":
            problem: VAEProblem = KLConstrainedProblem(
                model, likelihood, epsilon, multiplier_init, update=update, dual_lr=dual_lr, ema_decay=dual_ema
            )
        else:
            problem = GECOProblem(
                model, likelihood, kappa, multiplier_init, update=update, dual_lr=dual_lr, ema_decay=dual_ema
            )
        dual_optimizer = dual.make_dual_optimizer(update, problem.dual_parameters(), dual_lr, dual_kp)
        optimizer = cooper.optim.SimultaneousOptimizer(
            cmp=problem, primal_optimizers=primal, dual_optimizers=dual_optimizer
        )
        return Objective(problem, optimizer)
    if objective == "fixed-beta":
        problem = FixedBetaProblem(model, likelihood, beta)
    elif objective == "capacity":
        problem = CapacityProblem(model, likelihood, epsilon, capacity_gamma, anneal_steps)
    elif objective == "controlvae":
        problem = ControlVAEProblem(model, likelihood, epsilon, anneal_steps)
    else:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return Objective(problem, cooper.optim.UnconstrainedOptimizer(cmp=problem, primal_optimizers=primal))


def objective_from_config(model: VAE, likelihood: nn.Module, config: Any) -> Objective:
    """:func:`build_objective` with a resolved :class:`~constrained_vae.config.RunConfig`'s settings."""
    return build_objective(
        model, likelihood, objective=config.mode, epsilon=config.epsilon, beta=config.beta, kappa=config.kappa,
        lr=config.lr, optimizer=config.optimizer, dual_lr=config.dual_lr, multiplier_init=config.multiplier_init,
        dual_update=config.default_dual_update, dual_kp=config.dual_kp or 0.0,
        dual_ema=config.dual_ema or DEFAULT_DUAL_EMA, capacity_gamma=config.capacity_gamma or DEFAULT_CAPACITY_GAMMA,
        anneal_steps=config.anneal_steps,
    )  # fmt: skip

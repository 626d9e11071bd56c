"""Update rules for a Lagrange multiplier λ ≥ 0 on one inequality constraint ``g ≤ 0``.

The constraint is ``KL − ε ≤ 0`` (nats per sample) in the constrained objective and
``NLL − κ ≤ 0`` in GECO. With the violation ``g_t`` of step t (the dual gradient):

* ``gradient`` — projected SGD ascent: ``λ ← max(0, λ + η·g_t)``.
* ``log`` — multiplicative (mirror ascent on log λ, GECO's rule):
  ``λ ← λ·exp(η·g_t)``. The step is relative to λ, so budgets whose λ differs by
  orders of magnitude move at the same relative speed; λ stays > 0 and never
  reaches 0 exactly (an inactive constraint drives it towards 0 geometrically). λ is
  kept within [1e-6, 1e6] (:data:`LOG_RANGE`), as GECO implementations clamp it, so that a
  large early violation cannot overflow it.
* ``pi`` — a proportional–integral controller on g (νPI, Sohrabi et al. 2024, with
  ν = 0): ``λ ← max(0, λ + η·(g_t + K_P·(g_t − g_{t−1})))``, the first step being plain
  SGD (g_{−1} = g_0). Written here rather than taken from cooper 1.0.1, whose
  ``nuPI`` stores ξ_0 = 0 instead of g_0 and so takes a wrong second step
  (cooper-org/cooper#107, open).
* ``augmented`` — cooper's augmented Lagrangian: the primal step descends
  ``f + (relu(λ + ρ·g)² − λ²)/(2ρ)``, the dual step is projected SGD; ρ is the dual
  learning rate η, as in the method of multipliers (λ ← max(0, λ + ρ·g)).
* ``+ema`` (with any of them; ``ema`` alone is ``gradient+ema``) — GECO's moving
  average: the dual step sees ``m_t = α·m_{t−1} + (1 − α)·g_t`` (m_0 = g_0) instead of
  g_t; the primal step still sees the batch's own g_t.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import cooper
import torch

from constrained_vae.core.checks import check_finite, check_non_negative, check_positive
from constrained_vae.errors import ConfigError

RULES = ("gradient", "log", "pi", "augmented")
EMA_SUFFIX = "+ema"
UPDATES = (*RULES, "ema", *(rule + EMA_SUFFIX for rule in RULES))  # every name :meth:`DualUpdate.parse` takes
DEFAULT_UPDATE = "log"  # every budget of benchmarks/dual_tracking.py met, without oscillation (docs/multipliers.md)
DEFAULT_LOG_LR = 0.01  # the log rules' dual lr: a relative step (log λ per nat of violation), one for every dataset
DEFAULT_MULTIPLIER_INIT = 1.0  # λ₀
DEFAULT_KP = 1.0  # K_P of the pi rule
DEFAULT_EMA = 0.99  # GECO's α


@dataclass(frozen=True)
class DualUpdate:
    """A multiplier update rule and whether the dual step sees the EMA of the violation."""

    rule: str
    ema: bool

    @classmethod
    def parse(cls, text: str) -> DualUpdate:
        """``"pi+ema"`` → DualUpdate("pi", True); ``"ema"`` is ``"gradient+ema"``."""
        if text == "ema":
            return cls("gradient", True)
        rule, ema = (text[: -len(EMA_SUFFIX)], True) if text.endswith(EMA_SUFFIX) else (text, False)
        if rule not in RULES:
            choices = ", ".join(RULES)
            raise ConfigError(f"unknown --dual-update {text!r}; choose one of {choices}, optionally with {EMA_SUFFIX}")
        return cls(rule, ema)

    def __str__(self) -> str:
        return self.rule + (EMA_SUFFIX if self.ema else "")


LOG_RANGE = (1e-6, 1e6)  # the values λ may take under the log rule


class LogMultiplier(cooper.multipliers.Multiplier):
    """λ = exp(w) for a parameter w = log λ, with the dual gradient passed to w unchanged.

    cooper's dual Lagrangian is ``λ·g`` (g detached); its gradient in w is made ``g``
    (not ``λ·g``) by a straight-through value, so SGD ascent on w is ``log λ ← log λ + η·g``,
    i.e. ``λ ← λ·exp(η·g)``.
    """

    expects_constraint_features = False

    def __init__(self, init: float, device: torch.device, dtype: torch.dtype) -> None:
        """``init``: λ₀ > 0 (:meth:`MultiplierSettings.check` refuses any other)."""
        super().__init__()
        self.log_weight = torch.nn.Parameter(torch.tensor([init], device=device, dtype=dtype).log())

    @property
    def weight(self) -> torch.Tensor:
        """λ itself (not the parameter), shape (1,)."""
        return self.log_weight.detach().exp()

    def forward(self) -> torch.Tensor:
        value = self.log_weight.exp().detach()
        return value + (self.log_weight - self.log_weight.detach())

    @torch.no_grad()
    def post_step_(self) -> None:
        """λ = exp(w) > 0 by construction; w is clamped to log :data:`LOG_RANGE`."""
        self.log_weight.clamp_(math.log(LOG_RANGE[0]), math.log(LOG_RANGE[1]))


class PIAscent(torch.optim.Optimizer):
    """νPI with ν = 0 for maximisation: ``p ← p + lr·(e_t + kp·(e_t − e_{t−1}))``, e = p.grad.

    The first step is SGD (e_{−1} = e_0). The previous error is optimizer state, so a
    resumed run continues exactly.
    """

    def __init__(self, params: Any, lr: float, kp: float, maximize: bool = True) -> None:
        """``maximize=False`` descends instead (``p ← p − lr·(…)``); cooper's dual step ascends."""
        super().__init__(params, {"lr": lr, "kp": kp, "maximize": maximize})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                error = param.grad
                state = self.state[param]
                previous = state.get("previous_error", error)
                rate = group["lr"] if group["maximize"] else -group["lr"]
                param.add_(error + group["kp"] * (error - previous), alpha=rate)
                state["previous_error"] = error.clone()


class ViolationAverage(torch.nn.Module):
    """GECO's moving average of the violation, ``m_t = α·m_{t−1} + (1 − α)·g_t``, m_0 = g_0."""

    def __init__(self, decay: float, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.decay = float(decay)
        self.register_buffer("value", torch.zeros((), device=device, dtype=dtype))
        self.register_buffer("started", torch.zeros((), device=device, dtype=torch.bool))

    def update(self, violation: torch.Tensor) -> torch.Tensor:
        """Fold in this step's violation (detached) and return the new average."""
        g = violation.detach()
        average = torch.where(self.started, self.decay * self.value + (1 - self.decay) * g, g)
        self.value.copy_(average)
        self.started.fill_(True)
        return average


class DenseMultiplier(cooper.multipliers.DenseMultiplier):
    """cooper's dense multiplier, projected onto λ ≥ 0 in place.

    cooper 1.0.1 projects with ``weight.data = relu(weight.data)``, a new storage each
    step, which a captured CUDA graph would not follow; ``relu_`` gives the same values
    in the same storage.
    """

    @torch.no_grad()
    def post_step_(self) -> None:
        self.weight.relu_()


def make_constraint(update: DualUpdate, init: float, rate: float, reference: torch.Tensor) -> cooper.Constraint:
    """The cooper inequality constraint with the multiplier and formulation of ``update``.

    ``rate`` is the dual learning rate (also ρ for ``augmented``); λ lives on ``reference``'s
    device, in its dtype.
    """
    device, dtype = reference.device, reference.dtype
    if update.rule == "log":
        multiplier: cooper.multipliers.Multiplier = LogMultiplier(init, device, dtype)
    else:
        start = torch.tensor([float(init)], dtype=dtype)
        multiplier = DenseMultiplier(init=start, device=device, dtype=dtype)
    if update.rule == "augmented":
        penalty = cooper.penalty_coefficients.DensePenaltyCoefficient(
            init=torch.tensor([float(rate)], device=device, dtype=dtype)
        )
        return cooper.Constraint(
            constraint_type=cooper.ConstraintType.INEQUALITY,
            formulation_type=cooper.formulations.AugmentedLagrangian,
            multiplier=multiplier,
            penalty_coefficient=penalty,
        )
    return cooper.Constraint(
        constraint_type=cooper.ConstraintType.INEQUALITY,
        formulation_type=cooper.formulations.Lagrangian,
        multiplier=multiplier,
    )


def make_dual_optimizer(update: DualUpdate, params: Any, rate: float, kp: float) -> torch.optim.Optimizer:
    """The torch optimizer that ascends the dual Lagrangian under ``update``."""
    if update.rule == "pi":
        return PIAscent(params, lr=rate, kp=kp)
    return torch.optim.SGD(params, lr=rate, maximize=True)


def multiplier_value(constraint: cooper.Constraint) -> torch.Tensor:
    """The constraint's current λ as a 0-d tensor on its device (no host read)."""
    return constraint.multiplier.weight.detach()[0].clone()


@dataclass(frozen=True)
class MultiplierSettings:
    """How the multiplier λ of one inequality constraint moves: the settings of an objective that learns one.

    ``dual_update`` names the rule (:data:`UPDATES`; None: the objective's :attr:`default_update`),
    ``dual_lr`` is its rate η (also ρ for ``augmented``), ``multiplier_init`` λ₀, ``dual_kp`` the
    pi rule's K_P and ``dual_ema`` the +ema rules' α. A setting the rule does not use must stay None.
    """

    dual_update: str | None = None
    dual_lr: float | None = None
    multiplier_init: float | None = None
    dual_kp: float | None = None
    dual_ema: float | None = None

    default_update: ClassVar[str] = DEFAULT_UPDATE
    positive_multiplier: ClassVar[bool] = False  # λ must stay > 0 (GECO reports 1/λ): the log rules only

    @property
    def update(self) -> DualUpdate:
        """The rule in force (the default when none is given)."""
        return DualUpdate.parse(self.dual_update or self.default_update)

    def check_multiplier(self, objective: str) -> None:
        """ConfigError for a bad rule, a setting it does not use, or a number out of its range.

        ``objective`` names the objective in messages.
        """
        update = self.update
        if self.dual_kp is not None and update.rule != "pi":
            raise ConfigError(f"--dual-kp does not apply to --dual-update {update} (only pi and pi+ema take a gain)")
        if self.dual_ema is not None and not update.ema:
            raise ConfigError(
                f"--dual-ema does not apply to --dual-update {update} (only the +ema rules average the violation)"
            )
        if self.positive_multiplier and update.rule != "log":
            choices = " or ".join(f"log{suffix}" for suffix in (EMA_SUFFIX, ""))
            raise ConfigError(
                f"--objective {objective} reports β = 1/λ, which needs λ > 0: use --dual-update {choices}"
            )
        if self.dual_lr is not None:
            check_positive("dual_lr", self.dual_lr)
        if self.multiplier_init is not None:
            check_finite("multiplier_init", self.multiplier_init, minimum=-math.inf, maximum=math.inf)
            if update.rule != "log":
                check_non_negative("multiplier_init", self.multiplier_init)
            elif not self.multiplier_init > 0:
                what = "the initial β = 1/λ" if self.positive_multiplier else "log λ"
                raise ConfigError(
                    f"{objective} with --dual-update {update} needs a positive --multiplier-init ({what}), "
                    f"got {self.multiplier_init}"
                )
            low, high = LOG_RANGE
            if update.rule == "log" and not low <= self.multiplier_init <= high:  # the range the rule keeps λ in
                raise ConfigError(
                    f"--multiplier-init must be within [{low:g}, {high:g}] under --dual-update {update} "
                    f"(the range the log rule keeps λ in), got {self.multiplier_init:g}"
                )
        if self.dual_kp is not None:
            check_non_negative("dual_kp", self.dual_kp)
        if self.dual_ema is not None:
            check_non_negative("dual_ema", self.dual_ema)
            if self.dual_ema >= 1:
                raise ConfigError(f"--dual-ema must be below 1, got {self.dual_ema}")

    def multiplier_defaults(self, additive_dual_lr: float) -> dict[str, Any]:
        """The multiplier settings with the rule's defaults filled in: the rule itself, its rate (the log
        rules' :data:`DEFAULT_LOG_LR`, else ``additive_dual_lr``), λ₀, and K_P or α where the rule uses them."""
        update = self.update
        defaults = {
            "dual_update": str(update) if self.dual_update is None else self.dual_update,
            "dual_lr": DEFAULT_LOG_LR if update.rule == "log" else additive_dual_lr,
            "multiplier_init": DEFAULT_MULTIPLIER_INIT,
            "dual_kp": DEFAULT_KP if update.rule == "pi" else None,
            "dual_ema": DEFAULT_EMA if update.ema else None,
        }
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(MultiplierSettings)}
        return {name: defaults[name] if value is None else value for name, value in given.items()}

    def make_constraint(self, reference: torch.Tensor) -> cooper.Constraint:
        """The cooper constraint with this rule's multiplier at λ₀ (complete settings)."""
        return make_constraint(self.update, self.multiplier_init, self.dual_lr, reference)

    def make_dual_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The torch optimizer that ascends the dual Lagrangian under this rule (complete settings)."""
        return make_dual_optimizer(self.update, params, self.dual_lr, self.dual_kp or 0.0)

"""What every objective shares: its settings' shape, its cooper problem's shape, and one step.

An objective is three things, each defined in that objective's own module:

* its **settings** (:class:`ObjectiveSettings`): the budget and the numbers of its update rule,
  their defaults and their validation, and capability flags that say what it needs and reports,
  so that the run settings, the summary and the analysis never branch on its name;
* its **problem** (:class:`VAEProblem`, a cooper ``ConstrainedMinimizationProblem``): the loss of a
  batch, the constraint and multiplier if it has one, and what it reports each step;
* the problem with its cooper optimizer (:class:`Optimization`), whose :meth:`~Optimization.step`
  does one update on a batch and returns its terms (:class:`StepTerms`).

NLL and KL are in nats per sample (see :mod:`constrained_vae.core.losses`). The **effective β**
an objective reports is the weight on KL per unit of NLL in that step's gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import cooper
import torch
from torch import nn

from constrained_vae.core import losses
from constrained_vae.core.checks import check_positive
from constrained_vae.core.models import VAE
from constrained_vae.core.optimizers import primal_optimizer
from constrained_vae.errors import ConfigError

Term = Literal["kl", "nll"]


@dataclass(frozen=True)
class DefaultContext:
    """What an objective's defaults may depend on beyond its own settings.

    ``steps`` is the run's length (the annealed objectives' ``anneal_steps`` default to half of
    it; None where no run is known, e.g. a library user's loop); ``additive_dual_lr`` is the dual
    learning rate of the additive multiplier rules, which scale with the data's NLL (the dataset's
    default; the log rules take a relative rate instead, :data:`~constrained_vae.core.dual.DEFAULT_LOG_LR`).
    """

    steps: int | None = None
    additive_dual_lr: float = 1e-2


@dataclass(frozen=True)
class ObjectiveSettings:
    """The settings of one objective: a frozen dataclass whose fields are the run settings it takes.

    Subclasses set the class attributes below (the objective's capability flags) and may add
    validation (:meth:`check`) and defaults (:meth:`with_defaults`); :meth:`build` makes its
    problem. A setting is None until its default is filled in.
    """

    name: ClassVar[str]  # the objective's name: --objective NAME, the ``mode`` of its run files
    budget: ClassVar[str]  # the field that holds its budget: "epsilon", "beta" or "kappa"
    budget_symbol: ClassVar[str]  # "ε", "β", "κ"
    bounded_term: ClassVar[Term | None] = None  # the term its budget bounds (KL ≤ ε, NLL ≤ κ); None for fixed β
    budget_kind: ClassVar[str] = "constraint"  # what to call the budget in words: "constraint" or "target"
    learns_multiplier: ClassVar[bool] = False  # a dual variable (λ) moved by an update rule
    multiplier_symbol: ClassVar[str] = "β"  # how its reported multiplier is written
    multiplier_note: ClassVar[str] = ""  # what the reported multiplier is, when not plain, e.g. "(1/λ)"
    reports_inverse_multiplier: ClassVar[bool] = False  # the reported multiplier is 1/λ (GECO's β), not λ
    constant_multiplier: ClassVar[bool] = False  # the multiplier never moves (fixed β)
    reports_effective_beta: ClassVar[bool] = True  # False when the multiplier is no effective β (capacity's ±γ)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The run settings this objective takes."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @property
    def budget_value(self) -> float | None:
        return getattr(self, self.budget)

    @property
    def label(self) -> str:
        """``constrained ε=20``, ``fixed-beta β=4``, ``geco κ=30``: the objective and its budget."""
        return f"{self.name} {self.budget_symbol}={self.budget_value:g}"

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line message for a missing or bad setting."""
        if self.budget_value is None:
            raise ConfigError(f"--objective {self.name} needs --{self.budget}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and field.metadata.get("check") is not None:
                field.metadata["check"](field.name, value)
        self.check()

    def check(self) -> None:
        """The objective's own rules beyond each setting's range (none by default)."""

    def with_defaults(self, context: DefaultContext) -> ObjectiveSettings:
        """A copy with every setting left None filled in (validated settings assumed)."""
        return self

    def build(
        self, model: VAE, likelihood: nn.Module, *, optimizer: str | None = None, lr: float = 1e-3
    ) -> Optimization:
        """The objective's problem on ``model`` and ``likelihood`` with its cooper optimizer.

        The primal parameters are the model's and the likelihood's (a learned σ), descended by
        ``optimizer`` (:func:`~constrained_vae.core.optimizers.primal_optimizer`; None is Adam) at
        ``lr``. Settings still None take their defaults (:class:`DefaultContext` of no run).
        """
        settings = self.with_defaults(DefaultContext())
        settings.validate()
        primal = primal_optimizer([*model.parameters(), *likelihood.parameters()], optimizer, lr)
        return settings.optimization(model, likelihood, primal)

    def optimization(self, model: VAE, likelihood: nn.Module, primal: torch.optim.Optimizer) -> Optimization:
        """The problem and its cooper optimizer, for complete settings."""
        raise NotImplementedError


def setting(check: Any = None) -> Any:
    """A settings field, None until filled in, whose value (when given) passes ``check(name, value)``."""
    return dataclasses.field(default=None, metadata={"check": check})


def positive_budget(reason: str) -> Callable[[str, Any], None]:
    """A check that a budget is a finite number above 0; ``reason`` says why 0 and below are refused."""

    def check(name: str, value: Any) -> None:
        try:
            check_positive(name, value)
        except ConfigError as error:
            below = isinstance(value, (int, float)) and value <= 0  # the reason is that of a budget of 0 or below
            raise ConfigError(f"{error} ({reason})" if below else str(error)) from None

    return check


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


# How a model's forward may compute: its name (``--precision``) → torch.autocast's dtype (None: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def vae_terms(
    model: VAE,
    likelihood: nn.Module,
    x: torch.Tensor,
    noise: torch.Tensor | None = None,
    *,
    precision: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-mean NLL (one posterior sample, z = μ + σ·``noise``) and analytic KL, each a scalar in nats.

    ``noise`` is the posterior sample's standard normal draw, ``[n, latent_dim]`` (drawn from torch's
    default generator when None). ``precision`` (e.g. ``torch.bfloat16``): the model's forward runs under
    ``torch.autocast`` in it, so its matrix products and convolutions compute in that dtype; the NLL and
    the KL are computed from its outputs taken back to at least float32.
    """
    with torch.autocast(x.device.type, dtype=precision, enabled=precision is not None):
        out = model(x, noise)
    decoded, mu, log_var = (_at_least_float32(t) for t in (out.decoded, out.mu, out.log_var))
    nll = likelihood.nll_per_sample(decoded, x).mean()
    kl = losses.gaussian_kl(mu, log_var)
    return nll, kl


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() and torch.finfo(tensor.dtype).bits < 32 else tensor


class VAEProblem(cooper.ConstrainedMinimizationProblem):
    """A problem on a VAE's terms: its loss, its reported multiplier and budget, its extra state.

    The problem sees a batch only through its NLL and KL (:meth:`terms_state`), so ``model`` may be
    None: then the problem serves any model whose terms it is handed (:class:`~constrained_vae.core.budget.KLBudget`),
    and ``device`` and ``dtype`` say where its tensors live (else the model's). ``state`` holds the
    tensors (counters, controller memory) that a checkpoint must carry beyond cooper's multipliers.
    """

    def __init__(
        self,
        model: VAE | None,
        likelihood: nn.Module | None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.likelihood = likelihood
        if model is not None:
            reference = next(model.parameters())
            device, dtype = reference.device, reference.dtype
        self.device = torch.device("cpu" if device is None else device)
        self.dtype = torch.get_default_dtype() if dtype is None else dtype
        self.state: dict[str, torch.Tensor] = {}

    def compute_cmp_state(
        self,
        x: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        *,
        nll: torch.Tensor | None = None,
        kl: torch.Tensor | None = None,
    ) -> cooper.CMPState:
        """The problem's state on the batch ``x`` through its model (see :func:`vae_terms` for ``noise``),
        or on a batch's own ``nll`` and ``kl`` (0-d tensors, nats per sample, with their graph): the
        form a cooper ``roll(compute_cmp_state_kwargs={"nll": ..., "kl": ...})`` of a model-free problem takes."""
        if x is None:
            if nll is None or kl is None:
                raise TypeError("compute_cmp_state needs a batch x, or both nll= and kl=")
            return self.terms_state(nll, kl)
        if self.model is None or self.likelihood is None:
            raise TypeError("this problem has no model: hand it a batch's terms, compute_cmp_state(nll=..., kl=...)")
        return self.terms_state(*vae_terms(self.model, self.likelihood, x, noise))

    def terms_state(self, nll: torch.Tensor, kl: torch.Tensor) -> cooper.CMPState:
        """The problem's state for a batch's NLL and KL (0-d tensors, nats per sample, with their graph).

        Called once per step: objectives with a schedule or a controller advance it here.
        """
        raise NotImplementedError

    def scalar(self, value: float) -> torch.Tensor:
        """A 0-d tensor on the model's device, made once (a tensor from a float per step would sync CUDA)."""
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


@dataclass
class Lagrangians:
    """One step's Lagrangians, before their backward: the primal one (for the model's gradient)
    and the dual one (for the multiplier's; None without a multiplier)."""

    state: cooper.CMPState
    primal: cooper.LagrangianStore
    dual: cooper.LagrangianStore | None

    def backward(self) -> None:
        self.primal.backward()
        if self.dual is not None:
            self.dual.backward()


class Optimization:
    """A cooper problem with its optimizer; :meth:`step` does one update on a batch.

    A step is :meth:`zero_grad`, the batch's terms, :meth:`lagrangians`, their backward and
    :meth:`update`, in the order of cooper's ``SimultaneousOptimizer.roll``; a bank of runs
    (:mod:`constrained_vae.run.bank`) calls these parts itself, with one backward for all its
    members. ``settings`` are the objective's settings that built it (:attr:`ObjectiveSettings.name`
    names it).
    """

    def __init__(
        self, settings: ObjectiveSettings, problem: VAEProblem, optimizer: cooper.optim.CooperOptimizer
    ) -> None:
        self.settings = settings
        self.problem = problem
        self.optimizer = optimizer
        self.constrained = isinstance(optimizer, cooper.optim.ConstrainedOptimizer)
        self.precision: torch.dtype | None = None  # the model's forward under autocast in this dtype (vae_terms)

    @property
    def multiplier(self) -> float:
        """The effective β after the last step (λ in constrained mode, β in fixed-β mode); reads the device."""
        return float(self.problem.report()[0])

    def zero_grad(self) -> None:
        """Clear the gradients of the model, the likelihood and the multiplier."""
        self.optimizer.zero_grad()

    def lagrangians(self, nll: torch.Tensor, kl: torch.Tensor) -> Lagrangians:
        """The Lagrangians of a batch's NLL and KL (0-d tensors, nats per sample, with their graph)."""
        state = self.problem.terms_state(nll, kl)
        primal = state.compute_primal_lagrangian()
        return Lagrangians(state, primal, state.compute_dual_lagrangian() if self.constrained else None)

    def update(self) -> None:
        """The primal step, then the multiplier's (projected to its range), on the gradients in place.

        A bank of runs (:mod:`constrained_vae.run.bank`) takes these steps with one optimizer for all
        its members' parameters (:attr:`primal_optimizer`, :attr:`dual_optimizers`) and then
        :meth:`project_multipliers`.
        """
        self.optimizer.primal_step()
        if self.constrained:
            self.optimizer.dual_step()

    @property
    def primal_optimizer(self) -> torch.optim.Optimizer:
        """The torch optimizer of the model's (and the likelihood's) parameters."""
        (optimizer,) = self.optimizer.primal_optimizers
        return optimizer

    @property
    def dual_optimizers(self) -> list[torch.optim.Optimizer]:
        """The torch optimizers of the multiplier (none without one)."""
        return list(self.optimizer.dual_optimizers) if self.constrained else []

    def project_multipliers(self) -> None:
        """Bring each multiplier back to its range after its optimizer's step (the end of cooper's dual step)."""
        for multiplier in self.problem.multipliers():
            multiplier.post_step_()

    def terms(self, lagrangians: Lagrangians) -> StepTerms:
        """The step's terms, after :meth:`update` (the multiplier is the one the step left)."""
        misc = lagrangians.state.misc
        return self.step_terms(misc["nll"], misc["kl"], lagrangians.primal.lagrangian.detach())

    def step_terms(self, nll: torch.Tensor, kl: torch.Tensor, loss: torch.Tensor) -> StepTerms:
        """A step's terms from its detached NLL, KL and loss, after :meth:`update`."""
        multiplier, budget = self.problem.report()
        return StepTerms(nll=nll, kl=kl, loss=loss, multiplier=multiplier, budget=budget)

    def step(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> StepTerms:
        """One update on the batch ``x`` (posterior noise as in :func:`vae_terms`); the terms stay on
        the device (no host synchronisation)."""
        self.zero_grad()
        terms = vae_terms(self.problem.model, self.problem.likelihood, x, noise, precision=self.precision)
        lagrangians = self.lagrangians(*terms)
        lagrangians.backward()
        self.update()
        return self.terms(lagrangians)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "problem": self.problem.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        coefficients = list(self.problem.penalty_coefficients())
        places = [(coefficient.value.device, coefficient.value.dtype) for coefficient in coefficients]
        self.problem.load_state_dict(state["problem"])
        for coefficient, (device, dtype) in zip(coefficients, places, strict=True):
            coefficient.value = coefficient.value.to(device, dtype)  # cooper keeps the loaded tensor where it was read


def unconstrained(settings: ObjectiveSettings, problem: VAEProblem, primal: torch.optim.Optimizer) -> Optimization:
    """An objective without a multiplier: cooper's unconstrained optimizer on ``problem``."""
    optimizer = cooper.optim.UnconstrainedOptimizer(cmp=problem, primal_optimizers=primal)
    return Optimization(settings, problem, optimizer)

"""A KL budget for any model and training loop: the constrained objective's multiplier, on its own.

min NLL subject to KL ≤ ε (nats per sample) with the Lagrangian ``NLL + λ·(KL − ε)``, λ ≥ 0 moved
by one of the rules of :mod:`constrained_vae.core.dual`. The caller's model, data and optimizer
stay the caller's; :class:`KLBudget` only turns a batch's NLL and KL into the Lagrangian to
back-propagate and moves λ::

    budget = KLBudget(epsilon=2.0)
    loss = budget.lagrangian(nll, kl)   # NLL + λ·(KL − ε): the model's gradient
    opt.zero_grad(); loss.backward(); opt.step()
    budget.step()                       # λ's move for this batch
    budget.multiplier                   # λ, the effective β (0-d tensor)

It is the problem and the update of ``train()``'s constrained objective
(:class:`~constrained_vae.core.objectives.ConstrainedSettings`,
:class:`~constrained_vae.core.objectives.Optimization`), built without a model.
"""

from __future__ import annotations

from typing import Any

import cooper
import torch

from constrained_vae.core.objectives.base import DefaultContext, Lagrangians, Optimization
from constrained_vae.core.objectives.constrained import ConstrainedSettings, KLConstrainedProblem
from constrained_vae.errors import ConfigError

# run.py's flags → KLBudget's arguments, for messages
_ARGUMENTS = {
    "--dual-update": "update",
    "--dual-lr": "lr",
    "--multiplier-init": "multiplier_init",
    "--dual-kp": "kp",
    "--dual-ema": "ema",
    "--epsilon": "epsilon",
}


class KLBudget:
    """A KL budget of ``epsilon`` nats per sample with a learned multiplier λ ≥ 0.

    Args:
        epsilon: ε, the budget on the batch-mean KL in nats per sample (sum over latent
            dimensions, mean over the batch). Must be > 0.
        update: the multiplier's rule: ``log`` (the default), ``gradient``, ``pi``,
            ``augmented``, each optionally ``+ema`` (:mod:`constrained_vae.core.dual`).
        lr: the rule's rate η (``log``: log λ per nat of violation, default 0.01; the additive
            rules: λ per nat, default 0.01, which suits NLLs of tens to hundreds of nats).
        multiplier_init: λ₀ (default 1).
        kp: the ``pi`` rule's gain K_P (default 1).
        ema: the ``+ema`` rules' α (default 0.99).
        device: where λ lives; by default that of the first terms handed to
            :meth:`lagrangian` (or of a loaded state).
        dtype: λ's dtype; by default that of the first terms handed to :meth:`lagrangian`
            (or of a loaded state).

    The numbers are checked as ``run.py``'s flags are: a bad one is a
    :class:`~constrained_vae.errors.ConfigError` naming it. Nothing here reads the device
    (no host synchronisation): :attr:`multiplier` is a tensor.
    """

    def __init__(
        self,
        epsilon: float,
        *,
        update: str | None = None,
        lr: float | None = None,
        multiplier_init: float | None = None,
        kp: float | None = None,
        ema: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        settings = ConstrainedSettings(
            epsilon=epsilon, dual_update=update, dual_lr=lr, multiplier_init=multiplier_init, dual_kp=kp, dual_ema=ema
        )
        try:
            settings.validate()
        except ConfigError as error:  # name the arguments of this call, not run.py's flags
            message = str(error)
            for flag, argument in _ARGUMENTS.items():
                message = message.replace(flag, argument)
            raise ConfigError(message) from None
        self.settings: ConstrainedSettings = settings.with_defaults(DefaultContext())
        self._optimization: Optimization | None = None
        self._pending: list[Lagrangians] = []
        if device is not None or dtype is not None:
            self._build(torch.device("cpu" if device is None else device), dtype or torch.get_default_dtype())

    def _build(self, device: torch.device, dtype: torch.dtype) -> Optimization:
        problem = self.settings.problem(None, None, device=device, dtype=dtype)
        dual_optimizer = self.settings.make_dual_optimizer(problem.dual_parameters())
        optimizer = cooper.optim.SimultaneousOptimizer(
            cmp=problem, primal_optimizers=[], dual_optimizers=dual_optimizer
        )
        self._optimization = Optimization(self.settings, problem, optimizer)
        return self._optimization

    def _built_for(self, terms: torch.Tensor) -> Optimization:
        if self._optimization is None:
            return self._build(terms.device, terms.dtype if terms.is_floating_point() else torch.get_default_dtype())
        if terms.device != self._optimization.problem.device:
            raise ValueError(
                f"the KL budget's multiplier is on {self._optimization.problem.device}, the terms on {terms.device}: "
                "make the KLBudget with device=... (or load its state) where the model runs"
            )
        return self._optimization

    @property
    def epsilon(self) -> float:
        """ε, nats per sample."""
        return float(self.settings.epsilon)

    @property
    def update(self) -> str:
        """The multiplier's rule, e.g. ``log`` or ``pi+ema``."""
        return str(self.settings.update)

    @property
    def problem(self) -> KLConstrainedProblem:
        """The cooper problem (min NLL s.t. KL ≤ ε) for those who drive cooper themselves: its
        ``compute_cmp_state(nll=..., kl=...)`` takes a batch's terms; pair it with :attr:`dual_optimizer`
        in a ``cooper.optim.SimultaneousOptimizer``. Made on the default device if not yet made."""
        return (self._optimization or self._build(torch.device("cpu"), torch.get_default_dtype())).problem

    @property
    def dual_optimizer(self) -> torch.optim.Optimizer:
        """The torch optimizer (``maximize=True``) that moves λ under this rule."""
        self.problem  # noqa: B018 (made on first use)
        assert self._optimization is not None
        return self._optimization.optimizer.dual_optimizers[0]

    @property
    def constraint(self) -> cooper.Constraint:
        """The cooper constraint ``KL − ε ≤ 0`` with its multiplier."""
        return self.problem.constraint

    @property
    def multiplier(self) -> torch.Tensor:
        """λ after the last :meth:`step`: the effective β (a 0-d tensor on λ's device)."""
        if self._optimization is None:
            return torch.tensor(float(self.settings.multiplier_init))
        return self._optimization.problem.report()[0]

    def lagrangian(self, nll: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
        """``NLL + λ·(KL − ε)`` (``augmented``: its augmented form) for a batch's NLL and KL.

        Both are 0-d tensors in nats per sample, with their graph; the result carries the model's
        gradient (λ held fixed). The batch's violation ``KL − ε`` is kept for :meth:`step`; several
        calls before one step (gradient accumulation) move λ by their mean violation.
        """
        if nll.dim() != 0 or kl.dim() != 0:
            raise ValueError(
                f"lagrangian takes the batch means: 0-d NLL and KL in nats per sample, got shapes "
                f"{tuple(nll.shape)} and {tuple(kl.shape)} (sum over data and latent dimensions, mean over the batch)"
            )
        optimization = self._built_for(kl)
        lagrangians = optimization.lagrangians(nll, kl.to(optimization.problem.dtype))
        self._pending.append(lagrangians)
        return lagrangians.primal.lagrangian

    def step(self) -> None:
        """Move λ by the violation of the batches since the last step (a no-op when there were none)."""
        if not self._pending:
            return
        assert self._optimization is not None
        pending, self._pending = self._pending, []
        self._optimization.optimizer.dual_optimizers[0].zero_grad()
        dual_lagrangian = sum(lagrangians.dual.lagrangian for lagrangians in pending if lagrangians.dual is not None)
        (dual_lagrangian / len(pending)).backward()
        self._optimization.update()

    def state_dict(self) -> dict[str, Any]:
        """λ, the dual optimizer's and the rule's state (tensors only: ``torch.load(weights_only=True)`` reads it)."""
        optimization = self._optimization or self._build(torch.device("cpu"), torch.get_default_dtype())
        return {"settings": _settings_record(self.settings), **optimization.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (with the same settings; λ stays on this budget's device, or the
        saved one's when not yet made)."""
        saved = state.get("settings")
        if saved is not None and saved != _settings_record(self.settings):
            raise ValueError(f"this state is of another KL budget: {saved}, not {_settings_record(self.settings)}")
        if self._optimization is None:
            multiplier = next(iter(state["problem"]["multipliers"].values()))
            weight = next(iter(multiplier.values())) if isinstance(multiplier, dict) else multiplier
            self._build(weight.device, weight.dtype)
        assert self._optimization is not None
        self._pending = []
        self._optimization.load_state_dict(state)

    def __repr__(self) -> str:
        return f"KLBudget(epsilon={self.epsilon:g}, update={self.update!r}, lr={self.settings.dual_lr:g})"


def _settings_record(settings: ConstrainedSettings) -> dict[str, Any]:
    return {
        "epsilon": settings.epsilon,
        "update": str(settings.update),
        "lr": settings.dual_lr,
        "multiplier_init": settings.multiplier_init,
        "kp": settings.dual_kp,
        "ema": settings.dual_ema,
    }

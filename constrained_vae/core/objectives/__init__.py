"""The objectives a run can train, one module each, and the table that names them.

=================  ==========================================================  ==============
name               problem                                                     multiplier
=================  ==========================================================  ==============
``constrained``    min NLL s.t. KL ≤ ε (the β-VAE paper's Eq. 3)               λ
``fixed-beta``     min NLL + β·KL (the paper's Eq. 4)                          β
``capacity``       min NLL + γ·|KL − C(t)|, C rising to ε (Burgess et al.)     ±γ
``controlvae``     NLL + β(t)·KL, β(t) from a PI controller (Shao et al.)      β(t)
``geco``           min KL s.t. NLL ≤ κ (Rezende & Viola)                       1/λ
=================  ==========================================================  ==============

Each reports, every step (:class:`StepTerms`), the NLL and KL in nats per sample, the loss it
descended, its effective β and the KL budget in force. With λ = β, ``fixed-beta`` and
``constrained`` have the same gradient in θ.
"""

from __future__ import annotations

from typing import Any

from constrained_vae.core.objectives.base import (
    PRECISIONS,
    DefaultContext,
    ObjectiveSettings,
    Optimization,
    StepTerms,
    VAEProblem,
    vae_terms,
)
from constrained_vae.core.objectives.budget import BudgetProblem, BudgetSettings
from constrained_vae.core.objectives.capacity import CapacityProblem, CapacitySettings
from constrained_vae.core.objectives.constrained import ConstrainedSettings, KLConstrainedProblem
from constrained_vae.core.objectives.controlvae import ControlVAEProblem, ControlVAESettings
from constrained_vae.core.objectives.fixed_beta import FixedBetaProblem, FixedBetaSettings
from constrained_vae.core.objectives.geco import GECOProblem, GECOSettings
from constrained_vae.errors import ConfigError

OBJECTIVES: dict[str, type[ObjectiveSettings]] = {
    settings.name: settings
    for settings in (ConstrainedSettings, FixedBetaSettings, CapacitySettings, ControlVAESettings, GECOSettings)
}
# Every run setting that belongs to some objective (the others are the run's: data, model, optimiser, ...).
OBJECTIVE_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(f for s in OBJECTIVES.values() for f in s.field_names()))
BUDGET_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(s.budget for s in OBJECTIVES.values()))


def objective_name(objective: str | None, *, epsilon: float | None, beta: float | None) -> str:
    """``objective`` when given, else ``constrained`` with an ε (or with neither), ``fixed-beta`` with a β."""
    if objective is not None:
        return objective
    return "constrained" if epsilon is not None or beta is None else "fixed-beta"


def objective_settings(objective: str | None = None, **values: Any) -> ObjectiveSettings:
    """The settings of ``objective`` (by default: constrained with ``epsilon``, fixed-β with ``beta``)
    from run settings ``values`` (None for those not given). A setting the objective does not take,
    or an unknown objective, is a :class:`ConfigError` naming the flag."""
    unknown = set(values) - set(OBJECTIVE_FIELDS)
    if unknown:
        raise ConfigError(f"no objective takes {', '.join(sorted(unknown))}")
    name = objective_name(objective, epsilon=values.get("epsilon"), beta=values.get("beta"))
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    settings_type = OBJECTIVES[name]
    takes = settings_type.field_names()
    for field in BUDGET_FIELDS:  # the budgets first, in this order: the one it needs, or one it does not take
        if field == settings_type.budget and values.get(field) is None:
            raise ConfigError(f"--objective {name} needs --{field}")
        if field != settings_type.budget and values.get(field) is not None:
            raise ConfigError(f"--{field} does not apply to --objective {name} (it takes --{settings_type.budget})")
    for field, value in values.items():
        if value is not None and field not in takes:
            raise ConfigError(f"--{field.replace('_', '-')} does not apply to --objective {name}")
    return settings_type(**{field: values.get(field) for field in takes})


__all__ = [
    "BUDGET_FIELDS",
    "OBJECTIVES",
    "OBJECTIVE_FIELDS",
    "PRECISIONS",
    "BudgetProblem",
    "BudgetSettings",
    "CapacityProblem",
    "CapacitySettings",
    "ConstrainedSettings",
    "ControlVAEProblem",
    "ControlVAESettings",
    "DefaultContext",
    "FixedBetaProblem",
    "FixedBetaSettings",
    "GECOProblem",
    "GECOSettings",
    "KLConstrainedProblem",
    "ObjectiveSettings",
    "Optimization",
    "StepTerms",
    "VAEProblem",
    "objective_name",
    "objective_settings",
    "vae_terms",
]

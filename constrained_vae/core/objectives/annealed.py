"""What the annealed baselines share: a KL target ε that their schedule reaches after ``anneal_steps``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from constrained_vae.core.checks import check_positive_int
from constrained_vae.core.objectives.base import DefaultContext, ObjectiveSettings, positive_budget, setting
from constrained_vae.errors import ConfigError


@dataclass(frozen=True)
class AnnealedSettings(ObjectiveSettings):
    """ε: the KL target in nats per sample; ``anneal_steps``: the steps its schedule takes to reach it
    (default: half of the run's steps)."""

    epsilon: float | None = setting(positive_budget("a KL target of 0 nats per sample collapses every latent"))
    anneal_steps: int | None = setting(check_positive_int)

    budget = "epsilon"
    budget_symbol = "ε"
    bounded_term = "kl"
    budget_kind = "target"

    def with_defaults(self, context: DefaultContext) -> AnnealedSettings:
        if self.anneal_steps is not None:
            return self
        if context.steps is None:
            raise ConfigError(f"--objective {self.name} needs --anneal-steps when there is no run length to halve")
        return dataclasses.replace(self, anneal_steps=max(1, context.steps // 2))

"""Budgets that change during training, as objects: C(t) of a step count t (a 0-d int64 tensor of
steps done), computed on its device without reading it back.

* :class:`LinearRamp` — capacity's C(t) = target · min(1, t / steps) (Burgess et al. 2018, Section 5);
* :class:`StaircaseRamp` — ControlVAE's set point: ``start`` nats, raised by ``rise`` every
  ``period`` steps, capped at the target (Shao et al. 2020, Section 4; ``Disentangling/`` in their code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LinearRamp:
    """C(t) = ``target`` · min(1, t / ``steps``) nats: 0 at the start, the target after ``steps`` steps."""

    target: float
    steps: int

    def __call__(self, step: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.target * torch.clamp(step.to(dtype) / self.steps, max=1.0)


@dataclass(frozen=True)
class StaircaseRamp:
    """C(t) = min(``target``, ``start`` + ``rise`` · ⌊(t + 1) / ``period``⌋) nats."""

    target: float
    start: float
    rise: float
    period: int

    @classmethod
    def reaching(cls, target: float, start: float, rise: float, steps: int) -> StaircaseRamp:
        """The staircase of steps of ``rise`` from ``start`` whose period makes it reach ``target``
        after ``steps`` steps (period 1 when the target is not above the start)."""
        climb = target - start
        period = max(1, math.ceil(steps * rise / climb)) if climb > 0 else 1
        return cls(target, start, rise, period)

    def __call__(self, step: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        raised = self.start + self.rise * torch.div(step + 1, self.period, rounding_mode="floor").to(dtype)
        return torch.clamp(raised, max=self.target)

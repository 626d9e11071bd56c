"""The steps since the last row of ``metrics.csv``, summed on the device: a step never waits for the host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from constrained_vae.core.objectives import StepTerms

COLUMNS = ("nll", "kl", "loss", "multiplier")  # a window row, in this order


@dataclass
class WindowReading:
    """A log window read to the host: mean NLL, KL and loss (nats per sample) over its ``steps`` steps,
    the last step's multiplier and budget, and ``finite_steps``, the steps before the first whose terms
    were not all finite (all of them if none)."""

    nll: float
    kl: float
    loss: float
    finite_steps: int
    steps: int
    multiplier: float
    budget: float | None

    @property
    def finite(self) -> bool:
        return self.finite_steps == self.steps

    def row(self, step: int, seconds: float) -> dict[str, Any]:
        """A row of ``metrics.csv``."""
        budget = "" if self.budget is None else self.budget
        return dict(
            step=step,
            nll=self.nll,
            kl=self.kl,
            loss=self.loss,
            multiplier=self.multiplier,
            epsilon=budget,
            seconds=round(seconds, 3),
        )


@dataclass
class LogWindow:
    """The per-step terms since the last logged row, kept on the device.

    Row k of ``rows`` (``[capacity, 4]``, the terms' dtype) holds the window's k-th step: NLL, KL and
    loss (nats per sample) and the multiplier (:data:`COLUMNS`); adding a step is one device copy.
    :meth:`read` sums in step order in float64, as a host loop over Python floats would, and finds the
    first step whose terms were not all finite.
    """

    rows: torch.Tensor
    steps: int = 0  # rows in use

    @classmethod
    def empty(cls, device: torch.device, dtype: torch.dtype, capacity: int) -> LogWindow:
        return cls(torch.empty(capacity, len(COLUMNS), device=device, dtype=dtype))

    def add(self, terms: StepTerms) -> None:
        """Store one step's terms in the next row (queued on their device; nothing is read back)."""
        if self.steps == self.rows.shape[0]:
            self.rows = torch.cat((self.rows, torch.empty_like(self.rows)))
        torch.stack((terms.nll, terms.kl, terms.loss, terms.multiplier), out=self.rows[self.steps])
        self.steps += 1

    def reset(self) -> None:
        """Start a new window."""
        self.steps = 0

    def read(self, terms: StepTerms) -> WindowReading:
        """The window's means and the last step's multiplier and budget, read to the host (one synchronisation)."""
        rows = self.rows[: self.steps]
        sums = rows.to(torch.float64).cumsum(0)[-1] if self.steps else torch.zeros(len(COLUMNS), dtype=torch.float64)
        finite_rows = torch.isfinite(rows).all(1).to(torch.int64).cumprod(0).sum()  # rows before the first bad one
        last = [finite_rows, terms.multiplier, *([] if terms.budget is None else [terms.budget])]
        values = torch.cat((sums.to(rows.device), *(t.reshape(1).to(torch.float64) for t in last))).tolist()
        nll, kl, loss, _, finite, multiplier, *budget = values
        n = max(self.steps, 1)
        return WindowReading(
            nll=nll / n,
            kl=kl / n,
            loss=loss / n,
            finite_steps=int(finite),
            steps=self.steps,
            multiplier=multiplier,
            budget=budget[0] if budget else None,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows[: self.steps].cpu()}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device, dtype: torch.dtype, capacity: int) -> LogWindow:
        """The window a checkpoint saved (in the format ``upgrade_checkpoint`` returns), on ``device``."""
        rows = state["rows"]
        window = cls.empty(device, dtype, max(capacity, rows.shape[0]))
        window.rows[: rows.shape[0]] = rows
        window.steps = rows.shape[0]
        return window

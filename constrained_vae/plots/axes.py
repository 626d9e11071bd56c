"""Axes that read as numbers: log axes ticked at the swept values, plain-number log ticks, a readable
symlog axis for λ ≥ 0 (exactly 0 while a constraint is slack) and for KL/ε."""

from __future__ import annotations

import math

import matplotlib.axes
import matplotlib.ticker
import numpy as np


def legend(ax: matplotlib.axes.Axes, **kwargs) -> None:
    """A legend of the labelled artists, when there are any."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def one_two_five(lo: float, hi: float) -> list[float]:
    """The values 1, 2 and 5 × 10^k in [lo, hi] (lo > 0), ascending."""
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    values = (float(f"{m * 10.0**k:.12g}") for k in decades for m in (1, 2, 5))
    return [v for v in values if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]


def ratio_axis(ax: matplotlib.axes.Axes, final: list[float]) -> None:
    """The KL/ε axis: linear from 0 to 2; when a run ended above 2ε (a constraint far from met),
    log above 2 up to the 1-2-5 value over the largest final ratio, so that run stays in view."""
    largest = max((v for v in final if math.isfinite(v)), default=0.0)
    ax.set_ylim(0, 2)
    if largest <= 1.8:
        return
    top = min(v for v in one_two_five(1.1 * largest, 11 * largest) if v >= 1.1 * largest)
    ax.set_yscale("symlog", linthresh=2.0, linscale=1.5)
    ax.set_ylim(0, top)
    ticks = [0.0, 0.5, 1.0, 1.5, 2.0, *(v for v in one_two_five(2.0, top) if v > 2)]
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def multiplier_axis(ax: matplotlib.axes.Axes, final: list[float], every: np.ndarray) -> None:
    """A readable y axis for λ ≥ 0, which is exactly 0 while a constraint is slack.

    Symlog: linear from 0 to the 1-2-5 value at or below half the smallest positive final λ
    (at most three decades below the top), log above it, up to the 1-2-5 value at or above
    the largest λ. Labelled ticks at 0 and at every 1, 2, 5 × 10^k in between, as plain
    numbers (0.2, 0.5, 1, 2, 5, 10); unlabelled minor ticks at the other mantissas.
    """
    every = every[np.isfinite(every)]
    largest = float(every.max()) if every.size and every.max() > 0 else 1.0
    top = min(v for v in one_two_five(largest, 10 * largest) if v >= largest * (1 - 1e-9))
    positive = [v for v in final if v > 0]
    floor = max(0.5 * min(positive) if positive else top / 10, top / 1000)
    linthresh = max(one_two_five(floor / 10, floor))
    ax.set_yscale("symlog", linthresh=linthresh, linscale=0.5)  # the linear part: half a decade high
    ax.set_ylim(0, top)
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator([0.0, *one_two_five(linthresh, top)]))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    decades = range(math.floor(math.log10(linthresh)), math.ceil(math.log10(top)))
    minor = [m * 10.0**k for k in decades for m in (3, 4, 6, 7, 8, 9) if linthresh < m * 10.0**k < top]
    ax.yaxis.set_minor_locator(matplotlib.ticker.FixedLocator(minor))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plain_log_y(ax: matplotlib.axes.Axes) -> None:
    """Log-scale y axis with its ticks written as plain numbers (0.5, 2, 20); an axis that spans
    at most a decade (so shows one or no power of ten) also labels 3, 4, 6 and 8 × 10^k."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))

    def minor(value: float, position: int) -> str:
        low, high = sorted(ax.get_ylim())
        dense = low > 0 and math.log10(high / low) <= 1
        return _minor_label(value, position, (2, 3, 4, 5, 6, 8) if dense else (2, 5))

    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(minor))


def log_axis_ticked_at(ax: matplotlib.axes.Axes, values) -> None:
    """Log-scale x axis whose only labelled ticks are ``values`` (the swept ε or β), as plain numbers."""
    ax.set_xscale("log")
    if len(values):
        ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _minor_label(value: float, _: int, mantissas: tuple[int, ...] = (2, 5)) -> str:
    """Label the minor ticks 2–9 × 10^k only at ``mantissas`` (2 and 5), so the log axis reads
    without clutter."""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if round(mantissa) in mantissas else ""

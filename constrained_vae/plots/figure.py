"""Every figure of the project is made by :func:`new_figure` and written by :func:`save_figure`.

Figures are plain :class:`matplotlib.figure.Figure` objects on an Agg canvas: nothing here
touches pyplot's global state or the process's matplotlib backend, so the library can draw in
any program (a notebook with its own backend, a thread, a server) without changing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 150  # pixels per inch of every saved figure


def new_figure(**options: Any) -> Figure:
    """A figure (``Figure(**options)``: figsize, layout, ...) that draws with Agg."""
    figure = Figure(**options)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``figure`` as ``path`` with each suffix of ``formats`` (``.png``, ``.pdf``); the paths written."""
    path = Path(path)
    paths = [path.with_suffix(f".{suffix}") for suffix in formats]
    for target in paths:
        figure.savefig(target, dpi=DPI, bbox_inches="tight")
    return paths

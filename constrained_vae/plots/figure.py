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

from constrained_vae.errors import ConfigError

DPI = 150  # pixels per inch of a saved figure, unless asked otherwise
MAX_DPI = 1200  # a print shop's finest; more only makes huge files of the same figure
FORMATS = ("png", "pdf")


def new_figure(**options: Any) -> Figure:
    """A figure (``Figure(**options)``: figsize, layout, ...) that draws with Agg."""
    figure = Figure(**options)
    FigureCanvasAgg(figure)
    return figure


def check_output(formats: Sequence[str], dpi: int) -> None:
    """ConfigError unless each of ``formats`` is one of :data:`FORMATS` and ``dpi`` an integer from 1 to
    :data:`MAX_DPI`."""
    for suffix in formats:
        if suffix not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {suffix!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 1 <= dpi <= MAX_DPI:
        raise ConfigError(f"--dpi must be an integer from 1 to {MAX_DPI}, got {dpi}")


def save_figure(figure: Figure, path: str | Path, formats: Sequence[str] = ("png",), dpi: int = DPI) -> list[Path]:
    """Write ``figure`` as ``path`` with each suffix of ``formats`` (``.png``, ``.pdf``) at ``dpi`` pixels per
    inch (a PDF's images are rasterised at it); the paths written."""
    check_output(formats, dpi)
    path = Path(path)
    paths = [path.with_suffix(f".{suffix}") for suffix in formats]
    for target in paths:
        figure.savefig(target, dpi=dpi, bbox_inches="tight")
    return paths

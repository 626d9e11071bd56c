"""A sweep's grid: ε values × seeds (constrained points) and β values × seeds (fixed-β points)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from constrained_vae.core.objectives import OBJECTIVE_FIELDS, OBJECTIVES
from constrained_vae.errors import ConfigError
from constrained_vae.run.settings import RunConfig

GRID_FIELDS = ("epsilon", "beta", "seed")  # the RunConfig fields a point sets; the others are run settings
FIXED_BETA = "fixed-beta"
# The run settings only ε points take: ``--objective`` and every objective setting fixed β does not take.
EPSILON_POINT_FIELDS: tuple[str, ...] = (
    "objective",
    *(name for name in OBJECTIVE_FIELDS if name not in (*OBJECTIVES[FIXED_BETA].field_names(), *GRID_FIELDS)),
)


def point_settings(settings: dict[str, Any], *, epsilon: float | None, beta: float | None) -> dict[str, Any]:
    """A sweep point's settings: the run settings without those its objective does not take.

    A sweep gives one set of run settings to ε points and β points alike: the multiplier's
    settings (``--dual-update``, ``--dual-lr``, …) and ``--objective`` are for the ε points, so a
    β point (fixed β) drops every objective setting fixed β does not take. (``run.py`` refuses
    such settings instead: :meth:`RunConfig.validate`.)
    """
    if beta is None:
        return dict(settings, epsilon=epsilon, beta=None)
    return {**{k: v for k, v in settings.items() if k not in EPSILON_POINT_FIELDS}, "epsilon": None, "beta": beta}


def check_sweepable(settings: dict[str, Any]) -> None:
    """ConfigError for a budget that no point of any grid takes: κ (a grid's points are ε and β values)."""
    if settings.get("kappa") is not None:
        raise ConfigError(
            "--kappa does not apply to a sweep: its points are --epsilon and --beta values, and none takes κ "
            "(train a geco run with experiments/run.py)"
        )


def check_settings_apply(settings: dict[str, Any], *, has_epsilon_points: bool) -> None:
    """ConfigError for a setting that no point of the grid takes: one only ε points take, in a grid
    without ε points (``--objective fixed-beta`` aside: the β points train that)."""
    if has_epsilon_points:
        return
    for name in EPSILON_POINT_FIELDS:
        value = settings.get(name)
        if value is None or (name == "objective" and value == FIXED_BETA):
            continue
        given = f"--objective {value}" if name == "objective" else "--" + name.replace("_", "-")
        raise ConfigError(
            f"{given} does not apply to fixed-β points (--beta): it is for a sweep's --epsilon points, "
            "and this one has none"
        )


@dataclass(frozen=True)
class Point:
    """One run of a sweep: an ε (constrained) or a β (fixed-β), and a seed."""

    epsilon: float | None
    beta: float | None
    seed: int

    @property
    def objective_name(self) -> str:
        """``constrained`` for an ε point, ``fixed-beta`` for a β point (a sweep's ``--objective`` aside)."""
        return "constrained" if self.epsilon is not None else FIXED_BETA

    @property
    def name(self) -> str:
        """The run folder's name: ``eps20-seed0``, ``beta0.5-seed2``."""
        tag = f"eps{self.epsilon:g}" if self.epsilon is not None else f"beta{self.beta:g}"
        return f"{tag}-seed{self.seed}"

    def config(self, settings: dict[str, Any]) -> RunConfig:
        """The sweep's run settings with this point's ε or β and seed (defaults not yet filled in)."""
        values = point_settings(settings, epsilon=self.epsilon, beta=self.beta)
        return RunConfig.from_dict({**values, "seed": self.seed})

    def to_dict(self) -> dict[str, Any]:
        """The point as ``sweep.json`` records it (its objective under the file's ``mode`` key)."""
        return {
            "name": self.name,
            "mode": self.objective_name,
            "epsilon": self.epsilon,
            "beta": self.beta,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Grid:
    """ε values × seeds (constrained points) and β values × seeds (fixed-β points)."""

    epsilon: tuple[float, ...] = ()
    beta: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def of(cls, epsilon: Iterable[float], beta: Iterable[float], seeds: Iterable[int]) -> Grid:
        """A grid with repeated values dropped (first occurrence kept) and −0 read as 0."""
        return cls(_unique(v + 0.0 for v in epsilon), _unique(v + 0.0 for v in beta), _unique(seeds))

    @classmethod
    def from_dict(cls, values: dict[str, list]) -> Grid:
        return cls.of(values["epsilon"], values["beta"], values["seeds"])

    def to_dict(self) -> dict[str, list]:
        return {"epsilon": list(self.epsilon), "beta": list(self.beta), "seeds": list(self.seeds)}

    def points(self) -> list[Point]:
        """Constrained points (each ε over the seeds), then fixed-β points."""
        constrained = [Point(eps, None, seed) for eps in self.epsilon for seed in self.seeds]
        return constrained + [Point(None, beta, seed) for beta in self.beta for seed in self.seeds]

    def values_missing_from(self, other: Grid) -> dict[str, list]:
        """This grid's values that ``other`` lacks, by flag name (empty when ``other`` includes them all)."""
        missing = {
            "--epsilon": [v for v in self.epsilon if v not in other.epsilon],
            "--beta": [v for v in self.beta if v not in other.beta],
            "--seeds": [v for v in self.seeds if v not in other.seeds],
        }
        return {flag: values for flag, values in missing.items() if values}


def _unique(values: Iterable) -> tuple:
    return tuple(dict.fromkeys(values))

"""The settings of one run, their defaults and their validation.

A :class:`RunConfig` holds every setting that determines a run's numbers; it is
written to ``RUN/config.json`` and read back on ``--resume``. Settings left as
``None`` take the default of the chosen dataset (:data:`DATASET_DEFAULTS`) when
the config is resolved.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from constrained_vae.errors import ConfigError

Mode = Literal["constrained", "fixed-beta"]
DATASETS = ("dsprites", "dsprites-npz", "digits", "linear-gaussian")
DEVICES = ("auto", "cpu", "cuda")

# Defaults that depend on the dataset. The dSprites ones make
# `run.py --epsilon 20` finish in about 5 minutes on 2 CPU cores; the README
# gives the flags for the paper's scale.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "dsprites": dict(
        model="conv", likelihood="bernoulli", latent_dim=10, steps=3000, batch_size=64,
        lr=5e-4, dual_lr=2e-3, multiplier_init=1.0, log_every=25, checkpoint_every=500,
    ),
    "dsprites-npz": dict(
        model="conv", likelihood="bernoulli", latent_dim=10, steps=3000, batch_size=64,
        lr=5e-4, dual_lr=2e-3, multiplier_init=1.0, log_every=25, checkpoint_every=500,
    ),
    "digits": dict(
        model="mlp", likelihood="bernoulli", latent_dim=10, steps=3000, batch_size=128,
        lr=1e-3, dual_lr=5e-3, multiplier_init=1.0, log_every=25, checkpoint_every=500,
    ),
    "linear-gaussian": dict(
        model="linear", likelihood="gaussian", latent_dim=None, steps=4000, batch_size=256,
        lr=5e-3, dual_lr=2e-2, multiplier_init=1.0, log_every=20, checkpoint_every=1000,
    ),
}  # fmt: skip
RESUMABLE_OVERRIDES = ("steps", "device", "log_every", "checkpoint_every")


@dataclass
class RunConfig:
    """Every setting of a run. ε, β and λ are in nats per sample (see README)."""

    epsilon: float | None = None  # KL budget ε, nats per sample (constrained mode)
    beta: float | None = None  # fixed β (fixed-beta mode)
    dataset: str = "dsprites"
    data_path: str | None = None
    spectrum: list[float] = field(default_factory=lambda: [16.0, 8.0, 4.0, 2.0, 1.0])
    num_samples: int = 20000
    sigma: float = 1.0  # Gaussian decoder noise σ (linear-gaussian data)
    learn_sigma: bool = False
    model: str | None = None
    likelihood: str | None = None
    latent_dim: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None  # primal (Adam) learning rate
    dual_lr: float | None = None  # dual (SGD, maximize=True) learning rate
    multiplier_init: float | None = None  # initial λ
    seed: int = 0
    device: str = "auto"
    log_every: int | None = None
    checkpoint_every: int | None = None

    @property
    def mode(self) -> Mode:
        return "constrained" if self.epsilon is not None else "fixed-beta"

    def resolved(self) -> RunConfig:
        """A copy with dataset defaults filled in, validated."""
        _check_choice("dataset", self.dataset, DATASETS)
        defaults = dict(DATASET_DEFAULTS[self.dataset])
        if self.dataset == "linear-gaussian":
            defaults["latent_dim"] = len(self.spectrum)
        given = {k: getattr(self, k) for k in _names()}
        config = RunConfig(**{k: defaults[k] if v is None and k in defaults else v for k, v in given.items()})
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line message for any bad setting."""
        if (self.epsilon is None) == (self.beta is None):
            raise ConfigError("give exactly one of --epsilon (constrained mode) or --beta (fixed-β mode)")
        if self.epsilon is not None:
            _check_number("epsilon", self.epsilon, minimum=0.0)
        if self.beta is not None:
            _check_number("beta", self.beta, minimum=0.0)
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("device", self.device, DEVICES)
        if self.dataset == "dsprites-npz" and not self.data_path:
            raise ConfigError("--dataset dsprites-npz needs --data-path pointing to the dSprites .npz file")
        for name in ("latent_dim", "steps", "batch_size", "num_samples", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value}")
        for name in ("lr", "dual_lr", "sigma"):
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value, minimum=0.0, strict=True)
        if self.multiplier_init is not None:
            _check_number("multiplier-init", self.multiplier_init, minimum=0.0)
        if not isinstance(self.spectrum, (list, tuple)) or not all(isinstance(s, (int, float)) for s in self.spectrum):
            raise ConfigError(f"spectrum must be a list of positive numbers, got {self.spectrum!r}")
        if any(not (math.isfinite(s) and s > 0) for s in self.spectrum) or not self.spectrum:
            raise ConfigError(f"spectrum must be positive numbers, got {self.spectrum}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"mode": self.mode}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = set(_names())
        unknown = set(values) - known - {"mode", "versions"}
        if unknown:
            raise ConfigError(f"unknown settings in config: {sorted(unknown)}")
        return cls(**{k: v for k, v in values.items() if k in known})

    def numerics(self) -> dict[str, Any]:
        """The settings that must match for a checkpoint to belong to this run."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_OVERRIDES}


def _names() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _check_number(name: str, value: float, minimum: float, strict: bool = False) -> None:
    flag = "--" + name.replace("_", "-")
    if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise ConfigError(f"{flag} must be a finite number, got {value}")
    if value < minimum or (strict and value == minimum):
        relation = "positive" if strict else "non-negative"
        raise ConfigError(f"{flag} must be {relation}, got {value}")


def parse_spectrum(text: str) -> list[float]:
    """``"16,8,4"`` → ``[16.0, 8.0, 4.0]``, with a clear error for anything else."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--spectrum must be comma-separated numbers, got {text!r}") from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise ConfigError(f"--spectrum must be positive numbers, got {text!r}")
    return values

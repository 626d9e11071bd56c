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
from constrained_vae.presets import PRESET_DATASETS, PRESETS, preset_settings

Mode = Literal["constrained", "fixed-beta", "capacity", "controlvae", "geco"]
OBJECTIVES: tuple[str, ...] = ("constrained", "fixed-beta", "capacity", "controlvae", "geco")
KL_TARGET_OBJECTIVES = ("constrained", "capacity", "controlvae")  # the objectives --epsilon sets
DUAL_OBJECTIVES = ("constrained", "geco")  # the objectives with a learned multiplier
ANNEALED_OBJECTIVES = ("capacity", "controlvae")
OBJECTIVE_SETTINGS = ("objective", "kappa", "dual_update", "dual_kp", "dual_ema", "capacity_gamma", "anneal_steps")
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
# How a run is computed, not what it computes: they may change on --resume (threads and compile change
# only the floating-point rounding; see training.py).
RESUMABLE_OVERRIDES = ("steps", "device", "log_every", "checkpoint_every", "threads", "compile")
# Objective settings; the dual-update defaults are the ones benchmarks/dual_tracking.py supports (README).
DUAL_RULES = ("gradient", "log", "pi", "augmented")  # constrained_vae.dual
EMA_SUFFIX = "+ema"
DUAL_UPDATES = (*DUAL_RULES, "ema", *(rule + EMA_SUFFIX for rule in DUAL_RULES))  # the --dual-update choices
DEFAULT_DUAL_UPDATE = "log"  # benchmarks/dual_tracking.py: every budget met, no oscillation (README)
GECO_DUAL_UPDATE = "log+ema"  # Rezende & Viola 2018: multiplicative λ on the moving average
GECO_DUAL_UPDATES = ("log+ema", "log")
DEFAULT_LOG_DUAL_LR = 0.01  # the dual lr of the log rules when not given (log λ per nat per step)
DEFAULT_DUAL_KP = 1.0
DEFAULT_DUAL_EMA = 0.99  # GECO's α
DEFAULT_CAPACITY_GAMMA = 1000.0  # Burgess et al. 2018, dSprites
OPTIMIZERS = ("adam", "adagrad")  # the primal optimisers (constrained_vae.optimizers); None is Adam


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
    lr: float | None = None  # primal learning rate (of `optimizer`)
    dual_lr: float | None = None  # dual (SGD, maximize=True) learning rate
    multiplier_init: float | None = None  # initial λ (GECO: initial β = 1/λ)
    objective: str | None = None  # None: constrained with --epsilon, fixed-beta with --beta
    kappa: float | None = None  # GECO's NLL budget κ, nats per sample
    dual_update: str | None = None  # multiplier update rule (constrained, geco); see constrained_vae.dual
    dual_kp: float | None = None  # proportional gain K_P of --dual-update pi
    dual_ema: float | None = None  # decay α of the violation's moving average (--dual-update …+ema)
    capacity_gamma: float | None = None  # γ of the capacity objective
    anneal_steps: int | None = None  # steps over which capacity / ControlVAE's set point rise to ε
    seed: int = 0
    device: str = "auto"
    log_every: int | None = None
    checkpoint_every: int | None = None
    threads: int | None = None  # torch CPU threads while training; None: torch's default (one per core)
    compile: bool | None = None  # torch.compile the model; None: only long CUDA runs (training.use_compile)
    optimizer: str | None = None  # primal optimiser, one of OPTIMIZERS; None: Adam
    preset: str | None = None  # a published setup (constrained_vae.presets): its settings fill those not given

    @property
    def mode(self) -> Mode:
        """The objective: ``objective`` when given, else constrained with ε, fixed-beta with β."""
        if self.objective is not None:
            return self.objective  # type: ignore[return-value]
        return "constrained" if self.epsilon is not None or self.beta is None else "fixed-beta"

    @property
    def default_dual_update(self) -> str:
        """``dual_update``, or the objective's default rule when it is not given."""
        if self.dual_update is not None:
            return self.dual_update
        return GECO_DUAL_UPDATE if self.mode == "geco" else DEFAULT_DUAL_UPDATE

    @property
    def label(self) -> str:
        """``constrained ε=20``, ``fixed-beta β=4``, ``geco κ=30``: the objective and its budget."""
        symbol, value = (
            ("β", self.beta)
            if self.mode == "fixed-beta"
            else ("κ", self.kappa)
            if self.mode == "geco"
            else ("ε", self.epsilon)
        )
        return f"{self.mode} {symbol}={value:g}"

    def resolved(self) -> RunConfig:
        """A copy with the settings not given filled in, validated: the preset's, else the dataset defaults."""
        _check_choice("dataset", self.dataset, DATASETS)
        self._validate_preset()
        defaults = dict(DATASET_DEFAULTS[self.dataset])
        if self.mode in DUAL_OBJECTIVES and _parse_dual_update(self.default_dual_update)[0] == "log":
            defaults["dual_lr"] = DEFAULT_LOG_DUAL_LR  # relative steps: one rate for every dataset
        if self.dataset == "linear-gaussian":
            defaults["latent_dim"] = len(self.spectrum)
        if self.preset is not None:
            defaults.update(preset_settings(self.preset))
        given = {k: getattr(self, k) for k in _names()}
        config = RunConfig(**{k: defaults[k] if v is None and k in defaults else v for k, v in given.items()})
        config.validate()
        return config.with_objective_defaults()

    def with_objective_defaults(self) -> RunConfig:
        """Fill the settings that only the chosen objective uses (validated settings assumed).

        Settings an objective does not use stay None, so that they are absent from
        its numerics (and old checkpoints keep matching).
        """
        values = dataclasses.asdict(self)
        mode = self.mode
        if self.objective == ("constrained" if self.epsilon is not None else "fixed-beta"):
            values["objective"] = None  # the default objective for ε or β is not spelled out
        if mode in DUAL_OBJECTIVES:
            update = self.default_dual_update
            values["dual_update"] = update
            rule, ema = _parse_dual_update(update)
            if rule == "pi" and self.dual_kp is None:
                values["dual_kp"] = DEFAULT_DUAL_KP
            if ema and self.dual_ema is None:
                values["dual_ema"] = DEFAULT_DUAL_EMA
        if mode == "capacity" and self.capacity_gamma is None:
            values["capacity_gamma"] = DEFAULT_CAPACITY_GAMMA
        if mode not in DUAL_OBJECTIVES:  # no multiplier to initialise or to step
            values["dual_lr"] = values["multiplier_init"] = None
        if mode in ANNEALED_OBJECTIVES and self.anneal_steps is None:
            values["anneal_steps"] = max(1, self.steps // 2)
        return RunConfig(**values)

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line message for any bad setting."""
        self._validate_objective()
        if self.epsilon is not None:
            _check_number("epsilon", self.epsilon, minimum=0.0)
        if self.beta is not None:
            _check_number("beta", self.beta, minimum=0.0)
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("device", self.device, DEVICES)
        self._validate_preset()
        if self.optimizer is not None:
            _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.dataset == "dsprites-npz" and not self.data_path:
            raise ConfigError("--dataset dsprites-npz needs --data-path pointing to the dSprites .npz file")
        if self.compile is not None and not isinstance(self.compile, bool):
            raise ConfigError(f"compile must be true, false or null, got {self.compile!r}")
        for name in ("latent_dim", "steps", "batch_size", "num_samples", "log_every", "checkpoint_every", "threads"):
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

    def _validate_preset(self) -> None:
        """A known preset, on a dataset it was published for."""
        if self.preset is None:
            return
        _check_choice("preset", self.preset, tuple(PRESETS))
        if self.dataset not in PRESET_DATASETS[self.preset]:
            datasets = " or ".join(PRESET_DATASETS[self.preset])
            raise ConfigError(f"--preset {self.preset} is a setup for --dataset {datasets}, not {self.dataset}")

    def _validate_objective(self) -> None:
        """The objective, the budget it needs, and no setting it would ignore."""
        if self.objective is not None:
            _check_choice("objective", self.objective, OBJECTIVES)
        mode = self.mode
        if self.objective is None and (self.epsilon is None) == (self.beta is None):
            raise ConfigError("give exactly one of --epsilon (constrained mode) or --beta (fixed-β mode)")
        needs = "beta" if mode == "fixed-beta" else "kappa" if mode == "geco" else "epsilon"
        for name in ("epsilon", "beta", "kappa"):
            value = getattr(self, name)
            if name == needs and value is None:
                raise ConfigError(f"--objective {mode} needs --{name}")
            if name != needs and value is not None:
                raise ConfigError(f"--{name} does not apply to --objective {mode} (it takes --{needs})")
            if value is not None:
                _check_number(name, value, minimum=0.0)
        applies = {
            "dual_update": mode in DUAL_OBJECTIVES,
            "capacity_gamma": mode == "capacity",
            "anneal_steps": mode in ANNEALED_OBJECTIVES,
        }
        rule, ema = _parse_dual_update(self.dual_update) if self.dual_update is not None else (None, False)
        if mode in DUAL_OBJECTIVES:
            rule, ema = _parse_dual_update(self.dual_update or DEFAULT_DUAL_UPDATE)
        applies["dual_kp"] = rule == "pi"
        applies["dual_ema"] = ema
        for name, used in applies.items():
            if getattr(self, name) is not None and not used:
                flag = "--" + name.replace("_", "-")
                where = {"dual_kp": "--dual-update pi", "dual_ema": "a --dual-update with +ema"}.get(
                    name, f"--objective {mode}"
                )
                raise ConfigError(f"{flag} does not apply to {where}")
        if mode == "geco" and self.dual_update is not None and self.dual_update not in GECO_DUAL_UPDATES:
            choices = " or ".join(GECO_DUAL_UPDATES)
            raise ConfigError(f"--objective geco reports β = 1/λ, which needs λ > 0: use --dual-update {choices}")
        if (rule == "log" or mode == "geco") and self.multiplier_init is not None and not self.multiplier_init > 0:
            what = "the initial β = 1/λ" if mode == "geco" else "log λ"
            raise ConfigError(
                f"{self.label.split()[0]} with --dual-update {self.dual_update or rule} needs a positive "
                f"--multiplier-init ({what}), got {self.multiplier_init}"
            )
        if self.dual_kp is not None:
            _check_number("dual_kp", self.dual_kp, minimum=0.0)
        if self.dual_ema is not None:
            _check_number("dual_ema", self.dual_ema, minimum=0.0)
            if self.dual_ema >= 1:
                raise ConfigError(f"--dual-ema must be below 1, got {self.dual_ema}")
        if self.capacity_gamma is not None:
            _check_number("capacity_gamma", self.capacity_gamma, minimum=0.0, strict=True)
        if self.anneal_steps is not None and (not isinstance(self.anneal_steps, int) or self.anneal_steps < 1):
            raise ConfigError(f"anneal-steps must be a positive integer, got {self.anneal_steps}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"mode": self.mode}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        values = upgrade_settings(values)
        known = set(_names())
        unknown = set(values) - known - {"mode", "versions"}
        if unknown:
            raise ConfigError(f"unknown settings in config: {sorted(unknown)}")
        return cls(**{k: v for k, v in values.items() if k in known})

    def numerics(self) -> dict[str, Any]:
        """The settings that must match for a checkpoint to belong to this run (unused ones, None, left out)."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_OVERRIDES and v is not None}


def point_settings(settings: dict[str, Any], *, epsilon: float | None, beta: float | None) -> dict[str, Any]:
    """A sweep point's settings: the run settings without those its objective ignores.

    A sweep gives one set of run settings to ε points and β points alike: ``--dual-update``
    is for the ε points, so a β point (fixed-β) drops it, and ``--objective`` with it.
    (``run.py`` refuses such settings instead, see :meth:`RunConfig.validate`.)
    """
    if beta is None:
        return dict(settings, epsilon=epsilon, beta=None)
    kept = {k: v for k, v in settings.items() if k not in OBJECTIVE_SETTINGS}
    return dict(kept, epsilon=None, beta=beta)


def upgrade_settings(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config or checkpoint's numerics, with the settings added since filled as those runs had them.

    Runs from before ``--dual-update`` existed were constrained runs with plain gradient
    ascent on λ; settings that were None, and a fixed-β run's dual lr and initial λ,
    were stored then and are not now.
    """
    values = {k: v for k, v in values.items() if v is not None}
    if values.get("mode") == "constrained" and "dual_update" not in values:
        values["dual_update"] = "gradient"
    if values.get("mode") in ("fixed-beta", "capacity", "controlvae"):  # stored, unused, by earlier versions
        values.pop("dual_lr", None)
        values.pop("multiplier_init", None)
    return values


def _parse_dual_update(text: str) -> tuple[str, bool]:
    from constrained_vae.dual import DualUpdate  # dual imports cooper; config stays light

    update = DualUpdate.parse(text)
    return update.rule, update.ema


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

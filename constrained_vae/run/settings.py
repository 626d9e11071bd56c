"""The settings of one run, their defaults and their validation.

A :class:`RunConfig` holds every setting that determines a run's numbers; it is written to
``RUN/config.json`` and read back on ``--resume``. It is flat, as the command line and the file
are, and composes two parts:

* the **objective's** settings (its budget ε, β or κ and the numbers of its update rule): the
  objective's own :class:`~constrained_vae.core.objectives.ObjectiveSettings` owns their
  defaults and validation (:attr:`RunConfig.objective_settings`);
* the **run's** settings (data, model, optimiser, schedule, logging, device), whose defaults
  come, for each one not given, from the preset if one is chosen, else from the dataset
  (:data:`DATASET_DEFAULTS`).

:meth:`RunConfig.resolved` fills both in; a setting the objective does not take stays None, so
that it is absent from the run's numerics.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from constrained_vae.core.checks import FLOAT32_MAX, check_choice, check_positive, check_positive_int, flag
from constrained_vae.core.models import IMAGE_MODELS, MODELS
from constrained_vae.core.objectives import (
    OBJECTIVE_FIELDS,
    OBJECTIVES,
    PRECISIONS,
    DefaultContext,
    ObjectiveSettings,
    objective_name,
    objective_settings,
)
from constrained_vae.core.optimizers import OPTIMIZERS
from constrained_vae.data import DATASETS
from constrained_vae.data.arrays import ARRAYS, peek_arrays
from constrained_vae.errors import ConfigError
from constrained_vae.run.migrations import upgrade_settings
from constrained_vae.run.presets import PRESET_DATASETS, PRESETS, preset_settings
from constrained_vae.run.user_models import check_model_name, is_import_path

DEVICES = ("auto", "cpu", "cuda")

# Defaults that depend on the dataset. The dSprites ones make `run.py --epsilon 20` finish in
# about 5 minutes on 2 CPU cores; docs/study.md gives the flags for the paper's scale. Every 64×64
# image dataset takes dSprites' (the conv VAE, Bernoulli NLL on [0, 1] values, as disentanglement_lib).
# ``additive_dual_lr`` is the dual lr of the additive multiplier rules (gradient, pi, augmented),
# which step λ in nats of NLL per nat of KL and so scale with the data.
IMAGE_DEFAULTS: dict[str, Any] = dict(
    model="conv", likelihood="bernoulli", latent_dim=10, steps=3000, batch_size=64,
    lr=5e-4, additive_dual_lr=2e-3, log_every=25, checkpoint_every=500,
)  # fmt: skip
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    **{name: IMAGE_DEFAULTS for name in DATASETS if name not in ("digits", "linear-gaussian")},
    "digits": dict(
        model="mlp", likelihood="bernoulli", latent_dim=10, steps=3000, batch_size=128,
        lr=1e-3, additive_dual_lr=5e-3, log_every=25, checkpoint_every=500,
    ),
    "linear-gaussian": dict(
        model="linear", likelihood="gaussian", latent_dim=None, steps=4000, batch_size=256,
        lr=5e-3, additive_dual_lr=2e-2, log_every=20, checkpoint_every=1000,
    ),
}  # fmt: skip
# How a run is computed or watched, not what it computes: they may change on --resume (threads and compile
# change only the floating-point rounding; see constrained_vae.run.loop; tensorboard only what is logged).
RESUMABLE_OVERRIDES = ("steps", "device", "log_every", "checkpoint_every", "threads", "compile", "tensorboard")
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer; checkpoints store it as int64
GENERATED_DATASET = "linear-gaussian"  # the dataset generated from the settings below
GENERATED_DATA_SETTINGS = ("spectrum", "num_samples")
# What config.json holds beside the settings: the objective's name and provenance (see run.folder); never read back.
RECORDS = ("mode", "versions", "resumes")
POSITIVE_INTEGERS = ("latent_dim", "steps", "batch_size", "num_samples", "log_every", "checkpoint_every", "threads")
MAX_THREADS = 1024  # torch's thread pool fails to start (a crash, not an error) far beyond any machine's cores


@dataclass
class RunConfig:
    """Every setting of a run. ε, β and λ are in nats per sample (see docs/problem.md)."""

    epsilon: float | None = None  # KL budget ε, nats per sample (constrained mode)
    beta: float | None = None  # fixed β (fixed-beta mode)
    dataset: str = "dsprites"
    data_path: str | None = None
    spectrum: list[float] = field(default_factory=lambda: [16.0, 8.0, 4.0, 2.0, 1.0])
    factor_sizes: list[int] | None = None  # the grid of an MPI3D file other than the published one
    num_samples: int = 20000
    sigma: float = 1.0  # Gaussian decoder noise σ (linear-gaussian data)
    learn_sigma: bool = False
    model: str | None = None
    likelihood: str | None = None
    latent_dim: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None  # primal learning rate (of `optimizer`)
    dual_lr: float | None = None  # the multiplier rule's rate (constrained, geco); see constrained_vae.core.dual
    multiplier_init: float | None = None  # initial λ (GECO: initial β = 1/λ)
    objective: str | None = None  # None: constrained with --epsilon, fixed-beta with --beta
    kappa: float | None = None  # GECO's NLL budget κ, nats per sample
    dual_update: str | None = None  # multiplier update rule (constrained, geco); see constrained_vae.core.dual
    dual_kp: float | None = None  # proportional gain K_P of --dual-update pi
    dual_ema: float | None = None  # decay α of the violation's moving average (--dual-update …+ema)
    capacity_gamma: float | None = None  # γ of the capacity objective
    anneal_steps: int | None = None  # steps over which capacity / ControlVAE's set point rise to ε
    seed: int = 0
    device: str = "auto"
    log_every: int | None = None
    checkpoint_every: int | None = None
    tensorboard: bool = False  # also log to RUN/tensorboard/ (constrained_vae.run.tensorboard)
    threads: int | None = None  # torch CPU threads while training; None: torch's default (one per core)
    compile: bool | None = None  # torch.compile the model; None: only long CUDA runs (run.loop.use_compile)
    precision: str = "fp32"  # the model's forward: fp32, or bf16 under autocast (core.objectives.PRECISIONS)
    optimizer: str | None = None  # primal optimiser, one of OPTIMIZERS; None: Adam
    preset: str | None = None  # a published setup (constrained_vae.run.presets): its settings fill those not given

    @property
    def objective_name(self) -> str:
        """The objective: ``objective`` when given, else constrained with ε, fixed-beta with β."""
        return objective_name(self.objective, epsilon=self.epsilon, beta=self.beta)

    @property
    def objective_type(self) -> type[ObjectiveSettings]:
        """The objective's settings class (its capability flags); ConfigError for an unknown objective."""
        check_choice("objective", self.objective_name, tuple(OBJECTIVES))
        return OBJECTIVES[self.objective_name]

    @property
    def objective_settings(self) -> ObjectiveSettings:
        """The objective's settings (:mod:`constrained_vae.core.objectives`); ConfigError for one it does not take."""
        return objective_settings(self.objective, **{name: getattr(self, name) for name in OBJECTIVE_FIELDS})

    @property
    def label(self) -> str:
        """``constrained ε=20``, ``fixed-beta β=4``, ``geco κ=30``: the objective and its budget."""
        return self.objective_settings.label

    def resolved(self) -> RunConfig:
        """A copy with the settings not given filled in, validated (see the module docstring)."""
        check_choice("dataset", self.dataset, tuple(DATASETS))
        self._validate_preset()
        defaults = self.dataset_defaults()
        if self.preset is not None:
            defaults.update(preset_settings(self.preset))
        run = {
            name: defaults[name] if value is None and name in defaults else value
            for name, value in self.run_settings().items()
        }
        config = RunConfig(**run, **self.objective_values())
        config.validate()
        if config.model is None:
            raise ConfigError(
                f"--dataset {config.dataset} at {config.data_path} has no built-in model for its observations: "
                "give --model package.module:factory (a model of your own)"
            )
        context = DefaultContext(steps=config.steps, additive_dual_lr=defaults["additive_dual_lr"])
        objective = config.objective_settings.with_defaults(context)
        name = (
            None if config.objective == objective_name(None, epsilon=self.epsilon, beta=self.beta) else self.objective
        )
        return dataclasses.replace(config, **dataclasses.asdict(objective), objective=name)

    def dataset_defaults(self) -> dict[str, Any]:
        """The defaults of the dataset (:data:`DATASET_DEFAULTS`); your own arrays take the image datasets'
        for ``(1 or 3, 64, 64)`` images and digits' for vectors, with the file's likelihood, and no
        built-in model for images of another size."""
        defaults = dict(DATASET_DEFAULTS[self.dataset])
        if self.dataset == GENERATED_DATASET:
            defaults["latent_dim"] = len(self.spectrum)
        if self.dataset == ARRAYS and self.data_path:
            sample_shape, likelihood = peek_arrays(self.data_path)
            if len(sample_shape) == 1:
                defaults = dict(DATASET_DEFAULTS["digits"])
            elif sample_shape[0] not in (1, 3) or sample_shape[1:] != (64, 64):
                defaults["model"] = None  # the conv models take 64×64 images
            defaults["likelihood"] = likelihood
        return defaults

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line message for any bad setting."""
        self._validate_objective()
        check_choice("dataset", self.dataset, tuple(DATASETS))
        check_choice("device", self.device, DEVICES)
        self._validate_preset()
        if self.optimizer is not None:
            check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("precision", self.precision, tuple(PRECISIONS))
        if self.model is not None:
            check_model_name(self.model)
            self._validate_model_input()
        self._validate_data_source()
        if self.compile is not None and not isinstance(self.compile, bool):
            raise ConfigError(f"compile must be true, false or null, got {self.compile!r}")
        if not isinstance(self.tensorboard, bool):
            raise ConfigError(f"tensorboard must be true or false, got {self.tensorboard!r}")
        check_seed(self.seed)
        for name in POSITIVE_INTEGERS:
            value = getattr(self, name)
            if value is not None:
                if name == "threads":
                    check_positive_int(name, value, maximum=MAX_THREADS, reason="more threads than any machine's cores")
                else:
                    check_positive_int(name, value)
        for name in ("lr", "sigma"):
            value = getattr(self, name)
            if value is not None:
                check_positive(name, value)
        if not isinstance(self.spectrum, (list, tuple)) or not all(isinstance(s, (int, float)) for s in self.spectrum):
            raise ConfigError(f"spectrum must be a list of positive numbers, got {self.spectrum!r}")
        if any(not (math.isfinite(s) and 0 < s <= FLOAT32_MAX) for s in self.spectrum) or not self.spectrum:
            raise ConfigError(f"spectrum must be positive numbers within float32, got {self.spectrum}")
        self._validate_generated_data()

    def _validate_model_input(self) -> None:
        """A built-in model for 64×64 images (:data:`IMAGE_MODELS`) on an image dataset, a flat one on flat
        data (whose kind the dataset's default model tells). Your own arrays' shape, and what your own
        model takes, are checked where the model is built."""
        if is_import_path(self.model) or self.dataset == ARRAYS:
            return
        for_images = self.model in IMAGE_MODELS
        if for_images != (DATASET_DEFAULTS[self.dataset]["model"] in IMAGE_MODELS):
            fitting = [name for name in MODELS if (name in IMAGE_MODELS) != for_images]
            raise ConfigError(
                f"--model {self.model} is for {'64×64 images' if for_images else 'flat data'}, which "
                f"--dataset {self.dataset} does not hold; choose one of {', '.join(fitting)}"
            )

    def _validate_generated_data(self) -> None:
        """``--spectrum`` and ``--num-samples`` (away from their defaults) only for the data generated from them."""
        if self.dataset == GENERATED_DATASET:
            return
        defaults = RunConfig()
        for name in GENERATED_DATA_SETTINGS:
            value = getattr(self, name)
            if (list(value) if name == "spectrum" else value) != getattr(defaults, name):
                raise ConfigError(
                    f"--{name.replace('_', '-')} does not apply to --dataset {self.dataset} "
                    f"(only {GENERATED_DATASET} is generated from it)"
                )

    def _validate_data_source(self) -> None:
        """``--data-path`` for a dataset read from a file, ``--factor-sizes`` only where a file's grid may vary."""
        source = DATASETS[self.dataset]
        if source.path and not self.data_path:
            raise ConfigError(f"--dataset {self.dataset} needs --data-path pointing to {source.path}")
        if self.factor_sizes is None:
            return
        if not source.takes_factor_sizes:
            raise ConfigError(f"--factor-sizes does not apply to --dataset {self.dataset}")
        if not isinstance(self.factor_sizes, (list, tuple)) or not self.factor_sizes:
            raise ConfigError(f"factor_sizes must be a list of positive integers, got {self.factor_sizes!r}")
        for size in self.factor_sizes:
            check_positive_int("factor_sizes", size)

    def _validate_preset(self) -> None:
        """A known preset, on a dataset it was published for."""
        if self.preset is None:
            return
        check_choice("preset", self.preset, tuple(PRESETS))
        if self.dataset not in PRESET_DATASETS[self.preset]:
            datasets = " or ".join(PRESET_DATASETS[self.preset])
            raise ConfigError(f"--preset {self.preset} is a setup for --dataset {datasets}, not {self.dataset}")

    def _validate_objective(self) -> None:
        """The objective, the budget it needs, and no setting it would ignore (the objective's own rules)."""
        if self.objective is None and (self.epsilon is None) == (self.beta is None):
            raise ConfigError("give exactly one of --epsilon (constrained mode) or --beta (fixed-β mode)")
        self.objective_type  # noqa: B018 (a known objective)
        self.objective_settings.validate()

    def objective_values(self) -> dict[str, Any]:
        """The settings of every objective, as given (``objective`` included)."""
        return {name: getattr(self, name) for name in ("objective", *OBJECTIVE_FIELDS)}

    def run_settings(self) -> dict[str, Any]:
        """The settings that are not the objective's."""
        objective = self.objective_values()
        return {name: value for name, value in dataclasses.asdict(self).items() if name not in objective}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"mode": self.objective_name}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        values = upgrade_settings(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known - set(RECORDS)
        if unknown:
            raise ConfigError(f"unknown settings in config: {sorted(unknown)}")
        return cls(**{k: v for k, v in values.items() if k in known})

    def numerics(self) -> dict[str, Any]:
        """The settings that must match for a checkpoint to belong to this run (unused ones, None, left out)."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_OVERRIDES and v is not None}


def typed_settings(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (read from JSON or YAML) checked against the types of :class:`RunConfig`'s fields, with an
    integer where a number is wanted made a float (as the flags make it); its :data:`RECORDS` pass
    unchecked. ConfigError naming the first key that is no setting or holds a value of another type."""
    hints = typing.get_type_hints(RunConfig)
    typed = {}
    for key, value in values.items():
        if key in RECORDS:
            typed[key] = value
            continue
        if key not in hints:
            raise ConfigError(f"unknown setting {key!r}")
        if not _has_type(value, hints[key]):
            raise ConfigError(f"{key} must be {_type_words(hints[key])}, got {value!r}")
        typed[key] = _as_floats(value, hints[key])
    return typed


def _as_floats(value: Any, hint: Any) -> Any:
    """``value`` (of type ``hint``) with its integers made floats where ``hint`` wants numbers, not integers."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if isinstance(value, list):
        items = next((typing.get_args(kind)[0] for kind in kinds if typing.get_origin(kind) is list), None)
        return [float(item) for item in value] if items is float else value
    if isinstance(value, int) and not isinstance(value, bool) and float in kinds and int not in kinds:
        return float(value)
    return value


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` (read from JSON or YAML) is of the type ``hint`` (a RunConfig field's annotation)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_has_type(value, part) for part in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_has_type(item, typing.get_args(hint)[0]) for item in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_words(hint: Any) -> str:
    """``float | None`` → ``a number or null``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_words(part) for part in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_type_words(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    words = {float: "a number", int: "an integer", str: "a string", bool: "true/false", type(None): "null"}
    return words.get(hint, hint.__name__)


def check_seed(value: Any, name: str = "seed") -> None:
    """A seed: an integer from 0 to :data:`MAX_SEED`; ``name`` is the setting whose flag the message names."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{flag(name)} must be an integer from 0 to {MAX_SEED}, got {value}")


def parse_spectrum(text: str) -> list[float]:
    """``"16,8,4"`` → ``[16.0, 8.0, 4.0]``, with a clear error for anything else."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--spectrum must be comma-separated numbers, got {text!r}") from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise ConfigError(f"--spectrum must be positive numbers, got {text!r}")
    if any(v > FLOAT32_MAX for v in values):  # the data are float32: refused before numpy overflows casting them
        raise ConfigError(f"--spectrum values must be at most {FLOAT32_MAX:.4g} (the largest float32), got {text!r}")
    return values


__all__ = [
    "DATASETS",
    "DATASET_DEFAULTS",
    "DEVICES",
    "RECORDS",
    "RESUMABLE_OVERRIDES",
    "RunConfig",
    "check_seed",
    "parse_spectrum",
    "typed_settings",
]

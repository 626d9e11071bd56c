"""Everything one run updates, built from its settings: data, model, likelihood, objective, batch stream, log window."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from constrained_vae.core.likelihoods import build_likelihood
from constrained_vae.core.models import VAE
from constrained_vae.core.objectives import PRECISIONS, Optimization, StepTerms
from constrained_vae.core.optimizers import primal_optimizer
from constrained_vae.data import BatchFn, Dataset, TensorDataset, check_likelihood_range, load_dataset
from constrained_vae.errors import ConfigError
from constrained_vae.run.device import model_memory_format, resolve_device
from constrained_vae.run.log_window import LogWindow
from constrained_vae.run.settings import RunConfig
from constrained_vae.run.user_models import build_model


@dataclass
class Trainee:
    """Everything a run updates, and how to build it from a resolved config."""

    config: RunConfig
    dataset: Dataset  # on the host, for evaluation and figures
    batches: BatchFn  # the training batches: indices on ``device`` → observations there
    model: VAE
    likelihood: torch.nn.Module
    optimization: Optimization
    batch_generator: torch.Generator  # on ``device``; draws each batch's indices
    noise_generator: torch.Generator  # on ``device``; draws each batch's posterior noise (and its dressing)
    device: torch.device
    window: LogWindow
    step: int = 0
    seconds: float = 0.0
    compiled: bool = False

    @classmethod
    def build(cls, config: RunConfig, dataset: Dataset | None = None, batches: BatchFn | None = None) -> Trainee:
        """The run of the resolved ``config``; ``dataset`` is the one it names and ``batches`` its training
        path on the run's device, when already made (a bank's members share theirs)."""
        device = resolve_device(config.device)
        if dataset is None:
            dataset = load_run_dataset(config)
        check_batch_size(config, dataset)
        torch.manual_seed(config.seed)
        if device.type == "cuda":
            torch.cuda.manual_seed_all(config.seed)
        model = build_model(config.model, dataset.sample_shape, config.latent_dim)
        model.to(device, memory_format=model_memory_format(config, device))
        likelihood = build_likelihood(config.likelihood, config.sigma, config.learn_sigma).to(device)
        primal = primal_optimizer([*model.parameters(), *likelihood.parameters()], config.optimizer, config.lr)
        optimization = config.objective_settings.optimization(model, likelihood, primal)
        optimization.precision = PRECISIONS[config.precision]
        batch_generator = torch.Generator(device).manual_seed(config.seed)
        noise_generator = torch.Generator(device)
        if device.type == "cpu":  # the default generator's stream after seeding and initialisation
            noise_generator.set_state(torch.get_rng_state())
        else:
            noise_generator.manual_seed(config.seed)
        batches = dataset.batches(device) if batches is None else batches
        window = LogWindow.empty(device, next(model.parameters()).dtype, config.log_every)
        return cls(
            config, dataset, batches, model, likelihood, optimization, batch_generator, noise_generator, device, window
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.window.rows.dtype

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch and its posterior noise, drawn and made on the device.

        Indices are uniform with replacement (the batch generator); the noise ``[batch, latent_dim]``
        is standard normal, drawn after any random dressing of the batch (the noise generator).
        """
        indices = torch.randint(
            len(self.dataset), (self.config.batch_size,), generator=self.batch_generator, device=self.device
        )
        x = self.batches(indices, self.noise_generator)
        noise = torch.randn(
            (self.config.batch_size, self.config.latent_dim),
            generator=self.noise_generator,
            device=self.device,
            dtype=self.dtype,
        )
        return x, noise

    def advance(self) -> StepTerms:
        """One optimisation step on the next batch; its terms stay on the device."""
        if self.compiled and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration for the CUDA graphs of the compiled model
        return self.optimization.step(*self.next_batch())

    def compile(self) -> None:
        """Run the model under ``torch.compile`` from now on (with CUDA graphs on a GPU).

        The posterior samples are drawn as in eager mode (inductor's ``fallback_random``), so the
        compiled run differs from the eager one only in floating-point rounding. The model keeps its
        parameters and ``state_dict`` keys; the first steps take longer while it compiles.
        """
        options = {"fallback_random": True, "triton.cudagraphs": self.device.type == "cuda"}
        self.model.compile(options=options)
        self.compiled = True

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "seconds": self.seconds,
            "numerics": self.config.numerics(),
            "model": self.model.state_dict(),
            "likelihood": self.likelihood.state_dict(),
            "objective": self.optimization.state_dict(),
            "multiplier": self.optimization.multiplier,
            "window": self.window.state_dict(),
            "rng": {
                "noise": self.noise_generator.get_state(),
                "noise_device": self.device.type,
                "batches": self.batch_generator.get_state(),
                "batches_device": self.device.type,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's state (in the format ``upgrade_checkpoint`` returns)."""
        self.step = int(state["step"])
        self.seconds = float(state["seconds"])
        self.model.load_state_dict(state["model"])
        self.likelihood.load_state_dict(state["likelihood"])
        self.optimization.load_state_dict(state["objective"])
        self.window = LogWindow.from_state(state["window"], self.device, self.window.rows.dtype, self.config.log_every)
        rng = state["rng"]
        for generator, key in ((self.noise_generator, "noise"), (self.batch_generator, "batches")):
            restore_generator(generator, rng[key], rng[f"{key}_device"])


def restore_generator(generator: torch.Generator, saved: torch.Tensor, saved_device: str) -> None:
    """Continue a saved stream; resumed on another kind of device, a new stream seeded from the saved one."""
    if saved_device == generator.device.type:
        generator.set_state(saved)
    else:
        digest = hashlib.blake2b(saved.numpy().tobytes(), digest_size=8).digest()
        generator.manual_seed(int.from_bytes(digest, "little") >> 1)


def check_batch_size(config: RunConfig, dataset: Dataset) -> None:
    """ConfigError for a batch larger than the dataset it is drawn from."""
    if config.batch_size > len(dataset):
        raise ConfigError(
            f"--batch-size {config.batch_size} is larger than the dataset ({len(dataset)} examples of "
            f"{config.dataset}); batches are drawn from it, so use at most {len(dataset)}"
        )


def load_run_dataset(config: RunConfig) -> Dataset:
    """The dataset a resolved ``config`` trains on, checked against its likelihood."""
    dataset = load_dataset(
        config.dataset,
        data_path=config.data_path,
        spectrum=config.spectrum,
        num_samples=config.num_samples,
        seed=config.seed,
        factor_sizes=config.factor_sizes,
    )
    if dataset.likelihood != config.likelihood:
        raise ConfigError(f"dataset {config.dataset} is for a {dataset.likelihood} likelihood")
    if isinstance(dataset, TensorDataset):
        check_likelihood_range(dataset.data, config.likelihood, config.dataset)
    return dataset

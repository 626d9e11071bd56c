"""Everything one run updates, built from its settings: data, model, likelihood, objective, batch stream, log window."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from constrained_vae.core.likelihoods import build_likelihood
from constrained_vae.core.models import VAE, build_vae
from constrained_vae.core.objectives import Optimization, StepTerms
from constrained_vae.core.optimizers import primal_optimizer
from constrained_vae.data import BatchFn, Dataset, TensorDataset, check_likelihood_range, load_dataset
from constrained_vae.errors import ConfigError
from constrained_vae.run.device import model_memory_format, resolve_device
from constrained_vae.run.log_window import LogWindow
from constrained_vae.run.settings import RunConfig


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
    device: torch.device
    window: LogWindow
    step: int = 0
    seconds: float = 0.0
    compiled: bool = False

    @classmethod
    def build(cls, config: RunConfig) -> Trainee:
        device = resolve_device(config.device)
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
        if config.batch_size > len(dataset):
            raise ConfigError(
                f"--batch-size {config.batch_size} is larger than the dataset ({len(dataset)} examples of "
                f"{config.dataset}); batches are drawn from it, so use at most {len(dataset)}"
            )
        torch.manual_seed(config.seed)
        if device.type == "cuda":
            torch.cuda.manual_seed_all(config.seed)
        model = build_vae(config.model, dataset.sample_shape, config.latent_dim)
        model.to(device, memory_format=model_memory_format(config, device))
        likelihood = build_likelihood(config.likelihood, config.sigma, config.learn_sigma).to(device)
        primal = primal_optimizer([*model.parameters(), *likelihood.parameters()], config.optimizer, config.lr)
        optimization = config.objective_settings.optimization(model, likelihood, primal)
        batch_generator = torch.Generator(device).manual_seed(config.seed)
        batches = dataset.batches(device)
        window = LogWindow.empty(device, next(model.parameters()).dtype, config.log_every)
        return cls(config, dataset, batches, model, likelihood, optimization, batch_generator, device, window)

    def next_batch(self) -> torch.Tensor:
        """The next training batch, drawn and made on the device (uniform indices, with replacement)."""
        indices = torch.randint(
            len(self.dataset), (self.config.batch_size,), generator=self.batch_generator, device=self.device
        )
        return self.batches(indices)

    def advance(self) -> StepTerms:
        """One optimisation step on the next batch; its terms stay on the device."""
        if self.compiled and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration for the CUDA graphs of the compiled model
        return self.optimization.step(self.next_batch())

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
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
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
        torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and rng["cuda"] is not None:
            torch.cuda.set_rng_state_all(rng["cuda"])
        if rng["batches_device"] == self.device.type:
            self.batch_generator.set_state(rng["batches"])
        else:  # resumed on another kind of device: a new stream, seeded from the saved one
            digest = hashlib.blake2b(rng["batches"].numpy().tobytes(), digest_size=8).digest()
            self.batch_generator.manual_seed(int.from_bytes(digest, "little") >> 1)

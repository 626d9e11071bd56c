"""The training loop: seeding, device, progress bar, logging, checkpoints, resume.

``train(config, run_dir)`` runs a fresh run into a new folder;
``train(config, run_dir, resume=True)`` continues one from its checkpoint, exactly
as if it had not stopped (same batches, same posterior samples, same optimizer
state): on CPU the numbers are bit-for-bit those of an uninterrupted run.

The run folder is held (:func:`constrained_vae.locks.hold`) for the whole of
``train``. Ctrl-C or SIGTERM stops training between two steps: a checkpoint is
written at that step and :class:`TrainingInterrupted` is raised (a second Ctrl-C
stops at once; the last checkpoint is then the previous one).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from constrained_vae import locks, runs
from constrained_vae.config import RESUMABLE_OVERRIDES, RunConfig
from constrained_vae.data import Dataset, TensorDataset, check_likelihood_range, load_dataset
from constrained_vae.errors import ConfigError, ResourceError, RunFolderError, TrainingDiverged, TrainingInterrupted
from constrained_vae.models import VAE, build_likelihood, build_vae
from constrained_vae.objectives import Objective, StepTerms, objective_from_config


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


@dataclass
class LogWindow:
    """Sums of the per-step terms since the last logged row (plain floats; see :meth:`add`)."""

    nll: float = 0.0
    kl: float = 0.0
    loss: float = 0.0
    count: int = 0

    def add(self, terms: StepTerms) -> None:
        self.nll += float(terms.nll)
        self.kl += float(terms.kl)
        self.loss += float(terms.loss)
        self.count += 1

    def row(self, step: int, multiplier: float, epsilon: float | None, seconds: float) -> dict[str, Any]:
        n = max(self.count, 1)
        eps = "" if epsilon is None else epsilon
        return dict(
            step=step, nll=self.nll / n, kl=self.kl / n, loss=self.loss / n,
            multiplier=multiplier, epsilon=eps, seconds=round(seconds, 3),
        )  # fmt: skip


@dataclass
class Trainee:
    """Everything a run updates, and how to build it from a config."""

    config: RunConfig
    dataset: Dataset
    model: VAE
    likelihood: torch.nn.Module
    objective: Objective
    batch_generator: torch.Generator
    device: torch.device
    step: int = 0
    seconds: float = 0.0
    window: LogWindow = field(default_factory=LogWindow)

    @classmethod
    def build(cls, config: RunConfig) -> Trainee:
        device = resolve_device(config.device)
        dataset = load_dataset(
            config.dataset,
            data_path=config.data_path,
            spectrum=config.spectrum,
            num_samples=config.num_samples,
            seed=config.seed,
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
        model = build_vae(config.model, dataset.sample_shape, config.latent_dim).to(device)
        likelihood = build_likelihood(config.likelihood, config.sigma, config.learn_sigma).to(device)
        objective = objective_from_config(model, likelihood, config)
        batch_generator = torch.Generator().manual_seed(config.seed)
        return cls(config, dataset, model, likelihood, objective, batch_generator, device)

    def next_batch(self) -> torch.Tensor:
        indices = torch.randint(len(self.dataset), (self.config.batch_size,), generator=self.batch_generator)
        return self.dataset.get(indices).to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "seconds": self.seconds,
            "numerics": self.config.numerics(),
            "model": self.model.state_dict(),
            "likelihood": self.likelihood.state_dict(),
            "objective": self.objective.state_dict(),
            "multiplier": self.objective.multiplier,
            "window": vars(self.window).copy(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "batches": self.batch_generator.get_state(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.seconds = float(state["seconds"])
        self.model.load_state_dict(state["model"])
        self.likelihood.load_state_dict(state["likelihood"])
        self.objective.load_state_dict(state["objective"])
        self.window = LogWindow(**state["window"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.batch_generator.set_state(state["rng"]["batches"])


def _is_finite(terms: StepTerms) -> bool:
    return all(math.isfinite(float(v)) for v in (terms.nll, terms.kl, terms.loss, terms.multiplier))


def prepare(trainee: Trainee, run_dir: Path, *, resume: bool) -> bool:
    """Make ``run_dir`` a new run folder, or restore ``trainee`` from its checkpoint; whether it is new.

    Call while holding the folder. A folder stopped before its first checkpoint
    (config but no checkpoint) is started afresh, with ``--out`` or ``--resume``
    alike. For ``resume``, ``trainee.config`` is the run's own config with only the
    settings in :data:`~constrained_vae.config.RESUMABLE_OVERRIDES` changed.
    """
    config = trainee.config
    if not resume or not runs.is_started(run_dir):
        if resume and not runs.holds_run(run_dir):
            raise RunFolderError(f"{run_dir} has no {runs.CHECKPOINT} to resume from")
        runs.check_new(run_dir)
        runs.clear_unstarted(run_dir)
        runs.create(run_dir, config)
        runs.save_checkpoint(run_dir, trainee.state_dict())  # a usable checkpoint from step 0
        return True
    state = runs.load_checkpoint(run_dir, config)
    if config.steps < state["step"]:
        raise ConfigError(f"--steps {config.steps} is fewer than the {state['step']} steps the run has done")
    trainee.load_state_dict(state)
    runs.truncate_metrics(run_dir, trainee.step, config.log_every, config.steps)
    runs.update_config(run_dir, config)
    return False


class StopRequest:
    """Set by Ctrl-C (SIGINT) or SIGTERM while training runs; the loop stops at the next step boundary.

    Only in the main thread, and only for signals not ignored (a sweep worker ignores
    SIGINT: its sweep stops it with SIGTERM). A second signal raises KeyboardInterrupt.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.signal = signum

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def train(config: RunConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train to ``config.steps`` steps and return the summary (also in ``RUN/summary.json``).

    Raises :class:`TrainingDiverged` if the loss or the multiplier stops being finite
    (the checkpoint in the run folder is then the last good one),
    :class:`TrainingInterrupted` on Ctrl-C or SIGTERM (after a checkpoint at that step),
    :class:`ResourceError` when a step runs out of memory, and
    :class:`~constrained_vae.errors.FolderInUse` when another process holds ``run_dir``.
    """
    run_dir = Path(run_dir)
    stop = StopRequest()
    with stop.installed():
        trainee = Trainee.build(config.resolved())  # validates settings and data before anything is written
        if not resume:
            runs.check_new(run_dir)  # a started run is refused before its folder is touched
        if stop.requested:
            raise KeyboardInterrupt
        with locks.hold(run_dir):
            fresh = prepare(trainee, run_dir, resume=resume)
            try:
                _train_steps(trainee, run_dir, stop, progress)
            except Exception as error:
                if not _is_out_of_memory(error):
                    raise
                if fresh and trainee.step == 0:
                    runs.discard(run_dir)  # nothing trained: leave nothing behind
                    where = "nothing was written"
                else:
                    where = f"the last checkpoint is in {run_dir}"
                raise ResourceError(
                    f"out of memory in step {trainee.step + 1} with --batch-size {trainee.config.batch_size} "
                    f"({type(error).__name__}); use a smaller batch or a machine with more memory; {where}"
                ) from None
            summary = runs.summarise(trainee.config, runs.read_metrics(run_dir), trainee.seconds)
            runs.write_summary(run_dir, summary)
    return summary


def _train_steps(trainee: Trainee, run_dir: Path, stop: StopRequest, progress: bool) -> None:
    """The loop: steps, log rows, checkpoints; stops at a step boundary when ``stop`` is requested."""
    config = trainee.config
    bar = tqdm(
        total=config.steps, initial=trainee.step, disable=not progress, dynamic_ncols=True,
        desc=config.label,
    )  # fmt: skip
    last_checkpoint = trainee.step
    trainee.model.train()
    try:
        while trainee.step < config.steps:
            if stop.requested:
                if trainee.step != last_checkpoint:
                    runs.save_checkpoint(run_dir, trainee.state_dict())
                raise TrainingInterrupted(trainee.step, str(run_dir))
            started = time.perf_counter()
            terms = trainee.objective.step(trainee.next_batch())
            trainee.step += 1
            trainee.seconds += time.perf_counter() - started
            if not _is_finite(terms):
                raise TrainingDiverged(
                    f"training diverged at step {trainee.step}: NLL {terms.nll}, KL {terms.kl}, "
                    f"loss {terms.loss}, multiplier {terms.multiplier}; the last good checkpoint "
                    f"(step {last_checkpoint}) is in {run_dir}"
                )
            trainee.window.add(terms)
            bar.update(1)
            at_end = trainee.step == config.steps
            if trainee.step % config.log_every == 0 or at_end:
                multiplier = float(terms.multiplier)
                budget = None if terms.budget is None else float(terms.budget)
                row = trainee.window.row(trainee.step, multiplier, budget, trainee.seconds)
                runs.append_metrics(run_dir, [row])
                bar.set_postfix(nll=f"{row['nll']:.2f}", kl=f"{row['kl']:.2f}", λ=f"{multiplier:.3f}")
                if trainee.step % config.log_every == 0:
                    trainee.window = LogWindow()
            if trainee.step % config.checkpoint_every == 0 or at_end:
                runs.save_checkpoint(run_dir, trainee.state_dict())
                last_checkpoint = trainee.step
    finally:
        bar.close()


def resume_config(run_dir: str | Path, overrides: dict[str, Any]) -> RunConfig:
    """The run's saved config with the allowed ``overrides`` applied.

    Any other setting given must equal the saved one: a resumed run cannot change
    its numerics.
    """
    saved = runs.read_config(run_dir)
    values = saved.to_dict()
    for key, value in overrides.items():
        if value is None or value == values.get(key):
            continue
        if key not in RESUMABLE_OVERRIDES:
            raise ConfigError(
                f"--{key.replace('_', '-')} {value} differs from the run's {values.get(key)}; "
                f"a resumed run can only change {', '.join('--' + k.replace('_', '-') for k in RESUMABLE_OVERRIDES)}"
            )
        values[key] = value
    return RunConfig.from_dict(values)


def load_run(run_dir: str | Path, device: str = "cpu") -> Trainee:
    """A finished or interrupted run restored from its checkpoint, for evaluation.

    The returned trainee holds the run's config, dataset, model (in eval mode) and
    likelihood at the checkpoint's step.
    """
    config = runs.read_config(run_dir)
    config = RunConfig.from_dict(config.to_dict() | {"device": device}).resolved()
    trainee = Trainee.build(config)
    trainee.load_state_dict(runs.load_checkpoint(run_dir, config))
    trainee.model.eval()
    return trainee

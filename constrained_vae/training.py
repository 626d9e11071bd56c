"""The training loop: seeding, device, progress bar, logging, checkpoints, resume.

``train(config, run_dir)`` runs a fresh run into a new folder;
``train(config, run_dir, resume=True)`` continues one from its checkpoint, exactly
as if it had not stopped (same batches, same posterior samples, same optimizer
state): on CPU the numbers are bit-for-bit those of an uninterrupted run (with the
same ``threads`` and ``compile``, which change the rounding); on CUDA it is the same
run (same batches, same λ trajectory) up to floating-point non-determinism.

Batches are drawn and made on the run's device (indices from a generator there, whose
state is checkpointed), the step's terms are summed there (:class:`LogWindow`), and the
host waits for the device only at log rows and checkpoints, where divergence is checked.

The run folder is held (:func:`constrained_vae.locks.hold`) for the whole of
``train``. Ctrl-C or SIGTERM stops training between two steps: a checkpoint is
written at that step and :class:`TrainingInterrupted` is raised (a second Ctrl-C
stops at once; the last checkpoint is then the previous one).
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from constrained_vae import locks, runs
from constrained_vae.config import RESUMABLE_OVERRIDES, RunConfig
from constrained_vae.data import BatchFn, Dataset, TensorDataset, check_likelihood_range, load_dataset
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


def model_memory_format(config: RunConfig, device: torch.device) -> torch.memory_format:
    """The layout of the model's conv weights (and so of its activations): channels-last for the conv
    VAE on CPU, where oneDNN ran the dSprites step 1.15–1.26× faster (2 shared cores, one thread),
    else torch's default. It changes the floating-point rounding, not the model."""
    if config.model == "conv" and device.type == "cpu":
        return torch.channels_last
    return torch.contiguous_format


@dataclass
class LogWindow:
    """The per-step terms since the last logged row, kept on the device: a step never waits for the host.

    Row k of ``rows`` (``[capacity, 4]``, the terms' dtype) holds the window's k-th step: NLL, KL and
    loss (nats per sample) and the multiplier; adding a step is one device copy. ``carried`` (float64
    ``[4]``) holds the sums of ``carried_steps`` steps that a checkpoint of an older version passed on
    as plain floats (zeros otherwise). :meth:`read` sums in step order in float64, as a host loop over
    Python floats would, and finds the first step whose terms were not all finite.
    """

    rows: torch.Tensor
    carried: torch.Tensor
    count: int = 0  # rows in use
    carried_steps: int = 0

    @classmethod
    def empty(cls, device: torch.device, dtype: torch.dtype, capacity: int) -> LogWindow:
        return cls(
            torch.empty(capacity, 4, device=device, dtype=dtype), torch.zeros(4, device=device, dtype=torch.float64)
        )

    @property
    def steps(self) -> int:
        """Steps in the window."""
        return self.carried_steps + self.count

    def add(self, terms: StepTerms) -> None:
        """Store one step's terms in the next row (queued on their device; nothing is read back)."""
        if self.count == self.rows.shape[0]:
            self.rows = torch.cat((self.rows, torch.empty_like(self.rows)))
        torch.stack((terms.nll, terms.kl, terms.loss, terms.multiplier), out=self.rows[self.count])
        self.count += 1

    def reset(self) -> None:
        """Start a new window."""
        self.carried.zero_()
        self.count = self.carried_steps = 0

    def read(self, terms: StepTerms) -> WindowReading:
        """The window's means and the last step's multiplier and budget, read to the host (one synchronisation)."""
        rows = self.rows[: self.count]
        sums = torch.cat((self.carried[None], rows.to(torch.float64))).cumsum(0)[-1]
        finite_rows = torch.isfinite(rows).all(1).to(torch.int64).cumprod(0).sum()  # rows before the first bad one
        last = [finite_rows, terms.multiplier] + ([] if terms.budget is None else [terms.budget])
        values = torch.cat((sums, *(t.reshape(1).to(torch.float64) for t in last))).tolist()
        n = max(self.steps, 1)
        return WindowReading(
            nll=values[0] / n, kl=values[1] / n, loss=values[2] / n,
            finite_steps=self.carried_steps + int(values[4]), steps=self.steps,
            multiplier=values[5], budget=values[6] if terms.budget is not None else None,
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows[: self.count].cpu(),
            "carried": self.carried.cpu(),
            "carried_steps": self.carried_steps,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device, dtype: torch.dtype, capacity: int) -> LogWindow:
        """The window a checkpoint saved, on ``device``; older checkpoints saved plain-float sums instead of rows."""
        window = cls.empty(device, dtype, capacity)
        if "rows" not in state:
            window.carried = torch.tensor([state["nll"], state["kl"], state["loss"], 0.0], dtype=torch.float64)
            window.carried = window.carried.to(device)
            window.carried_steps = int(state["count"])
            return window
        rows = state["rows"]
        if rows.shape[0] > capacity:
            window.rows = torch.empty(rows.shape[0], 4, device=device, dtype=dtype)
        window.rows[: rows.shape[0]] = rows
        window.count = rows.shape[0]
        window.carried, window.carried_steps = state["carried"].to(device), int(state["carried_steps"])
        return window


@dataclass
class WindowReading:
    """A log window read to the host: mean NLL, KL and loss (nats per sample) over its ``steps`` steps,
    the last step's multiplier and budget, and ``finite_steps``, the steps before the first whose terms
    were not all finite (all of them if none)."""

    nll: float
    kl: float
    loss: float
    finite_steps: int
    steps: int
    multiplier: float
    budget: float | None

    @property
    def finite(self) -> bool:
        return self.finite_steps == self.steps

    def row(self, step: int, seconds: float) -> dict[str, Any]:
        """A row of ``metrics.csv``."""
        eps = "" if self.budget is None else self.budget
        return dict(
            step=step, nll=self.nll, kl=self.kl, loss=self.loss,
            multiplier=self.multiplier, epsilon=eps, seconds=round(seconds, 3),
        )  # fmt: skip


@dataclass
class Trainee:
    """Everything a run updates, and how to build it from a config."""

    config: RunConfig
    dataset: Dataset  # on the host, for evaluation and figures
    batches: BatchFn  # the training batches: indices on ``device`` → observations there
    model: VAE
    likelihood: torch.nn.Module
    objective: Objective
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
        objective = objective_from_config(model, likelihood, config)
        batch_generator = torch.Generator(device).manual_seed(config.seed)
        batches = dataset.batches(device)
        window = LogWindow.empty(device, next(model.parameters()).dtype, config.log_every)
        return cls(config, dataset, batches, model, likelihood, objective, batch_generator, device, window)

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
        return self.objective.step(self.next_batch())

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
            "objective": self.objective.state_dict(),
            "multiplier": self.objective.multiplier,
            "window": self.window.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "batches": self.batch_generator.get_state(),
                "batches_device": self.device.type,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.seconds = float(state["seconds"])
        self.model.load_state_dict(state["model"])
        self.likelihood.load_state_dict(state["likelihood"])
        self.objective.load_state_dict(state["objective"])
        self.window = LogWindow.from_state(state["window"], self.device, self.window.rows.dtype, self.config.log_every)
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and rng["cuda"] is not None:
            torch.cuda.set_rng_state_all(rng["cuda"])
        if rng.get("batches_device", "cpu") == self.device.type:
            self.batch_generator.set_state(rng["batches"])
        else:  # resumed on another kind of device: a new stream, seeded from the saved one
            digest = hashlib.blake2b(rng["batches"].numpy().tobytes(), digest_size=8).digest()
            self.batch_generator.manual_seed(int.from_bytes(digest, "little") >> 1)


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


# Compiling the conv VAE took ~45 s on 2 CPU cores. On an H100, issue 8 measured a minimal loop at
# 244 steps/s eager and 310 compiled: 0.87 ms saved per step, so ~50,000 steps repay ~45 s.
COMPILE_MIN_STEPS = 50_000


def use_compile(config: RunConfig, device: torch.device) -> bool:
    """Whether a run compiles its model: ``config.compile`` when set, else only a CUDA run of at
    least :data:`COMPILE_MIN_STEPS` steps (the paper's scale).

    On 2 shared CPU cores compiling the dSprites conv VAE took ~45 s and then ran its step only
    1.04× faster, so CPU runs stay eager. The CUDA threshold rests on issue 8's minimal-loop
    figures; the project's loop under compile on a GPU is still to be measured.
    """
    if config.compile is not None:
        return config.compile
    return device.type == "cuda" and config.steps >= COMPILE_MIN_STEPS


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``threads`` torch CPU threads inside the block (torch's setting unchanged for None), the previous after."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train(config: RunConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train to ``config.steps`` steps and return the summary (also in ``RUN/summary.json``).

    Raises :class:`TrainingDiverged` if the loss or the multiplier stops being finite
    (found at the next logging or checkpoint step; the checkpoint in the run folder is
    then the last good one), :class:`TrainingInterrupted` on Ctrl-C or SIGTERM (after a
    checkpoint at that step), :class:`ResourceError` when a step runs out of memory, and
    :class:`~constrained_vae.errors.FolderInUse` when another process holds ``run_dir``.
    """
    run_dir = Path(run_dir)
    stop = StopRequest()
    with stop.installed(), torch_threads(config.threads):
        trainee = Trainee.build(config.resolved())  # validates settings and data before anything is written
        if not resume:
            runs.check_new(run_dir)  # a started run is refused before its folder is touched
        if stop.requested:
            raise KeyboardInterrupt
        with locks.hold(run_dir):
            fresh = prepare(trainee, run_dir, resume=resume)
            if use_compile(trainee.config, trainee.device):
                trainee.compile()
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
    """The loop: steps, log rows, checkpoints; stops at a step boundary when ``stop`` is requested.

    Steps are queued without reading anything back; the host waits for the device only at log
    rows and checkpoints (and on a stop), where the window is read and checked for divergence,
    so a checkpoint is never written from a diverged state. ``trainee.seconds`` counts the time
    of the steps, not of writing rows and checkpoints.
    """
    config = trainee.config
    bar = tqdm(
        total=config.steps, initial=trainee.step, disable=not progress, dynamic_ncols=True,
        desc=config.label,
    )  # fmt: skip
    last_checkpoint = checked = trainee.step
    terms: StepTerms | None = None
    clock = time.perf_counter()

    def settle() -> WindowReading:
        """Wait for the queued steps, add their time, and stop if one of them diverged."""
        nonlocal checked
        reading = trainee.window.read(terms)
        trainee.seconds += time.perf_counter() - clock
        if not reading.finite:
            first = trainee.step - reading.steps + 1 + reading.finite_steps
            raise TrainingDiverged(
                f"training diverged at step {first}, between steps {checked + 1} and {trainee.step} (the NLL, "
                f"KL, loss or multiplier became NaN or infinite); the last good checkpoint (step "
                f"{last_checkpoint}) is in {run_dir}"
            )
        checked = trainee.step
        return reading

    trainee.model.train()
    try:
        while trainee.step < config.steps:
            if stop.requested:
                if trainee.step != last_checkpoint:
                    settle()
                    runs.save_checkpoint(run_dir, trainee.state_dict())
                raise TrainingInterrupted(trainee.step, str(run_dir))
            terms = trainee.advance()
            trainee.step += 1
            trainee.window.add(terms)
            bar.update(1)
            at_end = trainee.step == config.steps
            log_due = trainee.step % config.log_every == 0 or at_end
            checkpoint_due = trainee.step % config.checkpoint_every == 0 or at_end
            if not (log_due or checkpoint_due):
                continue
            reading = settle()
            if log_due:
                runs.append_metrics(run_dir, [reading.row(trainee.step, trainee.seconds)])
                bar.set_postfix(nll=f"{reading.nll:.2f}", kl=f"{reading.kl:.2f}", λ=f"{reading.multiplier:.3f}")
                if trainee.step % config.log_every == 0:
                    trainee.window.reset()
            if checkpoint_due:
                runs.save_checkpoint(run_dir, trainee.state_dict())
                last_checkpoint = trainee.step
            clock = time.perf_counter()
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

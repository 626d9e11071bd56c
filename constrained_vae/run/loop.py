"""The training loop: seeding, progress bar, logging, checkpoints, resume.

``train(config, run_dir)`` runs a fresh run into a new folder;
``train(config, run_dir, resume=True)`` continues one from its checkpoint, exactly
as if it had not stopped (same batches, same posterior samples, same optimizer
state): on CPU the numbers are bit-for-bit those of an uninterrupted run (with the
same ``threads`` and ``compile``, which change the rounding); on CUDA it is the same
run (same batches, same λ trajectory) up to floating-point non-determinism.

Batches are drawn and made on the run's device (indices from a generator there, whose
state is checkpointed), the step's terms are summed there (:class:`~constrained_vae.run.log_window.LogWindow`),
and the host waits for the device only at log rows and checkpoints, where divergence is checked.

The run folder is held (:func:`constrained_vae.run.locks.hold`) for the whole of
``train``. Ctrl-C or SIGTERM stops training between two steps: a checkpoint is
written at that step and :class:`TrainingInterrupted` is raised (a second Ctrl-C
stops at once; the last checkpoint is then the previous one).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from constrained_vae.core.objectives import StepTerms
from constrained_vae.errors import ConfigError, ResourceError, RunFolderError, TrainingDiverged, TrainingInterrupted
from constrained_vae.run import folder, locks
from constrained_vae.run.device import torch_threads, use_compile
from constrained_vae.run.log_window import WindowReading
from constrained_vae.run.settings import RESUMABLE_OVERRIDES, RunConfig
from constrained_vae.run.summary import summarise
from constrained_vae.run.trainee import Trainee


def prepare(trainee: Trainee, run_dir: Path, *, resume: bool) -> bool:
    """Make ``run_dir`` a new run folder, or restore ``trainee`` from its checkpoint; whether it is new.

    Call while holding the folder. A folder stopped before its first checkpoint
    (config but no checkpoint) is started afresh, with ``--out`` or ``--resume``
    alike. For ``resume``, ``trainee.config`` is the run's own config with only the
    settings in :data:`~constrained_vae.run.settings.RESUMABLE_OVERRIDES` changed.
    """
    config = trainee.config
    if not resume or not folder.is_started(run_dir):
        if resume and not folder.holds_run(run_dir):
            raise RunFolderError(f"{run_dir} has no {folder.CHECKPOINT_FILE} to resume from")
        folder.check_new(run_dir)
        folder.clear_unstarted(run_dir)
        folder.create(run_dir, config)
        folder.save_checkpoint(run_dir, trainee.state_dict())  # a usable checkpoint from step 0
        return True
    state = folder.load_checkpoint(run_dir, config)
    if config.steps < state["step"]:
        raise ConfigError(f"--steps {config.steps} is fewer than the {state['step']} steps the run has done")
    trainee.load_state_dict(state)
    folder.truncate_metrics(run_dir, trainee.step, config.log_every, config.steps)
    folder.update_config(run_dir, config)
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


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure (host or device)."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


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
            folder.check_new(run_dir)  # a started run is refused before its folder is touched
        if stop.requested:
            raise KeyboardInterrupt
        with locks.hold(run_dir):
            fresh = prepare(trainee, run_dir, resume=resume)
            if use_compile(trainee.config, trainee.device):
                trainee.compile()
            try:
                TrainingLoop(trainee, run_dir, stop, progress).run()
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                if fresh and trainee.step == 0:
                    folder.discard(run_dir)  # nothing trained: leave nothing behind
                    where = "nothing was written"
                else:
                    where = f"the last checkpoint is in {run_dir}"
                raise ResourceError(
                    f"out of memory in step {trainee.step + 1} with --batch-size {trainee.config.batch_size} "
                    f"({type(error).__name__}); use a smaller batch or a machine with more memory; {where}"
                ) from None
            summary = summarise(trainee.config, folder.read_metrics(run_dir), trainee.seconds)
            folder.write_summary(run_dir, summary)
    return summary


class TrainingLoop:
    """The loop of one :func:`train` call: steps, log rows, checkpoints; stops at a step boundary when asked.

    Steps are queued without reading anything back; the host waits for the device only at log
    rows and checkpoints (and on a stop), where the window is read and checked for divergence
    (:meth:`settle`), so a checkpoint is never written from a diverged state. ``trainee.seconds``
    counts the time of the steps, not of writing rows and checkpoints.
    """

    def __init__(self, trainee: Trainee, run_dir: Path, stop: StopRequest, progress: bool) -> None:
        self.trainee, self.run_dir, self.stop, self.progress = trainee, run_dir, stop, progress
        self.last_checkpoint = trainee.step  # the step of the checkpoint in the run folder
        self.checked = trainee.step  # the last step known to be finite
        self.terms: StepTerms | None = None  # the last step's terms
        self.clock = time.perf_counter()  # when the steps not yet timed began

    def settle(self) -> WindowReading:
        """Wait for the queued steps, add their time, and stop if one of them diverged."""
        trainee = self.trainee
        reading = trainee.window.read(self.terms)
        trainee.seconds += time.perf_counter() - self.clock
        if not reading.finite:
            first = trainee.step - reading.steps + 1 + reading.finite_steps
            raise TrainingDiverged(
                f"training diverged at step {first}, between steps {self.checked + 1} and {trainee.step} (the NLL, "
                f"KL, loss or multiplier became NaN or infinite); the last good checkpoint (step "
                f"{self.last_checkpoint}) is in {self.run_dir}"
            )
        self.checked = trainee.step
        return reading

    def checkpoint(self) -> None:
        folder.save_checkpoint(self.run_dir, self.trainee.state_dict())
        self.last_checkpoint = self.trainee.step

    def run(self) -> None:
        trainee, config = self.trainee, self.trainee.config
        bar = tqdm(
            total=config.steps, initial=trainee.step, disable=not self.progress, dynamic_ncols=True, desc=config.label
        )
        trainee.model.train()
        try:
            while trainee.step < config.steps:
                if self.stop.requested:
                    if trainee.step != self.last_checkpoint:
                        self.settle()
                        self.checkpoint()
                    raise TrainingInterrupted(trainee.step, str(self.run_dir))
                self.terms = trainee.advance()
                trainee.step += 1
                trainee.window.add(self.terms)
                bar.update(1)
                at_end = trainee.step == config.steps
                log_due = trainee.step % config.log_every == 0 or at_end
                checkpoint_due = trainee.step % config.checkpoint_every == 0 or at_end
                if not (log_due or checkpoint_due):
                    continue
                reading = self.settle()
                if log_due:
                    folder.append_metrics(self.run_dir, [reading.row(trainee.step, trainee.seconds)])
                    bar.set_postfix(nll=f"{reading.nll:.2f}", kl=f"{reading.kl:.2f}", λ=f"{reading.multiplier:.3f}")
                    if trainee.step % config.log_every == 0:
                        trainee.window.reset()
                if checkpoint_due:
                    self.checkpoint()
                self.clock = time.perf_counter()
        finally:
            bar.close()


def resume_config(run_dir: str | Path, overrides: dict[str, Any]) -> RunConfig:
    """The run's saved config with the allowed ``overrides`` applied.

    Any other setting given must equal the saved one: a resumed run cannot change
    its numerics.
    """
    saved = folder.read_config(run_dir)
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
    config = folder.read_config(run_dir)
    config = RunConfig.from_dict(config.to_dict() | {"device": device}).resolved()
    trainee = Trainee.build(config)
    trainee.load_state_dict(folder.load_checkpoint(run_dir, config))
    trainee.model.eval()
    return trainee

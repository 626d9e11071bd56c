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
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from constrained_vae.core.objectives import StepTerms
from constrained_vae.errors import ConfigError, ResourceError, RunFolderError, TrainingDiverged, TrainingInterrupted
from constrained_vae.files import is_disk_full
from constrained_vae.run import folder, locks, tensorboard
from constrained_vae.run.bank import Bank, Strategy
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
    folder.check_writable(run_dir)
    state = folder.load_checkpoint(run_dir, config)
    if config.steps < state["step"]:
        raise ConfigError(f"--steps {config.steps} is fewer than the {state['step']} steps the run has done")
    trainee.load_state_dict(state)
    folder.truncate_metrics(run_dir, trainee.step, config.log_every, config.steps)
    folder.update_config(run_dir, config, resumed_from=state["step"])
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
    (outcome,) = train_bank([config], [run_dir], resume=[resume], progress=progress)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def train_bank(
    configs: Sequence[RunConfig],
    run_dirs: Sequence[str | Path],
    *,
    resume: Sequence[bool],
    progress: bool = True,
    strategy: Strategy | None = None,
) -> list[dict[str, Any] | TrainingDiverged]:
    """Train runs of one shape as one bank (:mod:`constrained_vae.run.bank`), each into its own folder.

    ``resume[i]`` says whether run i continues from its checkpoint (as :func:`train`'s ``resume``).
    Returns each run's summary, or the :class:`TrainingDiverged` that stopped it alone (its folder
    then holds its last good checkpoint; the others went on). Raises as :func:`train` does for the
    rest: an interrupt (every run checkpointed at its step), an out-of-memory step, a folder in use.
    """
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    if not len(configs) == len(run_dirs) == len(resume):
        raise ValueError("a config, a run folder and a resume flag for each run of a bank")
    if len(set(run_dirs)) != len(run_dirs):
        raise ConfigError("the runs of a bank need folders of their own")
    stop = StopRequest()
    with stop.installed(), torch_threads(configs[0].threads), ExitStack() as held:
        # settings and data are validated before anything is written
        bank = Bank.build([config.resolved() for config in configs], strategy)
        if any(config.tensorboard for config in configs):
            tensorboard.check_available()
        for run_dir, resumed in zip(run_dirs, resume, strict=True):
            if not resumed:
                folder.check_new(run_dir)  # a started run is refused before its folder is touched
        if stop.requested:
            raise KeyboardInterrupt
        try:
            for run_dir in run_dirs:
                held.enter_context(locks.hold(run_dir))
            members = [
                Member(trainee, run_dir, fresh=prepare(trainee, run_dir, resume=resumed))
                for trainee, run_dir, resumed in zip(bank.members, run_dirs, resume, strict=True)
            ]
            boards = held.enter_context(ExitStack())
            for member in members:
                if member.trainee.config.tensorboard:
                    board = tensorboard.TensorBoardLog.open(member.run_dir, member.trainee, fresh=member.fresh)
                    member.board = boards.enter_context(closing(board))
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise ResourceError(
                f"no space left on the device of {error.filename or run_dirs[0]} ({error.strerror}); nothing was "
                "trained and every checkpoint is as it was: free space and run the command again"
            ) from None
        if use_compile(bank.members[0].config, bank.members[0].device):
            bank.compile()
        loop = TrainingLoop(bank, members, stop, progress)
        try:
            try:
                loop.run()
            finally:
                boards.close()  # the logs are complete before a run is reported on or discarded
        except Exception as error:
            if is_out_of_memory(error):
                raise out_of_memory(error, members) from None
            if is_disk_full(error):
                raise disk_full(error, members) from None
            raise
        finally:
            bank.close()
        outcomes: list[dict[str, Any] | TrainingDiverged] = []
        for member in members:
            if member.diverged is not None:
                outcomes.append(member.diverged)
                continue
            trainee = member.trainee
            summary = summarise(trainee.config, folder.read_metrics(member.run_dir), trainee.seconds)
            try:
                folder.write_summary(member.run_dir, summary)
            except OSError as error:
                if not is_disk_full(error):
                    raise
                raise disk_full(error, members) from None
            outcomes.append(summary)
    return outcomes


def disk_full(error: OSError, members: Sequence[Member]) -> ResourceError:
    """The error of a write that found no space: where each run's last good checkpoint is."""
    wheres = "; ".join(f"the last checkpoint of {m.run_dir} is at step {m.last_checkpoint}" for m in members)
    return ResourceError(
        f"no space left on the device of {error.filename or members[0].run_dir} ({error.strerror}); {wheres}: "
        "free space and resume with run.py --resume RUN (or re-run the sweep)"
    )


def out_of_memory(error: BaseException, members: Sequence[Member]) -> ResourceError:
    """The error of a step that ran out of memory; runs that had trained nothing leave nothing behind."""
    wheres = []
    for member in members:
        if member.fresh and member.trainee.step == 0:
            folder.discard(member.run_dir)
            wheres.append(f"nothing was written in {member.run_dir}")
        else:
            wheres.append(f"the last checkpoint is in {member.run_dir}")
    trainee = members[0].trainee
    runs = f" of a bank of {len(members)} runs" if len(members) > 1 else ""
    return ResourceError(
        f"out of memory in step {trainee.step + 1}{runs} with --batch-size {trainee.config.batch_size} "
        f"({type(error).__name__}); use a smaller batch or a machine with more memory; {'; '.join(wheres)}"
    )


@dataclass
class Member:
    """One run of a bank in the loop: its trainee, its folder, and what the loop knows of it."""

    trainee: Trainee
    run_dir: Path
    fresh: bool  # started in this call
    last_checkpoint: int = -1  # the step of the checkpoint in the run folder
    checked: int = -1  # the last step known to be finite
    terms: StepTerms | None = None  # the last step's terms
    diverged: TrainingDiverged | None = None
    pending_seconds: float = 0.0  # the time of the bank's steps since this member's last reading
    board: tensorboard.TensorBoardLog | None = None  # its TensorBoard log, when it keeps one

    def __post_init__(self) -> None:
        self.last_checkpoint = self.checked = self.trainee.step

    @property
    def training(self) -> bool:
        return self.diverged is None and self.trainee.step < self.trainee.config.steps

    def settle(self) -> WindowReading:
        """Wait for the queued steps, add their time, and raise TrainingDiverged if one of them diverged."""
        trainee = self.trainee
        reading = trainee.window.read(self.terms)
        trainee.seconds += self.pending_seconds
        self.pending_seconds = 0.0
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
        """Save the checkpoint; the TensorBoard log's images at this step, and all it holds, go to disk first."""
        if self.board is not None:
            self.board.images()
            self.board.flush()
        folder.save_checkpoint(self.run_dir, self.trainee.state_dict())
        self.last_checkpoint = self.trainee.step


class TrainingLoop:
    """The loop of one :func:`train_bank` call: steps, log rows, checkpoints; stops at a step boundary when asked.

    Steps are queued without reading anything back; the host waits for the device only at a
    member's log rows and checkpoints (and on a stop), where its window is read and checked for
    divergence (:meth:`Member.settle`), so a checkpoint is never written from a diverged state. A
    member that diverged leaves the bank with its last good checkpoint; a bank of one raises. Each
    member's ``seconds`` count the time of the bank's steps, not of writing rows and checkpoints.
    """

    def __init__(self, bank: Bank, members: Sequence[Member], stop: StopRequest, progress: bool) -> None:
        self.bank, self.members, self.stop, self.progress = bank, list(members), stop, progress
        self.clock = time.perf_counter()  # when the steps not yet timed began

    def count_time(self, members: Sequence[Member]) -> None:
        """Wait for the queued steps and add their time to each member's."""
        device = members[0].trainee.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - self.clock
        for member in members:
            member.pending_seconds += elapsed

    def run(self) -> None:
        trainees = [member.trainee for member in self.members]
        steps = trainees[0].config.steps
        label = trainees[0].config.label if len(trainees) == 1 else f"bank of {len(trainees)} runs"
        start = min(trainee.step for trainee in trainees)
        bar = tqdm(total=steps, initial=start, disable=not self.progress, dynamic_ncols=True, desc=label)
        for trainee in trainees:
            trainee.model.train()
        try:
            while active := [member for member in self.members if member.training]:
                if self.stop.requested:
                    self.interrupt(active)
                for member, terms in zip(active, self.bank.advance([m.trainee for m in active]), strict=True):
                    member.terms = terms
                    member.trainee.step += 1
                    member.trainee.window.add(terms)
                bar.update(min(member.trainee.step for member in active) - bar.n)
                due = [member for member in active if self.due(member.trainee)]
                if not due:
                    continue
                self.count_time(active)
                for member in due:
                    self.record(member, bar)
                self.clock = time.perf_counter()
        finally:
            bar.close()

    @staticmethod
    def due(trainee: Trainee) -> bool:
        config, step = trainee.config, trainee.step
        return step % config.log_every == 0 or step % config.checkpoint_every == 0 or step == config.steps

    def record(self, member: Member, bar: tqdm) -> None:
        """A due member's log row and checkpoint; a diverged member leaves the bank (a bank of one raises)."""
        trainee, config = member.trainee, member.trainee.config
        try:
            reading = member.settle()
        except TrainingDiverged as error:
            if len(self.members) == 1:
                raise
            member.diverged = error
            self.bank.drop(trainee)
            return
        at_end = trainee.step == config.steps
        if trainee.step % config.log_every == 0 or at_end:
            row = reading.row(trainee.step, trainee.seconds)
            folder.append_metrics(member.run_dir, [row])
            if member.board is not None:
                member.board.row(row)
            if len(self.members) == 1:
                bar.set_postfix(nll=f"{reading.nll:.2f}", kl=f"{reading.kl:.2f}", λ=f"{reading.multiplier:.3f}")
            if trainee.step % config.log_every == 0:
                trainee.window.reset()
        if trainee.step % config.checkpoint_every == 0 or at_end:
            member.checkpoint()

    def interrupt(self, active: Sequence[Member]) -> None:
        """Checkpoint every member at its step (those not checkpointed there) and raise TrainingInterrupted."""
        self.count_time(active)
        for member in active:
            if member.trainee.step != member.last_checkpoint:
                member.settle()
                member.checkpoint()
        raise TrainingInterrupted(active[0].trainee.step, str(active[0].run_dir))


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
    if not folder.is_started(Path(run_dir)):
        raise RunFolderError(
            f"{run_dir} has no {folder.CHECKPOINT_FILE}: its run was stopped before its first checkpoint, "
            "so there is no trained model to read"
        )
    config = RunConfig.from_dict(config.to_dict() | {"device": device}).resolved()
    trainee = Trainee.build(config)
    trainee.load_state_dict(folder.load_checkpoint(run_dir, config))
    trainee.model.eval()
    return trainee

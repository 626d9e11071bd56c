"""Exceptions that carry a message meant for the user.

Every error a user can cause (bad ε, bad data, an existing run folder, a corrupt
checkpoint) is raised as a subclass of :class:`UserInputError`; the command-line
scripts print its message on one line and exit with status 2.
"""


class UserInputError(ValueError):
    """Bad input from the user: a clear message, nothing written or overwritten."""


class ConfigError(UserInputError):
    """An invalid setting (ε, β, dataset name, shapes, flags)."""


class DataError(UserInputError):
    """A dataset file or array that is missing, unreadable or of the wrong form."""


class RunFolderError(UserInputError):
    """A run folder that already holds a run, lacks files, or is corrupt."""


class CheckpointError(RunFolderError):
    """A checkpoint that cannot be read, refuses to load safely, or belongs to another configuration."""


class FolderInUse(RunFolderError):
    """A run or sweep folder that another process holds (see :mod:`constrained_vae.run.locks`)."""


class ResourceError(UserInputError):
    """The run asked for more memory than there is (a batch too large for the machine)."""


class TrainingDiverged(RuntimeError):
    """The loss or the multiplier became NaN or infinite; the last good checkpoint stays."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped training between two steps, after a checkpoint at ``step``."""

    def __init__(self, step: int, run_dir: str) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step
        self.run_dir = run_dir


class SweepError(UserInputError):
    """A sweep folder that is empty, mixed up, or asked something it cannot answer."""


class UnrecordedSweep(SweepError):
    """A sweep that trained its points but could not write its records (``failures.json``: a full disk).

    ``outcomes`` are its points' outcomes, for the report that still goes to the terminal.
    """

    def __init__(self, message: str, outcomes: list) -> None:
        super().__init__(message)
        self.outcomes = outcomes

"""A run's TensorBoard log, ``RUN/tensorboard/``: what ``metrics.csv`` holds, and pictures at checkpoints.

Written for runs with ``tensorboard`` on (``--tensorboard``), by the loop at the steps where it already
reads the device (log rows and checkpoints), never inside a step. Scalars, at every row of
``metrics.csv`` (its step; nats per sample):

    nll, kl, loss     the row's means over the steps since the previous row
    epsilon           the KL budget in force (ε, capacity's C(t), ControlVAE's set point); absent without one
    lambda | beta     the row's multiplier under its own symbol: λ (constrained), β (fixed β, GECO's 1/λ, …)
    effective_beta    the same number read as the weight on KL per unit of NLL; absent where the
                      multiplier is no effective β (capacity's ±γ)

Images, at every checkpoint (step 0 included), for image data only (:func:`~constrained_vae.run.images.image_shape`):
``reconstructions`` (fixed observations above the decoder's mean at their posterior means) and
``latent_traversals`` (each latent of the first of them swept over −3…3, rows by decreasing average
KL; a text entry of the same name lists the rows). The observations are drawn once, with seed 0, so
every checkpoint shows the same ones.

**Resume.** A resumed run's writer purges every event at or after the checkpoint's step (SummaryWriter's
``purge_step``: a SessionLog START event, which TensorBoard's readers honour), then writes again what
the run logged at that step (its row, if ``metrics.csv`` keeps one, and its images); the steps after
it are logged again as they are retrained. So no step appears twice, and the log matches
``metrics.csv``. Each writer starts a new event file; its name begins with the second it was opened,
and readers take a folder's files in name order, so a writer opens in a later second than the
folder's newest file.

The ``tensorboard`` package is imported only when a log is opened (it takes about a second).
"""

from __future__ import annotations

import importlib.util
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from constrained_vae.errors import ConfigError
from constrained_vae.run import folder
from constrained_vae.run.images import draw_observations, encode, image_shape, kl_per_dimension, mosaic
from constrained_vae.run.images import reconstructions as reconstruct
from constrained_vae.run.images import traversals as traverse
from constrained_vae.run.settings import RunConfig
from constrained_vae.run.trainee import Trainee

INSTALL = 'pip install tensorboard (or install this package with its extra: pip install -e ".[tensorboard]")'
NUM_OBSERVATIONS = 256  # observations encoded at a checkpoint: their mean KL orders the traversal rows
NUM_RECONSTRUCTIONS = 8
TRAVERSAL_STEPS = 11
TRAVERSAL_LIMIT = 3.0  # prior standard deviations
OBSERVATION_SEED = 0
SYMBOL_NAMES = {"λ": "lambda", "β": "beta", "γ": "gamma"}  # a multiplier's symbol as a tag
MAX_WAIT_SECONDS = 2.0  # for a later second than the newest event file's (see the module docstring)
EVENT_FILE = re.compile(r"events\.out\.tfevents\.(\d+)\.")


def check_available() -> None:
    """Raise :class:`ConfigError` saying how to install TensorBoard when its package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL}")


def multiplier_tag(config: RunConfig) -> str:
    """The tag of a run's multiplier: its symbol's name (``lambda``, ``beta``)."""
    symbol = config.objective_type.multiplier_symbol
    return SYMBOL_NAMES.get(symbol, symbol)


class TensorBoardLog:
    """The TensorBoard writer of one run (see the module docstring); :meth:`open` makes one."""

    def __init__(self, writer: Any, trainee: Trainee) -> None:
        self.writer, self.trainee = writer, trainee
        objective = trainee.config.objective_type
        self.multiplier_tag = multiplier_tag(trainee.config)
        self.effective_beta = objective.reports_effective_beta
        self.shape = image_shape(tuple(trainee.dataset.sample_shape), trainee.config.likelihood)
        if self.shape is not None:
            self.observations = draw_observations(trainee.dataset, NUM_OBSERVATIONS, OBSERVATION_SEED)

    @classmethod
    def open(cls, run_dir: Path, trainee: Trainee, *, fresh: bool) -> TensorBoardLog:
        """The log of the run in ``run_dir`` at ``trainee.step``: a new run's, or a resumed run's, whose events
        at or after that step are purged and whose row and images at that step are written again."""
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        log_dir = Path(run_dir) / folder.TENSORBOARD_DIR
        wait_for_a_later_second(log_dir)
        step = trainee.step
        log = cls(SummaryWriter(str(log_dir), purge_step=None if fresh else step), trainee)
        if not fresh:
            rows = [row for row in folder.read_metrics(run_dir) if row["step"] == step]
            if rows:
                log.row(rows[-1])
        log.images()
        return log

    def row(self, row: dict[str, Any]) -> None:
        """A row of ``metrics.csv`` (as written, or as read back: an empty ε is ``""`` or NaN)."""
        step = int(row["step"])
        values = {"nll": row["nll"], "kl": row["kl"], "loss": row["loss"], self.multiplier_tag: row["multiplier"]}
        if row["epsilon"] != "" and not math.isnan(float(row["epsilon"])):
            values["epsilon"] = row["epsilon"]
        if self.effective_beta:
            values["effective_beta"] = row["multiplier"]
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def images(self) -> None:
        """Reconstructions and latent traversals of the model at ``trainee.step`` (image data only)."""
        if self.shape is None:
            return
        model, likelihood, step = self.trainee.model, self.trainee.likelihood, self.trainee.step
        training = model.training
        model.eval()
        try:
            mu, log_var = encode(model, self.observations)
            shown = reconstruct(
                model, likelihood, self.observations[:NUM_RECONSTRUCTIONS], mu[:NUM_RECONSTRUCTIONS], self.shape
            )
            kl = kl_per_dimension(mu, log_var)
            swept = traverse(
                model, likelihood, self.observations[:1], mu[0], kl, self.shape, TRAVERSAL_STEPS, TRAVERSAL_LIMIT
            )
        finally:
            model.train(training)
        formats = "HWC" if len(self.shape) == 3 else "HW"
        pairs = mosaic(np.stack([shown.originals, shown.reconstructions]))
        self.writer.add_image("reconstructions", pairs, step, dataformats=formats)
        self.writer.add_image("latent_traversals", mosaic(swept.grid), step, dataformats=formats)
        rows = ", ".join(f"z{d} ({kl[d]:.2f} nats)" for d in swept.dims)
        self.writer.add_text(
            "latent_traversals",
            f"rows, top to bottom: {rows}; columns: the latent from {-TRAVERSAL_LIMIT:g} to {TRAVERSAL_LIMIT:g}",
            step,
        )

    def flush(self) -> None:
        """Write what is queued to the event file (before a checkpoint: a crash after it loses no logged step)."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def wait_for_a_later_second(log_dir: Path) -> None:
    """Wait (at most :data:`MAX_WAIT_SECONDS`) until the clock is past the second of ``log_dir``'s newest event
    file, so that the next file's name sorts after it."""
    stamps = [int(m.group(1)) for path in log_dir.glob("events.out.tfevents.*") if (m := EVENT_FILE.match(path.name))]
    if not stamps:
        return
    deadline = time.monotonic() + MAX_WAIT_SECONDS
    while int(time.time()) <= max(stamps) and time.monotonic() < deadline:
        time.sleep(0.05)

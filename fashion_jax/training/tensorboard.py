"""`train --tensorboard`: each epoch's history row and learning rate as TensorBoard scalars.

The events go to `WORKDIR/tensorboard` (`tensorboard --logdir WORKDIR/tensorboard`), written with
tensorboardX, which needs no TensorFlow. The step of each scalar is the 1-based epoch of
`history.jsonl`, and the tags are that file's keys plus `learning_rate`, so the two always agree.

A resumed run opens a new event file whose first record asks TensorBoard to drop every step from
the resumed epoch on: epochs a killed run wrote after its last checkpoint are hidden, never shown
twice, and the epochs before it stay as they were.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping
from pathlib import Path

import optax

from fashion_jax.config import ConfigError, TrainConfig
from fashion_jax.model.optim import schedule

FOLDER = "tensorboard"
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def check_available() -> None:
    """Fail before any training (and before the workdir is touched) when the writer is missing."""
    if importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError(
            "--tensorboard needs tensorboardX: pip install 'fashion-jax[tensorboard]'"
        )


def epoch_learning_rate(rate: optax.ScalarOrSchedule, steps_done: int) -> float:
    """The rate the epoch's last update used (update number `steps_done`, counted from 1)."""
    return float(rate(max(steps_done - 1, 0))) if callable(rate) else float(rate)


class EpochBoard:
    """One writer for one fit() call; `first_epoch` is how many epochs were already done."""

    def __init__(
        self, workdir: Path, config: TrainConfig, steps_per_epoch: int, first_epoch: int
    ) -> None:
        check_available()
        # Imported here, not at the top: an optional dependency that only --tensorboard needs.
        from tensorboardX import SummaryWriter

        self.rate = schedule(config, config.epochs * steps_per_epoch)
        if first_epoch:
            _wait_to_be_read_last(Path(workdir) / FOLDER)
        self.writer = SummaryWriter(str(Path(workdir) / FOLDER), purge_step=first_epoch + 1)

    def write(self, row: Mapping[str, float], steps_done: int) -> None:
        """The epoch's scalars, flushed at once so a kill loses no finished epoch."""
        step = int(row["epoch"])
        for tag in METRICS:
            self.writer.add_scalar(tag, row[tag], step)
        self.writer.add_scalar("learning_rate", epoch_learning_rate(self.rate, steps_done), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _wait_to_be_read_last(folder: Path) -> None:
    """Start the resumed run's event file in a later second than every file already there.

    TensorBoard reads a folder's event files in name order, and a name starts with the second it
    was created in: a resume within a second of the killed run's last file would sort first, and
    the purge it records would not reach that file's orphaned epochs. Waits at most a second.
    """
    stamps = [p.name.split(".")[3] for p in folder.glob("events.out.tfevents.*")]
    newest = max((int(s) for s in stamps if s.isdigit()), default=None)
    if newest is not None and 0 < newest + 1 - time.time() <= 1.0:
        time.sleep(newest + 1 - time.time())

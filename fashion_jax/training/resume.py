"""What makes a killed run resumable bit for bit: guarded saves, checked restores, one fingerprint.

fit() saves `{"train": TrainState, "sums": EpochSums}` plus JSON meta through `Saver` and gets it
back through `restore`. The rules, each one learned the hard way (see docs/RELIABILITY.md):
  - never save a non-finite state: check the loss flag and the arrays before every save;
  - never save into a workdir that vanished (Orbax would quietly recreate half of it);
  - a checkpoint must agree with this run (rows, batch size, step arithmetic) or it is not ours;
  - after a restore, steps "from the future" (best/ written before the latest state was, or newer
    latest steps that failed to restore) are deleted, because the resumed run writes them again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from fashion_jax.errors import FashionJaxError
from fashion_jax.model.state import EpochSums
from fashion_jax.runtime import distributed
from fashion_jax.runtime.numerics import first_nonfinite
from fashion_jax.storage import checkpoint as ckpt
from fashion_jax.storage.workdir import WorkdirError
from fashion_jax.training import early_stopping as es

log = logging.getLogger("fashion_jax")
# Bump when the meta keys change; an unknown format is refused, not guessed at.
# 2: the running sums are EpochSums under "sums" (1: a dict under "acc").
META_FORMAT = 2


class NonFiniteLossError(FashionJaxError, RuntimeError):
    """The loss became NaN or Inf; the message names the epoch and step."""


class TrainingInterrupted(RuntimeError):
    """A stop was requested (SIGINT/SIGTERM); the state was saved first."""


@dataclass
class Progress:
    """Everything about where a run is, apart from the arrays."""

    epoch: int  # completed epochs
    history: list[dict]
    stop: es.StopState

    def unfinished(self, epochs: int) -> bool:
        """More epochs to train: fewer than `epochs` done and early stopping has not fired."""
        return self.epoch < epochs and not self.stop.should_stop


def check_finite(
    state: Any, sums: EpochSums, epoch: int, steps_per_epoch: int, skip_nonfinite: int
) -> None:
    """Raise NonFiniteLossError unless the state is safe to keep training from and to save.

    Without skipping, the first non-finite batch loss stops the run (the step records it on the
    device, so this costs one scalar read). With --skip-nonfinite N, optax.apply_if_finite drops
    bad updates and only gives up (applying NaN) after N in a row, so the arrays are what we check.
    """
    first_bad = int(sums.first_bad_step)
    where = lambda g: (
        f"epoch {g // steps_per_epoch + 1}, step {g % steps_per_epoch + 1} (global step {g + 1})"
    )
    if first_bad >= 0 and skip_nonfinite == 0:
        raise NonFiniteLossError(
            f"non-finite loss at {where(first_bad)}; the last good and best checkpoints "
            "are kept; lower --learning-rate or pass --skip-nonfinite N"
        )
    if first_nonfinite(state) is not None:
        first = f", first bad loss at {where(first_bad)}" if first_bad >= 0 else ""
        raise NonFiniteLossError(
            f"non-finite parameters in epoch {epoch + 1} (more than {skip_nonfinite} "
            f"non-finite updates in a row{first}); the last good and best checkpoints are "
            "kept; lower --learning-rate"
        )


def check_epoch_means(row: dict, epoch: int, skip_nonfinite: int) -> None:
    """Every batch loss can be finite while the epoch's float32 sums overflow (a diverged model:
    losses near 1e37). Such a row would poison history.jsonl and the best-epoch choice, so stop.
    With --skip-nonfinite only val_loss is judged: an epoch whose every batch was skipped has no
    training mean (NaN) and is still a valid row."""
    keys = ("val_loss",) if skip_nonfinite else ("loss", "val_loss")
    bad = [k for k in keys if first_nonfinite(row[k]) is not None]
    if bad:
        raise NonFiniteLossError(
            f"non-finite {' and '.join(bad)} over epoch {epoch + 1} (the model diverged); "
            "the last good and best checkpoints are kept; lower --learning-rate"
        )


class Saver:
    """The only way fit() writes checkpoints: every save is checked first (see module doc)."""

    def __init__(
        self,
        checkpoints: ckpt.RunCheckpoints,
        workdir: Path,
        *,
        n_train: int,
        batch_size: int,
        steps_per_epoch: int,
        skip_nonfinite: int,
    ):
        self.checkpoints, self.workdir = checkpoints, Path(workdir)
        self.n_train, self.batch_size, self.steps_per_epoch = n_train, batch_size, steps_per_epoch
        self.skip_nonfinite = skip_nonfinite

    def _check(self, state: Any, sums: EpochSums, epoch: int) -> None:
        # Only process 0 writes config.json (another host may not share the folder); all check the
        # folder.
        marker = self.workdir / "config.json" if distributed.is_leader() else self.workdir
        if not marker.exists():
            raise WorkdirError(
                f"{self.workdir}: the workdir (or its config.json) disappeared during training; "
                "nothing more was written"
            )
        check_finite(state, sums, epoch, self.steps_per_epoch, self.skip_nonfinite)

    def save_state(
        self, step: int, state: Any, sums: EpochSums, progress: Progress, mid_epoch: bool
    ) -> None:
        """Full state after `step` steps; `progress.epoch` completed epochs (one more runs if
        mid_epoch)."""
        self._check(state, sums, progress.epoch)
        meta = {
            "format": META_FORMAT,
            "epoch": progress.epoch,
            "mid_epoch": mid_epoch,
            "history": progress.history,
            "stop": progress.stop.to_dict(),
            "n_train": self.n_train,
            "batch_size": self.batch_size,
        }
        self.checkpoints.save_state(step, {"train": state, "sums": sums}, meta)

    def save_best(self, epoch: int, state: Any, sums: EpochSums, meta: dict) -> None:
        self._check(state, sums, epoch - 1)
        self.checkpoints.save_best(epoch, state.params, meta)


class BestInMemory:
    """fit(checkpoints="end"): RunCheckpoints' interface, writing nothing while the run trains.

    The best params are copied to the host (the next step donates the live ones; a device copy
    would compile one program per leaf shape), so restore_best works; fit writes them to best/
    once at the end.
    """

    def __init__(self) -> None:
        self.best: tuple[Any, dict, int] | None = None

    def save_state(self, step: int, tree: Any, meta: dict) -> None:
        pass

    def save_best(self, epoch: int, params: Any, meta: dict) -> None:
        self.best = (jax.device_get(params), dict(meta), epoch)

    def restore_state(self, target: Any, validate: Any = None) -> None:
        return None

    def restore_best(self, target: Any) -> tuple[Any, dict, int] | None:
        if self.best is None:
            return None
        params, meta, epoch = self.best
        return (
            jax.tree.map(lambda host, like: jax.device_put(host, like.sharding), params, target),
            meta,
            epoch,
        )

    def prune(self, latest_after: int, best_after: int) -> None:
        pass

    def wait(self) -> None:
        pass

    def close(self) -> None:
        pass


def restore(
    checkpoints: ckpt.RunCheckpoints,
    state: Any,
    sums: EpochSums,
    *,
    n_train: int,
    batch_size: int,
    steps_per_epoch: int,
) -> tuple[Any, EpochSums, Progress] | None:
    """(state, sums, progress) from the newest intact checkpoint, or None when there is none.

    `state` and `sums` are freshly initialised templates: they give the abstract restore target
    (shapes, dtypes and this host's shardings) and the sums used when the checkpoint is at an
    epoch boundary.
    """

    def validate(step: int, tree: Any, meta: dict) -> None:
        _check_meta(
            step,
            tree,
            meta,
            n_train=n_train,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
        )

    restored = checkpoints.restore_state({"train": state, "sums": sums}, validate=validate)
    if restored is None:
        checkpoints.prune(
            latest_after=-1, best_after=0
        )  # nothing to resume: a half-run's best/ is stale
        return None
    tree, meta, step = restored
    progress = Progress(
        epoch=int(meta["epoch"]),
        history=list(meta["history"]),
        stop=es.StopState.from_dict(meta["stop"]),
    )
    # The resumed run rewrites any step after this one; stale copies would block those saves.
    checkpoints.prune(latest_after=step, best_after=progress.epoch)
    return tree["train"], tree["sums"] if meta["mid_epoch"] else sums, progress


def _check_meta(
    step: int, tree: Any, meta: dict, *, n_train: int, batch_size: int, steps_per_epoch: int
) -> None:
    """Refuse a checkpoint that does not describe this run: mismatches the user caused raise
    CheckpointMismatch (no point trying older steps); internal inconsistencies mean damage."""
    try:
        if meta.get("format") != META_FORMAT:
            raise ckpt.CheckpointError(
                f"step {step}: unknown checkpoint format {meta.get('format')!r}"
            )
        if (meta["n_train"], meta["batch_size"]) != (n_train, batch_size):
            raise ckpt.CheckpointMismatch(
                f"the checkpoint was written for {meta['n_train']} training rows in batches of "
                f"{meta['batch_size']}, this run has {n_train} in batches of {batch_size}; "
                "resume with the same --subset and --batch-size, or pass --overwrite"
            )
        epoch, mid, history = int(meta["epoch"]), bool(meta["mid_epoch"]), meta["history"]
        es.StopState.from_dict(meta["stop"])
        sums = tree["sums"]
        pos, saved_step, n = int(sums.next_batch), int(tree["train"].step), int(sums.rows)
    except ckpt.CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ckpt.CheckpointError(
            f"step {step}: meta is not ours ({err.__class__.__name__}: {err})"
        ) from None
    expected = epoch * steps_per_epoch + (pos if mid else 0)
    if not (
        isinstance(history, list)
        and len(history) == epoch
        and all(isinstance(r, dict) for r in history)
        and n == n_train
        and 0 <= pos <= steps_per_epoch
        and saved_step == step == expected
    ):
        raise ckpt.CheckpointError(
            f"step {step}: counters disagree (epoch {epoch}, position {pos}, "
            f"saved step {saved_step}, {len(history)} history rows)"
        )

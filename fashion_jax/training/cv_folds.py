"""The folds of a cross-validation as data and programs: rows, padding, placement, fold step.

Each fold's training and held-out rows padded to one shared length, placed with a device per fold
when there are enough devices, and the vmapped train and eval programs over the fold axis. Apart
from cv.py, which runs the epochs and scores the folds, because this is what makes k folds one
program: the part to read when a fold stops matching a lone fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fashion_jax.config import TrainConfig
from fashion_jax.data.batching import pad_indices
from fashion_jax.data.splits import kfold_indices
from fashion_jax.model.state import EpochSums, epoch_sums
from fashion_jax.training import steps
from fashion_jax.training.evaluate import batch_sums


def pad_rows(index_lists: list[np.ndarray], length: int) -> np.ndarray:
    """(k, length) int32, each row one fold's indices padded with 0 (the steps mask rows past n)."""
    return np.stack([pad_indices(idx, length) for idx in index_lists])


def _shardings(folds: int) -> tuple[NamedSharding | None, NamedSharding | None]:
    """(fold-axis, replicated) shardings when there is a device per fold; (None, None): default
    device."""
    devices = jax.devices()
    if folds < 2 or len(devices) < folds:
        return None, None
    mesh = Mesh(np.array(devices[:folds]), ("fold",))
    return NamedSharding(mesh, P("fold")), NamedSharding(mesh, P())


def fold_step(model: Any, tx: Any, seed: int, batch_size: int) -> Callable:
    """steps.train_step_fn vmapped over the fold axis of state, running sums and order:
    `(state, sums, order, images, labels) -> (state, sums, loss)`, the loss one per fold."""
    step = steps.train_step_fn(model, tx, seed, batch_size)

    # shadows the outer name on purpose: it names the compiled program, jit_fold_step
    def fold_step(state, sums, order, images, labels):
        new_state, new_sums, metrics = step(state, sums, order, images, labels)
        # A fold past its last batch must not move: a zero gradient still moves Adam/momentum
        # parameters and advances the dropout key, so the fold would no longer match a lone fit.
        live = sums.next_batch * batch_size < sums.rows
        keep = lambda new, old: jnp.where(live, new, old)  # noqa: E731
        # the loss is the call's marker for steps.InFlight: state and sums are donated onwards
        return (
            jax.tree.map(keep, new_state, state),
            jax.tree.map(keep, new_sums, sums),
            metrics["loss"],
        )

    return jax.vmap(fold_step, in_axes=(0, 0, 0, None, None))


def fold_eval(model: Any, batch_size: int) -> Callable:
    """`(params, rows, n_valid, start, images, labels) -> (loss_sum, correct)` per fold, vmapped."""

    # shadows the outer name on purpose: it names the compiled program, jit_fold_eval
    def fold_eval(params, rows, n_valid, start, images, labels):
        mask = start + jnp.arange(batch_size) < n_valid  # held-out sets differ in size by one
        idx = jax.lax.dynamic_slice(rows, (start,), (batch_size,))
        return batch_sums(model, params, images, labels, idx, mask)

    return jax.vmap(fold_eval, in_axes=(0, 0, 0, None, None, None))


@dataclass
class Folds:
    """The folds' rows and sizes, their padded lengths, and the device arrays the programs read."""

    splits: list[tuple[np.ndarray, np.ndarray]]
    n_train: list[int]
    n_held: list[int]
    eval_batch: int
    steps_per_epoch: int
    order_len: int
    held_len: int
    by_fold: NamedSharding | None
    images: jax.Array
    labels: jax.Array
    held: jax.Array
    n_held_d: jax.Array

    def fresh_sums(self) -> EpochSums:  # each fold counts its own valid rows
        per_fold = [jax.device_get(epoch_sums(n)) for n in self.n_train]
        return jax.device_put(jax.tree.map(lambda *xs: np.stack(xs), *per_fold), self.by_fold)


def prepare_folds(
    config: TrainConfig,
    images: np.ndarray,
    labels: np.ndarray,
    folds: int,
    shuffle: bool,
    seed: int,
) -> Folds:
    """sklearn's KFold splits of `labels`, padded and placed for the fold programs."""
    splits = kfold_indices(len(labels), folds, seed=seed, shuffle=shuffle)
    n_train, n_held = [len(tr) for tr, _ in splits], [len(va) for _, va in splits]
    eb = min(config.eval_batch_size, max(n_held))  # no eval of pure padding
    steps_per_epoch = -(
        -max(n_train) // config.batch_size
    )  # a smaller fold idles through its extra step
    held_len = -(-max(n_held) // eb) * eb
    by_fold, replicated = _shardings(folds)
    return Folds(
        splits=splits,
        n_train=n_train,
        n_held=n_held,
        eval_batch=eb,
        steps_per_epoch=steps_per_epoch,
        order_len=steps_per_epoch * config.batch_size,
        held_len=held_len,
        by_fold=by_fold,
        images=jax.device_put(np.asarray(images), replicated),
        labels=jax.device_put(np.asarray(labels, np.int32), replicated),
        held=jax.device_put(pad_rows([va for _, va in splits], held_len), by_fold),
        n_held_d=jax.device_put(np.asarray(n_held, np.int32), by_fold),
    )

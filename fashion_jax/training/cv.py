"""`cross_validate(config, images, labels, folds)`: k-fold cross-validation, all folds in one
program.

The k fold models are stacked on a leading fold axis and trained together by `jax.vmap` of the
one pure train step (steps.train_step_fn), so a CV costs one compile and one dispatch per batch,
not k of each. Each fold sees exactly what it would see trained alone: its own training rows, in
the order batching.epoch_order gives for its own size, with the same init and dropout seed. The
folds' padded rows, their placement and the vmapped programs are in cv_folds.py; this module
compiles them, runs the epochs and scores the folds.

Cost note: dense models gain (one dispatch per batch for all folds); on XLA:CPU a vmapped conv with
per-fold kernels becomes a grouped convolution, measured ~4x slower than k separate CNN steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from fashion_jax import config as config_lib
from fashion_jax.config import ModelConfig, TrainConfig
from fashion_jax.data.batching import EpochOrders, permutation_fn
from fashion_jax.errors import FashionJaxError
from fashion_jax.model.models import build_model, init_fn
from fashion_jax.model.optim import make_optimizer
from fashion_jax.model.state import EpochSums, create_train_state
from fashion_jax.runtime.compile import compile_ahead
from fashion_jax.training import steps
from fashion_jax.training.cv_folds import Folds, fold_eval, fold_step, pad_rows, prepare_folds


class NonFiniteCVError(FashionJaxError, FloatingPointError):
    """A fold's loss became NaN or Inf; the message names the fold and step."""


@dataclass
class CVResult:
    folds: int
    fold_accuracies: list[float]
    fold_losses: list[float]
    mean_accuracy: float
    std_accuracy: float
    fold_sizes: list[int]  # held-out rows per fold
    seconds: float  # everything from the call to the result, compiles included
    compile_seconds: float
    train_seconds: float
    params: Any = field(default=None, repr=False)  # stacked: every leaf has a leading fold axis

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "params"}


def cv_config(model: str | ModelConfig = "logreg", **overrides: Any) -> TrainConfig:
    """The "cv" preset for `model` (a name: its defaults; or a ModelConfig), then overrides."""
    if isinstance(model, str):
        return config_lib.preset("cv", model=model, **overrides)
    return dataclasses.replace(config_lib.preset("cv", **overrides), model=model)


def cross_validate(
    config: TrainConfig,
    images: np.ndarray,
    labels: np.ndarray,
    folds: int = 5,
    *,
    shuffle: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> CVResult:
    """Train `config.model` on each split of sklearn's KFold(folds, shuffle=shuffle,
    random_state=seed)
    and score it on that fold's held-out rows. Every fold starts from the same config.seed init."""
    t_start = time.perf_counter()
    config = config_lib.validate(config)
    f = prepare_folds(config, images, labels, folds, shuffle, seed)
    model = build_model(config.model)
    tx = make_optimizer(config, config.epochs * f.steps_per_epoch)
    t_compile = time.perf_counter()
    sizes = sorted(set(f.n_train))  # folds of equal size share one draw
    # XLA compiles release the GIL, so the programs compile side by side; the eval program, needed
    # last, compiles while the folds train.
    with ThreadPoolExecutor(max_workers=4) as pool, contextlib.ExitStack() as stack:
        later = {n: stack.enter_context(EpochOrders(n, config.seed, config.epochs)) for n in sizes}
        state, sums, perms, train_step, eval_shape = _compile_training(
            pool, f, model, tx, config, sizes
        )
        compile_seconds = (
            time.perf_counter() - t_compile
        )  # the wait before training (eval's compile is hidden)
        # submitted only now: on 2 cores, compiling it alongside the programs needed first delayed
        # them
        eval_c = pool.submit(
            compile_ahead,
            jax.jit(fold_eval(model, f.eval_batch)),
            *(eval_shape, f.held, f.n_held_d, np.int32(0), f.images, f.labels),
        )
        for orders in later.values():
            orders.prefetch(
                1
            )  # epoch 0's orders came with the init; epoch 1's are drawn while it trains
        for epoch in range(config.epochs):
            if epoch:  # each get() starts drawing the next epoch's
                perms = {n: orders.get(epoch) for n, orders in later.items()}
            state, sums = _train_epoch(
                f, train_step, state, sums, perms, epoch, config.epochs, progress
            )
        train_seconds = time.perf_counter() - t_compile - compile_seconds
        eval_step = eval_c.result()
    return _score(
        f,
        eval_step,
        state.params,
        seconds=time.perf_counter() - t_start,
        compile_seconds=compile_seconds,
        train_seconds=train_seconds,
    )


def _compile_training(
    pool: ThreadPoolExecutor, f: Folds, model: Any, tx: Any, config: TrainConfig, sizes: list[int]
) -> tuple[Any, EpochSums, dict, Any, Any]:
    """The stacked initial states, first sums, epoch-0 orders, the compiled fold step, and the
    abstract params the eval program is lowered for."""
    folds = len(f.splits)
    # Every fold gets the same seed (sklearn's fixed random_state); vmapping gives the fold axis.
    seeds = np.full((folds,), config.seed, np.int32)
    init = jax.vmap(lambda s: create_train_state(init_fn(model)(s), tx))
    sums = f.fresh_sums()
    order_shape = jax.ShapeDtypeStruct((folds, f.order_len), jnp.int32, sharding=f.by_fold)

    def init_and_first_orders(seeds, seed):
        # One program: compiled apart, the epoch-0 permutation cost ~0.1-0.2 s more CPU (fixed
        # costs,
        # and tracing the random bits twice). Same integer bits as batching.epoch_order's own
        # program.
        return init(seeds), [permutation_fn(n)(seed, jnp.int32(0)) for n in sizes]

    # The init's output shapes stand in for a trace of it.
    init_c = compile_ahead(
        jax.jit(init_and_first_orders), seeds, np.int32(config.seed), tuning="one_shot"
    )
    state_shape = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=f.by_fold), init_c.out_info[0]
    )
    step_c = pool.submit(
        compile_ahead,
        jax.jit(fold_step(model, tx, config.seed, config.batch_size), donate_argnums=(0, 1)),
        *(state_shape, sums, order_shape, f.images, f.labels),
    )
    state, first = init_c(seeds, np.int32(config.seed))
    state, perms = jax.device_put(state, f.by_fold), dict(zip(sizes, jax.device_get(first)))
    return state, sums, perms, step_c.result(), state_shape.params


def _train_epoch(
    f: Folds,
    train_step: Any,
    state: Any,
    sums: EpochSums,
    perms: dict,
    epoch: int,
    epochs: int,
    progress: bool,
) -> tuple[Any, EpochSums]:
    # Each fold's own permutation for its own size, as a lone fit of that fold would draw it.
    order = jax.device_put(
        pad_rows([tr[perms[len(tr)]] for tr, _ in f.splits], f.order_len), f.by_fold
    )
    # As fit's Stepper: with a device per fold, too many unfinished calls can deadlock XLA:CPU.
    in_flight = steps.InFlight()
    for _ in tqdm(
        range(f.steps_per_epoch),
        desc=f"cv epoch {epoch + 1}/{epochs}",
        disable=not progress,
        leave=False,
        mininterval=0.5,
    ):
        state, sums, loss = train_step(state, sums, order, f.images, f.labels)
        in_flight.add(loss)
    bad = np.asarray(sums.first_bad_step)
    if (bad >= 0).any():
        i = int(np.flatnonzero(bad >= 0)[0])
        raise NonFiniteCVError(
            f"non-finite loss in fold {i + 1}, epoch {epoch + 1}, "
            f"step {int(bad[i]) + 1}; lower the learning rate"
        )
    return state, f.fresh_sums()


def _score(f: Folds, eval_step: Any, params: Any, **timings: float) -> CVResult:
    """Each fold's loss and accuracy on its held-out rows."""
    sums = jax.device_get(
        [
            eval_step(params, f.held, f.n_held_d, np.int32(s), f.images, f.labels)
            for s in range(0, f.held_len, f.eval_batch)
        ]
    )
    loss_sum = np.sum([np.asarray(ls, np.float64) for ls, _ in sums], axis=0)
    correct = np.sum([np.asarray(c, np.int64) for _, c in sums], axis=0)
    accuracies = [int(c) / n for c, n in zip(correct, f.n_held)]
    return CVResult(
        folds=len(f.splits),
        fold_accuracies=accuracies,
        fold_losses=[float(s) / n for s, n in zip(loss_sum, f.n_held)],
        mean_accuracy=float(np.mean(accuracies)),
        std_accuracy=float(np.std(accuracies)),
        fold_sizes=f.n_held,
        params=params,
        **timings,
    )

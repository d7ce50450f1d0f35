"""The one train step that serves every model, and the stepper that runs it over an epoch.

The dataset lives on the device as uint8; a step gathers its batch by index and scales it inside
jit, so no image crosses from host to device per step. Every batch has the same shape (the last
partial batch is padded and masked), so each step compiles exactly once.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fashion_jax.model.state import EpochSums, TrainState
from fashion_jax.runtime.compile import compile_ahead
from fashion_jax.training.evaluate import forward, gather_batch, loops_in_one_program, masked_sums

DROPOUT_STREAM = 1  # fold_in tag separating dropout keys from init and data-order keys
# How many train calls the host may dispatch before the devices finish them. XLA's PjRt client lets
# 32 programs per device be in flight and blocks the launch of the next; on XLA:CPU with several
# devices that block can deadlock a step's gradient all-reduce until XLA aborts after 40 s
# (docs/SCALING.md). 8 stays far below it and still keeps the devices fed: the host only ever waits
# for a call dispatched 8 calls earlier.
MAX_CALLS_IN_FLIGHT = 8


def train_step_fn(
    model: nn.Module,
    tx: optax.GradientTransformation,
    seed: int,
    batch_size: int,
    constrain: Callable[[jax.Array], jax.Array] = lambda x: x,
) -> Callable:
    """Pure `train_step(state, sums, order, images, labels) -> (state, sums, metrics)`; jit or vmap
    it.

    `order` is the epoch's padded permutation; the step reads its batch `sums.next_batch`.
    `constrain` places the batch (identity on one device; a data-axis sharding on a mesh).
    """

    def train_step(
        state: TrainState, sums: EpochSums, order: jax.Array, images: jax.Array, labels: jax.Array
    ):
        start = sums.next_batch * batch_size
        idx = jax.lax.dynamic_slice(order, (start,), (batch_size,))
        mask = constrain(start + jnp.arange(batch_size) < sums.rows)
        x, y = gather_batch(images, labels, constrain(idx))
        # derived inside the program: an eager fold_in here would compile on every process start
        rng = jax.random.fold_in(
            jax.random.fold_in(jax.random.key(seed), DROPOUT_STREAM), state.step
        )

        def loss_fn(params):
            logits = forward(model, params, x, train=True, rngs={"dropout": rng})
            loss_sum, correct = masked_sums(logits, y, mask)
            return loss_sum / jnp.maximum(jnp.sum(mask), 1), (loss_sum, correct)

        (loss, (loss_sum, correct)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        count = jnp.sum(mask.astype(jnp.int32))
        bad = ~jnp.isfinite(loss)
        # A non-finite batch stays out of the epoch's means (it is recorded in first_bad_step), so
        # with --skip-nonfinite the logged training loss describes the updates actually applied.
        keep = lambda v: jnp.where(bad, jnp.zeros_like(v), v)  # noqa: E731
        sums = sums.replace(
            next_batch=sums.next_batch + 1,
            loss_sum=sums.loss_sum + keep(loss_sum),
            correct=sums.correct + keep(correct),
            count=sums.count + keep(count),
            first_bad_step=jnp.where(
                (sums.first_bad_step < 0) & bad, state.step, sums.first_bad_step
            ),
        )
        state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
        return state, sums, {"loss": loss, "accuracy": correct / jnp.maximum(count, 1)}

    return train_step


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    seed: int,
    batch_size: int,
    constrain: Callable[[jax.Array], jax.Array] = lambda x: x,
    steps_per_call: int = 1,
) -> Callable:
    """The jitted train step, run `steps_per_call` times per dispatch; state and sums are donated.

    Several steps per call (a lax.scan of the same step) pay the host dispatch once; that wins
    for small models, while XLA:CPU runs a conv net faster one step per call (see steps_per_call).
    """
    step = train_step_fn(model, tx, seed, batch_size, constrain)
    if steps_per_call == 1:
        return jax.jit(step, donate_argnums=(0, 1))

    def multi_step(
        state: TrainState, sums: EpochSums, order: jax.Array, images: jax.Array, labels: jax.Array
    ):
        def body(carry, _):
            state, sums, metrics = step(*carry, order, images, labels)
            return (state, sums), metrics

        (state, sums), metrics = jax.lax.scan(body, (state, sums), length=steps_per_call)
        return state, sums, jax.tree.map(lambda m: m[-1], metrics)

    return jax.jit(multi_step, donate_argnums=(0, 1))


def steps_per_call(convolutional: bool, backend: str, steps_per_epoch: int) -> int:
    """How many train steps one dispatch runs (evaluate.loops_in_one_program says why).

    On XLA:CPU a dense/MLP model scans 100 steps per call: enough to pay the host dispatch once
    per chunk, while a resumed run still finds its saved position at a chunk boundary.
    """
    if not loops_in_one_program(convolutional, backend):
        return 1
    return min(100, steps_per_epoch) if backend == "cpu" else steps_per_epoch


class InFlight:
    """At most `limit` dispatched calls unfinished: past that, wait for the oldest one."""

    def __init__(self, limit: int = MAX_CALLS_IN_FLIGHT):
        self.limit = limit
        self._pending: collections.deque = collections.deque()

    def add(self, marker: Any) -> None:
        """Record a call by one of its outputs; it must not be donated to a later call."""
        self._pending.append(marker)
        while len(self._pending) > self.limit:
            self._pending.popleft().block_until_ready()

    def __len__(self) -> int:
        return len(self._pending)


class Stepper:
    """Runs an epoch as chunks of `k` steps (one compiled scan) plus single steps for the remainder.

    Chunks start at position 0 of each epoch, so a run resumed at a saved position (always a chunk
    boundary) repeats the uninterrupted run's exact sequence of compiled calls. Calling it runs one
    chunk with at most MAX_CALLS_IN_FLIGHT calls unfinished (`InFlight`).
    """

    def __init__(
        self,
        model: nn.Module,
        tx: optax.GradientTransformation,
        seed: int,
        batch_size: int,
        steps_per_epoch: int,
        k: int,
        example_args: tuple,
        constrain: Callable[[jax.Array], jax.Array] = lambda x: x,
    ):
        self.k, self.steps_per_epoch, self._example = max(1, k), steps_per_epoch, example_args
        self._build = lambda n: make_train_step(model, tx, seed, batch_size, constrain, n)
        self._compiled: dict[int, Any] = {}
        self.in_flight = InFlight()

    def __call__(self, n: int, state: TrainState, sums: EpochSums, *data: jax.Array) -> tuple:
        """`n` steps from (state, sums) over (order, images, labels): (state, sums, metrics)."""
        state, sums, metrics = self.compiled(n)(state, sums, *data)
        self.in_flight.add(metrics["loss"])  # state and sums are donated to the next call
        return state, sums, metrics

    def compiled(self, n: int) -> Any:
        if n not in self._compiled:  # ahead-of-time: a shape change would raise, never recompile
            self._compiled[n] = compile_ahead(self._build(n), *self._example, tuning="hot")
        return self._compiled[n]

    def plan(self, pos: int) -> list[int]:
        """Chunk sizes that take the epoch from batch `pos` to its end."""
        full = self.steps_per_epoch // self.k * self.k
        chunks = [self.k] * ((full - pos) // self.k) if pos < full else []
        return chunks + [1] * (self.steps_per_epoch - max(pos, full))

    def warm(self) -> None:
        for n in set(self.plan(0)):
            self.compiled(n)

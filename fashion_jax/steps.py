"""The one train step and the one eval step that serve every model.

The dataset lives on the device as uint8; a step gathers its batch by index and scales it
inside jit, so no image crosses from host to device per step. Every batch has the same shape
(the last partial batch is padded and masked), so each step compiles exactly once.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fashion_jax.compile import compile_hot

DROPOUT_STREAM = 1  # fold_in tag separating dropout keys from init and data-order keys


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # global step: drives dropout keys, so resume repeats them exactly
    params: Any
    opt_state: Any


def create_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def epoch_accumulator(n_valid: int) -> dict[str, jax.Array]:
    """Per-epoch running sums, kept on device so the loop never syncs with the host per step."""
    i32 = lambda v: np.array(v, np.int32)  # noqa: E731
    # one transfer of NumPy scalars: six eager jnp scalars would be six dispatches
    return jax.device_put({"pos": i32(0), "n": i32(n_valid), "loss_sum": np.array(0, np.float32),
                           "correct": i32(0), "count": i32(0), "first_bad_step": i32(-1)})


def gather_batch(images: jax.Array, labels: jax.Array, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    return images[idx].astype(jnp.float32) / 255.0, labels[idx]


def masked_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of cross-entropy, number correct) over the unmasked rows."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels) & mask
    return jnp.sum(jnp.where(mask, ce, 0.0)), jnp.sum(correct.astype(jnp.int32))


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, seed: int, batch_size: int,
                    constrain: Callable[[jax.Array], jax.Array] = lambda x: x, steps_per_call: int = 1) -> Callable:
    """The jitted train step, run `steps_per_call` times per dispatch; state and sums are donated.

    Several steps per call (a lax.scan of the same step) pay the host dispatch once; that wins
    for small models, while XLA:CPU runs a conv net faster one step per call (see dispatch_policy).
    """
    step = train_step_fn(model, tx, seed, batch_size, constrain)
    if steps_per_call == 1:
        return jax.jit(step, donate_argnums=(0, 1))

    def multi_step(state: TrainState, acc: dict, order: jax.Array, images: jax.Array, labels: jax.Array):
        def body(carry, _):
            state, acc, metrics = step(*carry, order, images, labels)
            return (state, acc), metrics

        (state, acc), metrics = jax.lax.scan(body, (state, acc), length=steps_per_call)
        return state, acc, jax.tree.map(lambda m: m[-1], metrics)

    return jax.jit(multi_step, donate_argnums=(0, 1))


def train_step_fn(model: nn.Module, tx: optax.GradientTransformation, seed: int, batch_size: int,
                  constrain: Callable[[jax.Array], jax.Array] = lambda x: x) -> Callable:
    """Pure `train_step(state, acc, order, images, labels) -> (state, acc, metrics)`; jit or vmap it.

    `order` is the epoch's padded permutation; the step reads its slice at acc["pos"].
    `constrain` places the batch (identity on one device; a data-axis sharding on a mesh).
    """

    def train_step(state: TrainState, acc: dict, order: jax.Array, images: jax.Array, labels: jax.Array):
        start = acc["pos"] * batch_size
        idx = jax.lax.dynamic_slice(order, (start,), (batch_size,))
        mask = constrain(start + jnp.arange(batch_size) < acc["n"])
        x, y = gather_batch(images, labels, constrain(idx))
        # derived inside the program: an eager fold_in here would compile on every process start
        rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), DROPOUT_STREAM), state.step)

        def loss_fn(params):
            logits = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
            loss_sum, correct = masked_sums(logits, y, mask)
            return loss_sum / jnp.maximum(jnp.sum(mask), 1), (loss_sum, correct)

        (loss, (loss_sum, correct)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        count = jnp.sum(mask.astype(jnp.int32))
        bad = ~jnp.isfinite(loss)
        # A non-finite batch stays out of the epoch's means (it is recorded in first_bad_step), so
        # with --skip-nonfinite the logged training loss describes the updates actually applied.
        keep = lambda x: jnp.where(bad, jnp.zeros_like(x), x)
        acc = {**acc, "pos": acc["pos"] + 1, "loss_sum": acc["loss_sum"] + keep(loss_sum),
               "correct": acc["correct"] + keep(correct), "count": acc["count"] + keep(count),
               "first_bad_step": jnp.where((acc["first_bad_step"] < 0) & bad, state.step, acc["first_bad_step"])}
        state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
        return state, acc, {"loss": loss, "accuracy": correct / jnp.maximum(count, 1)}

    return train_step


def make_eval_step(model: nn.Module, batch_size: int) -> Callable:
    """`eval_step(params, images, labels, start) -> (loss_sum, correct)` over rows start..start+batch_size."""

    def eval_step(params, images, labels, start):
        rows = start + jnp.arange(batch_size)
        mask = rows < images.shape[0]
        x, y = gather_batch(images, labels, jnp.minimum(rows, images.shape[0] - 1))
        return masked_sums(model.apply({"params": params}, x, train=False), y, mask)

    return EvalStep(jax.jit(eval_step))


class EvalStep:
    """The jitted eval step, compiled ahead of time (with the hot options) once per split shape."""

    def __init__(self, jitted: Any):
        self._jitted, self._compiled = jitted, {}

    def compiled(self, params: Any, images: jax.Array, labels: jax.Array) -> Any:
        key = (images.shape, labels.shape)
        if key not in self._compiled:
            self._compiled[key] = compile_hot(self._jitted, params, images, labels, np.int32(0))
        return self._compiled[key]

    def __call__(self, params: Any, images: jax.Array, labels: jax.Array, start: int) -> Any:
        # a NumPy scalar: jnp.int32(start) would be one more eager dispatch per batch
        return self.compiled(params, images, labels)(params, images, labels, np.int32(start))


def padded_order(order: Any, batch_size: int) -> np.ndarray:
    """Pad an index order to a whole number of batches (with index 0, masked out by the step)."""
    order = np.asarray(order, np.int32)
    return np.pad(order, (0, (-order.shape[0]) % batch_size))


def evaluate(eval_step: Callable, params: Any, images: jax.Array, labels: jax.Array,
             batch_size: int) -> dict[str, float]:
    """Loss and accuracy over a whole device-resident split, one host sync at the end."""
    n = int(images.shape[0])
    if n == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "n": 0}
    sums = jax.device_get([eval_step(params, images, labels, start) for start in range(0, n, batch_size)])
    loss_sum = sum(float(loss) for loss, _ in sums)
    correct = sum(int(c) for _, c in sums)
    return {"loss": loss_sum / n, "accuracy": correct / n, "n": n}


def steps_per_call(convolutional: bool, backend: str, steps_per_epoch: int) -> int:
    """How many train steps one dispatch runs; the single place that differs per backend.

    Measured on a 2-core XLA:CPU: a conv net runs ~13x slower inside lax.scan than one jitted step
    per call, while a dense/MLP step is so small that host dispatch dominates and scanning 100
    steps per call wins. Accelerators pay a high per-call launch cost, so they scan a whole epoch.
    """
    if backend == "cpu":
        return 1 if convolutional else min(100, steps_per_epoch)
    return steps_per_epoch


class Stepper:
    """Runs an epoch as chunks of `k` steps (one compiled scan) plus single steps for the remainder.

    Chunks start at position 0 of each epoch, so a run resumed at a saved position (always a chunk
    boundary) repeats the uninterrupted run's exact sequence of compiled calls.
    """

    def __init__(self, model: nn.Module, tx: optax.GradientTransformation, seed: int, batch_size: int,
                 steps_per_epoch: int, k: int, example_args: tuple,
                 constrain: Callable[[jax.Array], jax.Array] = lambda x: x):
        self.k, self.steps_per_epoch, self._example = max(1, k), steps_per_epoch, example_args
        self._build = lambda n: make_train_step(model, tx, seed, batch_size, constrain, n)
        self._compiled: dict[int, Any] = {}

    def compiled(self, n: int) -> Any:
        if n not in self._compiled:  # ahead-of-time: a shape change would raise, never recompile
            self._compiled[n] = compile_hot(self._build(n), *self._example)
        return self._compiled[n]

    def plan(self, pos: int) -> list[int]:
        """Chunk sizes that take the epoch from position `pos` to its end."""
        full = self.steps_per_epoch // self.k * self.k
        chunks = [self.k] * ((full - pos) // self.k) if pos < full else []
        return chunks + [1] * (self.steps_per_epoch - max(pos, full))

    def warm(self) -> None:
        for n in set(self.plan(0)):
            self.compiled(n)

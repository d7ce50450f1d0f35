"""The one forward pass and the one evaluation: fit, CV, predict, plots and experiments all use it.

`forward` scales uint8 images and applies the model (it lives in models.py, so that predict, which
imports it from there, loads no optax). `batch_sums` is one evaluation batch (loss sum and correct
count over the unmasked rows), the body of fit's eval step and, vmapped, of CV's.
`evaluate` runs a whole device-resident split; `predict_logits` returns logits for any images.
Batches have one fixed shape (the last one is masked or trimmed), and the eval programs take the
split's row count as an argument: fit pads its val and test splits to one length
(`pad_to_common_length`), so one compiled program evaluates both.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fashion_jax.config import TrainConfig
from fashion_jax.data.batching import pad_rows
from fashion_jax.model.models import forward, is_convolutional
from fashion_jax.runtime.compile import compile_ahead

DEFAULT_BATCH = TrainConfig.eval_batch_size  # for callers without a config


def gather_batch(
    images: jax.Array, labels: jax.Array, idx: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The uint8 images and labels at `idx`, gathered on the device (the dataset lives there)."""
    return images[idx], labels[idx]


def masked_sums(
    logits: jax.Array, labels: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(sum of cross-entropy, number correct) over the unmasked rows."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels) & mask
    return jnp.sum(jnp.where(mask, ce, 0.0)), jnp.sum(correct.astype(jnp.int32))


def batch_sums(
    model: nn.Module,
    params: Any,
    images: jax.Array,
    labels: jax.Array,
    idx: jax.Array,
    mask: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(loss sum, correct) of the rows `idx` whose `mask` is set, without dropout."""
    x, y = gather_batch(images, labels, idx)
    return masked_sums(forward(model, params, x), y, mask)


def loops_in_one_program(convolutional: bool, backend: str) -> bool:
    """Whether a pass runs its batches as a loop inside one program (else one dispatch a batch).

    The single place that differs per backend. On a 2-core XLA:CPU a conv net ran ~13x slower
    inside a loop than one jitted call per batch, while a dense/MLP batch is so small that host
    dispatch dominates: one program per pass wins. Accelerators pay a high per-call launch cost.
    """
    return not (convolutional and backend == "cpu")


def make_eval_step(model: nn.Module, batch_size: int, whole_split: bool = False) -> EvalStep:
    """`eval_step(params, images, labels, n, start) -> (loss_sum, correct)` over rows
    start..start+batch_size of the first n, or with `whole_split` over all n rows in one call (a
    loop of the same batches inside the program, so the sums are the same). Rows past n (padding)
    are never read."""

    def eval_batch(params, images, labels, n, start):
        rows = start + jnp.arange(batch_size)
        idx = jnp.minimum(rows, n - 1)  # the last batch repeats a row, masked out
        return batch_sums(model, params, images, labels, idx, rows < n)

    def eval_split(params, images, labels, n, start):
        def add_batch(i, sums):
            loss, correct = eval_batch(params, images, labels, n, start + i * batch_size)
            return sums[0] + loss, sums[1] + correct

        batches = -(-n // batch_size)
        return jax.lax.fori_loop(0, batches, add_batch, (jnp.float32(0), jnp.int32(0)))

    return EvalStep(jax.jit(eval_split if whole_split else eval_batch), batch_size, whole_split)


def eval_step_for(model: nn.Module, batch_size: int) -> EvalStep:
    """The eval step of `model` as this backend runs it fastest (`loops_in_one_program`)."""
    whole = loops_in_one_program(is_convolutional(model), jax.default_backend())
    return make_eval_step(model, batch_size, whole_split=whole)


class EvalStep:
    """The jitted eval step, compiled ahead of time (with the hot options) once per split shape."""

    def __init__(self, jitted: Any, batch_size: int, whole_split: bool):
        self._jitted, self._compiled = jitted, {}
        self.batch_size, self.whole_split = batch_size, whole_split

    def starts(self, n: int) -> range:
        """The `start` of each call that covers a split of n rows."""
        return range(0, n, n if self.whole_split else self.batch_size)

    def compiled(self, params: Any, images: jax.Array, labels: jax.Array) -> Any:
        key = (images.shape, labels.shape)
        if key not in self._compiled:
            zero = np.int32(0)
            self._compiled[key] = compile_ahead(
                self._jitted, params, images, labels, zero, zero, tuning="hot"
            )
        return self._compiled[key]

    def __call__(
        self, params: Any, images: jax.Array, labels: jax.Array, n: int, start: int
    ) -> Any:
        # NumPy scalars: jnp.int32(start) would be one more eager dispatch per batch
        program = self.compiled(params, images, labels)
        return program(params, images, labels, np.int32(n), np.int32(start))


class EvalSplit(NamedTuple):
    """A split padded with zero rows past its first n (`pad_to_common_length`)."""

    images: Any
    labels: Any
    n: int


def pad_to_common_length(*splits: tuple[np.ndarray, np.ndarray]) -> list[EvalSplit]:
    """Each (images, labels) padded to the longest one's length: one compiled eval program then
    serves them all (`evaluate` reads only the first n rows)."""
    length = max(len(images) for images, _ in splits)
    return [EvalSplit(pad_rows(x, length), pad_rows(y, length), len(x)) for x, y in splits]


def evaluate(
    eval_step: EvalStep, params: Any, images: jax.Array, labels: jax.Array, n: int | None = None
) -> dict[str, float]:
    """Loss and accuracy over the first n rows (default: all) of a device-resident split, one host
    sync at the end; the eval step knows its batch and whether it covers the split in one call."""
    n = int(images.shape[0]) if n is None else int(n)
    if n == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "n": 0}
    sums = jax.device_get([eval_step(params, images, labels, n, s) for s in eval_step.starts(n)])
    loss_sum = sum(float(loss) for loss, _ in sums)
    correct = sum(int(c) for _, c in sums)
    return {"loss": loss_sum / n, "accuracy": correct / n, "n": n}


def evaluate_arrays(
    model: nn.Module,
    params: Any,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, float]:
    """`evaluate` for host arrays: puts them on the device and builds the eval step."""
    step = eval_step_for(model, batch_size)
    device_labels = jax.device_put(np.asarray(labels, np.int32))
    return evaluate(step, params, jax.device_put(np.asarray(images)), device_labels)


@partial(jax.jit, static_argnames=("model", "batch_size"))
def _batch_logits(
    model: nn.Module, params: Any, images: jax.Array, start: jax.Array, batch_size: int
) -> jax.Array:
    rows = jnp.minimum(start + jnp.arange(batch_size), images.shape[0] - 1)
    return forward(model, params, images[rows])


def predict_logits(
    model: nn.Module, params: Any, images: np.ndarray, batch_size: int = DEFAULT_BATCH
) -> np.ndarray:
    """(N, num_classes) float32 logits of uint8 images (N, 28, 28); the model is static, so equal
    models share one compiled program."""
    n = len(images)
    if n == 0:
        return np.zeros((0, getattr(getattr(model, "cfg", None), "num_classes", 10)), np.float32)
    batch_size = min(batch_size, n)
    device_images = jax.device_put(np.asarray(images))  # once; each batch is gathered on the device
    out = jax.device_get(
        [
            _batch_logits(model, params, device_images, np.int32(s), batch_size)
            for s in range(0, n, batch_size)
        ]
    )
    return np.concatenate(out)[:n]

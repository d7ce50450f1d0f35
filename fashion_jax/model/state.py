"""What one training run carries from step to step: the train state (params, optimizer state, global
step) and the epoch's running sums. Checkpoints save both; model_files rebuilds them as the
template a restore fills.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # global step: drives dropout keys, so resume repeats them exactly
    params: Any
    opt_state: Any


@flax.struct.dataclass
class EpochSums:
    """One epoch's running sums and position, on the device: the loop never syncs per step."""

    next_batch: (
        jax.Array
    )  # batches of this epoch already taken: the next step reads batch next_batch
    rows: jax.Array  # real rows in the epoch; order positions past it are padding, masked out
    loss_sum: jax.Array  # summed cross-entropy of the counted rows
    correct: jax.Array
    count: jax.Array  # rows in the sums: a skipped non-finite batch is left out
    first_bad_step: jax.Array  # global step of the epoch's first non-finite loss, or -1


def epoch_sums(rows: int) -> EpochSums:
    """Zeroed sums for an epoch over `rows` real rows."""
    i32 = lambda v: np.array(v, np.int32)  # noqa: E731
    # one transfer of NumPy scalars: six eager jnp scalars would be six dispatches
    return jax.device_put(
        EpochSums(
            next_batch=i32(0),
            rows=i32(rows),
            loss_sum=np.array(0, np.float32),
            correct=i32(0),
            count=i32(0),
            first_bad_step=i32(-1),
        )
    )


def create_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

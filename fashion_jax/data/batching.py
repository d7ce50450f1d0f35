"""Which rows each train step sees: the per-epoch order, drawn from (seed, epoch), and padding.

Every batch has one shape, so a jitted step compiles once: an order is padded with index 0 to a
whole number of batches, and the steps mask the padded rows out.
"""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np

from fashion_jax.runtime.compile import compile_ahead


def pad_rows(array: np.ndarray, length: int) -> np.ndarray:
    """`array` with zero rows appended along its first axis up to `length` rows; whatever reads
    it masks out the rows past the real count."""
    return np.pad(array, [(0, length - array.shape[0])] + [(0, 0)] * (array.ndim - 1))


def pad_indices(indices: Sequence[int] | np.ndarray, length: int) -> np.ndarray:
    """int32 `indices` padded with index 0 to `length` (`pad_rows`)."""
    return pad_rows(np.asarray(indices, np.int32), length)


def padded_order(order: Sequence[int] | np.ndarray, batch_size: int) -> np.ndarray:
    """An index order padded to a whole number of batches."""
    return pad_indices(order, -(-len(order) // batch_size) * batch_size)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The int32 visiting order of n examples in one epoch, a pure function of (seed, epoch)."""
    if not shuffle or n <= 1:
        return np.arange(n, dtype=np.int32)
    with _host_cpu():  # host-side indices; same bits on any backend
        return np.asarray(_permutation(seed, epoch, n), dtype=np.int32)


def _host_cpu():
    return jax.default_device(jax.local_devices(backend="cpu")[0])


class EpochOrders:
    """`epoch_order(n, seed, e)` for epochs e < epochs, each computed in a background thread while
    the epoch before it trains (a pure function of (seed, epoch), so only the time changes)."""

    def __init__(self, n: int, seed: int, epochs: int):
        self._n, self._seed, self._epochs = n, seed, epochs
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="epoch-order")
        self._next: dict[int, concurrent.futures.Future] = {}

    def prefetch(self, epoch: int) -> None:
        """Start computing `epoch`'s order now (fit asks for the first one while its steps
        compile)."""
        if epoch < self._epochs and epoch not in self._next:
            self._next[epoch] = self._pool.submit(epoch_order, self._n, self._seed, epoch)

    def get(self, epoch: int) -> np.ndarray:
        pending = self._next.pop(epoch, None)
        order = pending.result() if pending else epoch_order(self._n, self._seed, epoch)
        self.prefetch(epoch + 1)
        return order

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> EpochOrders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def warm_epoch_order(n: int) -> None:
    """Compile epoch_order's program for n examples now (it is cached), so no epoch pays for it."""
    if n > 1:
        with _host_cpu():
            _compiled_permutation(n)


def permutation_fn(n: int) -> Callable:
    """The traceable `(seed, epoch) -> order of n` behind epoch_order, for callers that fold it
    into a program of their own."""

    def permutation(seed, epoch):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 0x5EED), epoch)
        return jax.random.permutation(key, n)

    return permutation


@functools.lru_cache(maxsize=32)
def _compiled_permutation(n: int):
    # NumPy scalars, here and in each call: a first eager jnp op would load JAX's lowering
    # machinery (~0.15 s), which a process whose programs all come from the cache never needs.
    zero = np.zeros((), np.int32)
    # One program per n (op by op, every call would dispatch dozens of tiny kernels), optimised
    # fully: it runs every epoch, and fit() compiles it before the first one (warm_epoch_order).
    return compile_ahead(jax.jit(permutation_fn(n)), zero, zero, tuning="hot")


def _permutation(seed: int, epoch: int, n: int):
    return _compiled_permutation(n)(np.int32(seed), np.int32(epoch))

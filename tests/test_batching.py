"""batching: per-epoch orders drawn from (seed, epoch), their background prefetch, and padding."""

from __future__ import annotations

import threading

import jax
import numpy as np
import pytest

from fashion_jax.data import batching
from fashion_jax.data.batching import epoch_order, pad_indices, padded_order


def test_epoch_order_is_a_deterministic_permutation():
    a = epoch_order(1000, seed=5, epoch=3)
    assert a.dtype == np.int32
    np.testing.assert_array_equal(np.sort(a), np.arange(1000))
    np.testing.assert_array_equal(a, epoch_order(1000, seed=5, epoch=3))
    assert not np.array_equal(a, epoch_order(1000, seed=5, epoch=4))
    assert not np.array_equal(a, epoch_order(1000, seed=6, epoch=3))
    np.testing.assert_array_equal(epoch_order(1000, 5, 3, shuffle=False), np.arange(1000))


def test_epoch_order_is_the_documented_fold_in_derivation():
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(9), 0x5EED), 2)
    np.testing.assert_array_equal(
        epoch_order(257, 9, 2), np.asarray(jax.random.permutation(key, 257))
    )


def test_epoch_orders_prefetch_in_the_background_and_return_the_same_orders(monkeypatch):
    drawn_on = []
    real = batching.epoch_order
    monkeypatch.setattr(
        batching,
        "epoch_order",
        lambda *a: drawn_on.append(threading.current_thread().name) or real(*a),
    )
    orders = batching.EpochOrders(300, seed=4, epochs=3)
    try:
        orders.prefetch(0)
        got = [orders.get(e) for e in range(3)]
        orders.prefetch(3)  # past the last epoch: nothing to draw
    finally:
        orders.close()
    for e in range(3):
        np.testing.assert_array_equal(got[e], real(300, 4, e))
    # every order was drawn once, by the worker, never by the caller
    assert len(drawn_on) == 3 and all(name.startswith("epoch-order") for name in drawn_on)


@pytest.mark.parametrize(("n", "batch", "length"), [(10, 4, 12), (12, 4, 12), (3, 8, 8), (0, 4, 0)])
def test_padded_order_fills_the_last_batch_with_index_0(n, batch, length):
    order = np.arange(1, n + 1)
    padded = padded_order(order, batch)
    assert padded.dtype == np.int32 and padded.shape == (length,)
    np.testing.assert_array_equal(padded[:n], order)
    assert (padded[n:] == 0).all()


def test_pad_indices_to_a_given_length_and_never_shorter():
    np.testing.assert_array_equal(pad_indices([5, 6], 4), [5, 6, 0, 0])
    with pytest.raises(ValueError):
        pad_indices([1, 2, 3], 2)

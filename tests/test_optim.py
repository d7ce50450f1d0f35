"""optim: optimizers by name with Keras's defaults,
the cosine schedule, skipping non-finite updates."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from fashion_jax.config import DEFAULT_LEARNING_RATES, TrainConfig
from fashion_jax.model.optim import OPTIMIZERS, learning_rate, make_optimizer


def sgd_updates(config: TrainConfig, total_steps: int, steps: int) -> list[float]:
    """The update of one scalar parameter under a constant gradient of 1, step by step."""
    tx = make_optimizer(config, total_steps)
    params, grads = jnp.zeros(()), jnp.ones(())
    state, out = tx.init(params), []
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        out.append(float(updates))
    return out


def test_learning_rates_default_to_keras_and_yield_to_the_config():
    for name, rate in DEFAULT_LEARNING_RATES.items():
        assert learning_rate(TrainConfig(optimizer=name)) == rate
    assert learning_rate(TrainConfig(optimizer="adam", learning_rate=0.05)) == 0.05
    assert set(OPTIMIZERS) == set(DEFAULT_LEARNING_RATES)


def test_constant_schedule_keeps_the_rate():
    config = TrainConfig(optimizer="sgd", learning_rate=0.1)
    np.testing.assert_allclose(
        sgd_updates(config, total_steps=10, steps=12), [-0.1] * 12, rtol=1e-6
    )


def test_cosine_schedule_decays_to_zero_over_all_planned_steps():
    config = TrainConfig(optimizer="sgd", learning_rate=0.1, schedule="cosine")
    want = [-0.1 * 0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(12)]
    want[10:] = [0.0, 0.0]  # past the planned steps the rate stays at 0
    np.testing.assert_allclose(sgd_updates(config, total_steps=10, steps=12), want, atol=1e-7)


def test_cosine_schedule_spans_the_steps_it_is_given():
    config = TrainConfig(optimizer="sgd", learning_rate=0.1, schedule="cosine")
    half = sgd_updates(config, total_steps=20, steps=11)[10]
    assert half == pytest.approx(-0.05, rel=1e-5)  # halfway through 20 steps: half the rate


def test_skip_nonfinite_drops_bad_updates_and_gives_up_after_n_in_a_row():
    tx = make_optimizer(TrainConfig(optimizer="sgd", learning_rate=0.1, skip_nonfinite=2), 10)
    params = jnp.ones(())
    state = tx.init(params)
    for grad, want in ((jnp.nan, 0.0), (1.0, -0.1), (jnp.nan, 0.0), (jnp.nan, 0.0)):
        updates, state = tx.update(jnp.asarray(grad), state, params)
        assert float(updates) == pytest.approx(want)
    updates, state = tx.update(jnp.asarray(jnp.nan), state, params)  # the third in a row: applied
    assert math.isnan(float(updates))

"""Optimizers by name, all optax, with Keras's defaults (learning rates:
config.DEFAULT_LEARNING_RATES)."""

from __future__ import annotations

from collections.abc import Callable

import optax

from fashion_jax.config import DEFAULT_LEARNING_RATES, TrainConfig

OPTIMIZERS: dict[str, Callable[[optax.ScalarOrSchedule], optax.GradientTransformation]] = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    # Keras's Adagrad starts its accumulator at 0.1 and uses eps=1e-7.
    "adagrad": lambda lr: optax.adagrad(lr, initial_accumulator_value=0.1, eps=1e-7),
    # Keras's RMSprop: rho=0.9, eps=1e-7, no centring.
    "rmsprop": lambda lr: optax.rmsprop(lr, decay=0.9, eps=1e-7),
    "adam": lambda lr: optax.adam(lr, eps=1e-7),
}


def learning_rate(config: TrainConfig) -> float:
    """The configured rate, or the optimizer's Keras default when none is set."""
    if config.learning_rate is not None:
        return config.learning_rate
    return DEFAULT_LEARNING_RATES[config.optimizer]


def schedule(config: TrainConfig, total_steps: int) -> optax.ScalarOrSchedule:
    """The rate of every update: a constant, or a cosine decaying to 0 over `total_steps`."""
    lr = learning_rate(config)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=max(total_steps, 1))
    return lr


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """The configured optimizer, stepping its rate by `schedule`."""
    tx = OPTIMIZERS[config.optimizer](schedule(config, total_steps))
    if config.skip_nonfinite > 0:
        tx = optax.apply_if_finite(tx, max_consecutive_errors=config.skip_nonfinite)
    return tx

"""Optimizers by name, all optax, with Keras's default learning rates."""
from __future__ import annotations

from typing import Callable

import optax

from fashion_jax.config import TrainConfig

# Keras 3 defaults, which the chapter's compile() calls rely on.
_KERAS_DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01,
                     "adagrad": 0.001, "rmsprop": 0.001, "adam": 0.001}

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
    return config.learning_rate if config.learning_rate is not None else _KERAS_DEFAULT_LR[config.optimizer]


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    lr: optax.ScalarOrSchedule = learning_rate(config)
    if config.schedule == "cosine":
        lr = optax.cosine_decay_schedule(lr, decay_steps=max(total_steps, 1))
    tx = OPTIMIZERS[config.optimizer](lr)
    if config.skip_nonfinite > 0:
        tx = optax.apply_if_finite(tx, max_consecutive_errors=config.skip_nonfinite)
    return tx

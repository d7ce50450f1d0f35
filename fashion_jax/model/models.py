"""Flax linen models for the chapter, registered by name (the names of config.MODEL_DEFAULTS).

Every model maps images scaled by `pixels_to_inputs` (B, 28, 28) in [0, 1] to logits
(B, num_classes); the softmax lives in the loss, as `sparse_categorical_crossentropy` does in Keras.
The CPU-tuned layers come from cpu_layers.py; everything else is stock Flax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fashion_jax.config import ConfigError, ModelConfig
from fashion_jax.model.cpu_layers import SingleChannelConv, max_pool
from fashion_jax.runtime.compile import compile_ahead

MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {}
ACTIVATIONS = {"relu": nn.relu, "sigmoid": nn.sigmoid, "tanh": nn.tanh}
CONV_LAYERS = (nn.Conv, SingleChannelConv)  # what feature-map plots look for


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        MODELS[name] = cls
        return cls

    return decorate


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.name not in MODELS:
        raise ConfigError(f"unknown model {cfg.name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](cfg)


def is_convolutional(model: nn.Module) -> bool:
    return isinstance(model, CNN)


def pixels_to_inputs(images: jax.Array) -> jax.Array:
    """uint8 pixels 0..255 -> float32 in [0, 1]: the one scaling every train, eval and predict
    uses."""
    return images.astype(jnp.float32) / 255.0


@register("logreg")
class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression on the 784 pixels (the chapter's SGDClassifier, section
    4)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return nn.Dense(self.cfg.num_classes, name="dense")(x.reshape(x.shape[0], -1))


@register("dense")
class DenseSoftmax(SoftmaxRegression):
    """The chapter's `keras.layers.Dense(10, activation='softmax', input_shape=(784,))`."""


@register("mlp")
class MLP(nn.Module):
    """Flatten -> Dense(hidden, activation) -> optional Dropout -> Dense(10)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        x = ACTIVATIONS[self.cfg.activation](nn.Dense(self.cfg.hidden, name="hidden")(x))
        if self.cfg.dropout > 0:
            x = nn.Dropout(self.cfg.dropout, deterministic=not train)(x)
        return nn.Dense(self.cfg.num_classes, name="out")(x)


@register("cnn")
class CNN(nn.Module):
    """Conv(32) -> pool -> Conv(64) -> pool -> Flatten -> Dense(100) -> Dropout(0.4) ->
    Dense(10)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.cfg
        x = x[..., None] if x.ndim == 3 else x
        for i, features in enumerate(cfg.filters):
            padding = cfg.padding.upper()
            if x.shape[-1] == 1:  # the images: see cpu_layers.SingleChannelConv
                conv = SingleChannelConv(
                    features, cfg.kernel, cfg.strides, padding, name=f"conv{i}"
                )
            else:
                kernel = (cfg.kernel, cfg.kernel)
                conv = nn.Conv(
                    features, kernel, strides=cfg.strides, padding=padding, name=f"conv{i}"
                )
            # A no-op unless a 'perturbations' collection is passed in: then its gradient is the
            # gradient with respect to this layer's activations (Grad-CAM, inference/explain.py).
            x = self.perturb(f"conv{i}_act", ACTIVATIONS[cfg.activation](conv(x)))
            if cfg.pool > 1:
                x = max_pool(x, cfg.pool)
        x = x.reshape(x.shape[0], -1)
        x = ACTIVATIONS[cfg.activation](nn.Dense(cfg.hidden, name="hidden")(x))
        if cfg.dropout > 0:
            x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        return nn.Dense(cfg.num_classes, name="out")(x)


@register("cnn_fast")
class FastCNN(CNN):
    """The `--preset fast` network: the chapter's CNN shape, tuned defaults
    (config.MODEL_DEFAULTS)."""


def forward(
    model: nn.Module, params: Any, images: jax.Array, *, train: bool = False, rngs: Any = None
) -> jax.Array:
    """Logits of uint8 images (B, 28, 28)."""
    return model.apply({"params": params}, pixels_to_inputs(images), train=train, rngs=rngs)


def init_params(model: nn.Module, seed: int) -> dict:
    """Parameters from a key derived by fold_in, so they depend on the seed alone."""
    # one compiled program: op-by-op init would compile every initializer primitive separately
    seed = jnp.asarray(seed, jnp.int32)
    return compile_ahead(jax.jit(init_fn(model)), seed, tuning="one_shot")(seed)


def init_fn(model: nn.Module) -> Callable[[jax.Array], dict]:
    """seed -> params; vmappable, so k-fold CV can stack k initialisations."""
    return lambda seed: model.init(
        jax.random.fold_in(jax.random.key(seed), 0), jnp.zeros((1, 28, 28))
    )["params"]

"""Flax linen models for the chapter, registered by name.

Every model maps uint8-scaled images (B, 28, 28) in [0, 1] to logits (B, num_classes); the softmax
lives in the loss, as `sparse_categorical_crossentropy` does in Keras.
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from fashion_jax.compile import compile_one_shot
from fashion_jax.config import ModelConfig

MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {}
ACTIVATIONS = {"relu": nn.relu, "sigmoid": nn.sigmoid, "tanh": nn.tanh}


def register(name: str) -> Callable:
    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        MODELS[name] = lambda cfg: cls(cfg)
        return cls
    return decorate


def build_model(cfg: ModelConfig) -> nn.Module:
    return MODELS[cfg.name](cfg)


def is_convolutional(model: nn.Module) -> bool:
    return isinstance(model, CNN)


def max_pool(x: jax.Array, window: int) -> jax.Array:
    """Non-overlapping 'valid' max pooling (stride == window), as Keras's MaxPooling2D(window).

    A reshape-and-max instead of `nn.max_pool`: on XLA:CPU the gradient of reduce_window
    (select-and-scatter) dominated the CNN step; this form is about 3x faster end to end.
    """
    b, h, w, c = x.shape
    hh, ww = h // window, w // window
    x = x[:, : hh * window, : ww * window, :]  # 'valid' drops the ragged edge, as Keras does
    return _window_max(x.reshape(b, hh, window, ww, window, c))


@jax.custom_vjp
def _window_max(windows: jax.Array) -> jax.Array:
    return windows.max(axis=(2, 4))


def _window_max_fwd(windows: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    pooled = windows.max(axis=(2, 4))
    return pooled, (windows, pooled)


def _window_max_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array]:
    # jnp.max's own rule (ties share the gradient equally), written out. The tie count adds the
    # window's slices instead of reducing over the window axes: on XLA:CPU the reduction went to a
    # YNNPACK call fused with the rest of this backward, and the chapter CNN's step took 7.2 ms
    # instead of 6.5 ms. (The forward max stays a reduction: as slices it was slower.)
    windows, pooled = res
    hit = windows == pooled[:, :, None, :, None, :]
    k = windows.shape[2]
    ties = functools.reduce(jnp.add, [hit[:, :, i, :, j, :].astype(g.dtype) for i in range(k) for j in range(k)])
    return (jnp.where(hit, (g / ties)[:, :, None, :, None, :], 0.0),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


class TransposedDense(nn.Module):
    """`nn.Dense` with its kernel stored (features, inputs), the transpose of flax's layout.

    Why: XLA:CPU runs the elementwise loops over a (784, 10) array (the optimizer's updates) and
    the dots beside them several times slower than over (10, 784): the 10-way softmax step took
    48 us instead of 68 us, and the 5-fold CV trained ~30% faster. For the MLP and CNN heads the
    layout measured the same, so they keep nn.Dense. A seed gives the same initial values as
    nn.Dense: flax's initializer draws the (inputs, features) kernel, which is then transposed.
    """
    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", lambda key, shape: self.kernel_init(key, shape[::-1]).T,
                            (self.features, x.shape[-1]))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (1,)), ((), ()))) + bias


class SingleChannelConv(nn.Module):
    """`nn.Conv` for a one-channel input (the images), with the same parameters and initial values.

    Why: XLA:CPU's convolution with one input channel ran at ~15 GFLOP/s, about 1 ms of the chapter
    CNN's 7.5 ms step. Here the forward is k*k shifted multiply-adds (one elementwise loop) and the
    backward the plain convolution's: the step measured ~5% faster.
    """
    features: int
    kernel_size: int
    strides: int = 1
    padding: str = "SAME"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        pads = tuple(jax.lax.padtype_to_pads(x.shape[1:3], (k, k), (self.strides,) * 2, self.padding))
        return _single_channel_conv(x, kernel, self.strides, pads) + bias


def _taps(x: jax.Array, k: int, stride: int, pads: tuple) -> list[jax.Array]:
    """The k*k shifted (and strided) views of (B, H, W, 1) that one output position sees, each (B, H', W')."""
    xp = jnp.pad(x[..., 0], ((0, 0), *pads))
    ho, wo = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    return [xp[:, i: i + stride * (ho - 1) + 1: stride, j: j + stride * (wo - 1) + 1: stride]
            for i in range(k) for j in range(k)]


def _lax_conv(x: jax.Array, kernel: jax.Array, stride: int, pads: tuple) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _single_channel_conv(x: jax.Array, kernel: jax.Array, stride: int, pads: tuple) -> jax.Array:
    weights = kernel.reshape(-1, kernel.shape[-1])
    taps = _taps(x, kernel.shape[0], stride, pads)
    return functools.reduce(jnp.add, [t[..., None] * w for t, w in zip(taps, weights)])


def _single_channel_conv_fwd(x, kernel, stride, pads):
    return _single_channel_conv(x, kernel, stride, pads), (x, kernel)


def _single_channel_conv_bwd(stride, pads, res, g):
    # The plain convolution's gradients (a stacked-taps dot for the kernel measured the same); inside
    # a train step nothing uses the image's, and XLA drops it.
    x, kernel = res
    return jax.vjp(lambda x, kernel: _lax_conv(x, kernel, stride, pads), x, kernel)[1](g)


_single_channel_conv.defvjp(_single_channel_conv_fwd, _single_channel_conv_bwd)

CONV_LAYERS = (nn.Conv, SingleChannelConv)  # what feature-map plots look for


@register("logreg")
class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression on the 784 pixels (the chapter's SGDClassifier, section 4)."""
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return TransposedDense(self.cfg.num_classes, name="dense")(x.reshape(x.shape[0], -1))


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
    """Conv(32) -> pool -> Conv(64) -> pool -> Flatten -> Dense(100) -> Dropout(0.4) -> Dense(10)."""
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.cfg
        x = x[..., None] if x.ndim == 3 else x
        for i, features in enumerate(cfg.filters):
            if x.shape[-1] == 1:  # the images: see SingleChannelConv
                x = SingleChannelConv(features, cfg.kernel, cfg.strides, cfg.padding.upper(), name=f"conv{i}")(x)
            else:
                x = nn.Conv(features, (cfg.kernel, cfg.kernel), strides=cfg.strides,
                            padding=cfg.padding.upper(), name=f"conv{i}")(x)
            x = ACTIVATIONS[cfg.activation](x)
            if cfg.pool > 1:
                x = max_pool(x, cfg.pool)
        x = x.reshape(x.shape[0], -1)
        x = ACTIVATIONS[cfg.activation](nn.Dense(cfg.hidden, name="hidden")(x))
        if cfg.dropout > 0:
            x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        return nn.Dense(cfg.num_classes, name="out")(x)


@register("cnn_fast")
class FastCNN(CNN):
    """The `--preset fast` network: the chapter's CNN shape, tuned defaults (see config.MODEL_DEFAULTS)."""


def init_params(model: nn.Module, seed: int) -> dict:
    """Parameters from a key derived by fold_in, so they depend on the seed alone."""
    # one compiled program: op-by-op init would compile every initializer primitive separately
    seed = jnp.asarray(seed, jnp.int32)
    return compile_one_shot(init_fn(model), seed)(seed)


def init_fn(model: nn.Module) -> Callable[[jax.Array], dict]:
    """seed -> params; vmappable, so k-fold CV can stack k initialisations."""
    return lambda seed: model.init(jax.random.fold_in(jax.random.key(seed), 0), jnp.zeros((1, 28, 28)))["params"]


def param_shapes(model: nn.Module) -> dict:
    """Abstract params (shapes and dtypes) without compiling or running anything; a restore target."""
    return jax.eval_shape(init_fn(model), jnp.zeros((), jnp.int32))

"""Layers in a form XLA:CPU runs faster than the stock Flax one, each a drop-in for it.

Each was measured on the 2-core XLA:CPU machine (experiments/bench/BENCH.md has the figures) and is
tested against the stock layer it replaces (same outputs and gradients, same initial values):

- `max_pool`: non-overlapping max pooling with a hand-written gradient. `nn.max_pool`'s gradient
  (select-and-scatter of reduce_window) dominated the chapter CNN's step.
- `SingleChannelConv`: `nn.Conv` for one input channel (the images) as k*k shifted multiply-adds.
  XLA's convolution with one input channel ran far below the machine's rate.

Neither changes the checkpoint layout: `SingleChannelConv` keeps `nn.Conv`'s (kh, kw, in, out)
kernel, which is also Keras's Conv2D layout. (A third form, a dense kernel stored transposed, was
dropped on 2026-12-07: measured side by side it bought 3-8% of a dense run, and its layout leaked
into the models and the Keras mapping. docs/SPEED.md has the table.)
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


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
    ties = functools.reduce(
        jnp.add, [hit[:, :, i, :, j, :].astype(g.dtype) for i in range(k) for j in range(k)]
    )
    return (jnp.where(hit, (g / ties)[:, :, None, :, None, :], 0.0),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


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
        pads = tuple(
            jax.lax.padtype_to_pads(x.shape[1:3], (k, k), (self.strides,) * 2, self.padding)
        )
        return _single_channel_conv(x, kernel, self.strides, pads) + bias


def _taps(x: jax.Array, k: int, stride: int, pads: tuple) -> list[jax.Array]:
    """The k*k shifted (and strided) views of (B, H, W, 1) that one output position sees, each (B,
    H', W')."""
    xp = jnp.pad(x[..., 0], ((0, 0), *pads))
    ho, wo = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    return [
        xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
        for i in range(k)
        for j in range(k)
    ]


def _lax_conv(x: jax.Array, kernel: jax.Array, stride: int, pads: tuple) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _single_channel_conv(x: jax.Array, kernel: jax.Array, stride: int, pads: tuple) -> jax.Array:
    weights = kernel.reshape(-1, kernel.shape[-1])
    taps = _taps(x, kernel.shape[0], stride, pads)
    return functools.reduce(jnp.add, [t[..., None] * w for t, w in zip(taps, weights)])


def _single_channel_conv_fwd(x, kernel, stride, pads):
    return _single_channel_conv(x, kernel, stride, pads), (x, kernel)


def _single_channel_conv_bwd(stride, pads, res, g):
    # The plain convolution's gradients (a stacked-taps dot for the kernel measured the same);
    # inside
    # a train step nothing uses the image's, and XLA drops it.
    x, kernel = res
    return jax.vjp(lambda x, kernel: _lax_conv(x, kernel, stride, pads), x, kernel)[1](g)


_single_channel_conv.defvjp(_single_channel_conv_fwd, _single_channel_conv_bwd)

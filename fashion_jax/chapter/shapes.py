"""Analytic conv/pool output sizes, checked against what XLA really produces.

The chapter explains padding, stride and pooling with pictures (a 4x4 input,
a 3x3 kernel, "same" padding to 6x6, 2x2 pooling halving 28 to 14). Here the
same arithmetic is written down once, walked through the chapter's CNN, and
cross-checked with ``jax.eval_shape`` on the real lax ops, so a formula that
drifts from XLA's convention fails a test instead of a model at run time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fashion_jax.config import ModelConfig, model_config

Padding = str | int | tuple[int, int]

__all__ = [
    "LayerSpec",
    "Padding",
    "check_grid",
    "cnn_layers",
    "conv_output_size",
    "format_walk",
    "measured_conv_sizes",
    "measured_pool_size",
    "pool_output_size",
    "same_padding",
    "shape_walk",
]


def _positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def same_padding(n: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(lo, hi) zero-padding XLA applies for SAME; odd totals put the extra pad at the end."""
    _positive(n=n, kernel=kernel, stride=stride, dilation=dilation)
    k_eff = (kernel - 1) * dilation + 1
    total = max((math.ceil(n / stride) - 1) * stride + k_eff - n, 0)
    return total // 2, total - total // 2


def _explicit_pads(padding: int | tuple[int, int]) -> tuple[int, int]:
    lo, hi = (padding, padding) if isinstance(padding, (int, np.integer)) else tuple(padding)
    if lo < 0 or hi < 0:
        # lax accepts negative pads (cropping), but the chapter's notion of
        # padding is "add zeros around the border"; refuse rather than surprise.
        raise ValueError(f"padding must be non-negative, got {(lo, hi)}")
    return int(lo), int(hi)


def conv_output_size(
    n: int,
    kernel: int,
    stride: int = 1,
    padding: Padding = "valid",
    dilation: int = 1,
) -> int:
    """Spatial output size of one conv axis, in XLA's (and Keras's) convention."""
    _positive(n=n, kernel=kernel, stride=stride, dilation=dilation)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "same":
            # SAME is defined by its output size; the pads follow from it.
            return math.ceil(n / stride)
        if mode != "valid":
            raise ValueError(
                f"padding must be 'same', 'valid', an int or (lo, hi); got {padding!r}"
            )
        lo = hi = 0
    else:
        lo, hi = _explicit_pads(padding)
    k_eff = (kernel - 1) * dilation + 1
    room = n + lo + hi - k_eff
    if room < 0:
        # lax silently returns a 0-sized axis here; a model builder wants to hear about it.
        raise ValueError(
            f"kernel {kernel} (effective {k_eff}) does not fit input {n} padded by {(lo, hi)}"
        )
    return room // stride + 1


def pool_output_size(
    n: int, window: int, stride: int | None = None, padding: Padding = "valid"
) -> int:
    """Pooling output size; stride defaults to the window, as in Keras MaxPooling2D(2)."""
    return conv_output_size(n, window, window if stride is None else stride, padding)


def _lax_padding(padding: Padding, ndim: int = 2) -> str | list[tuple[int, int]]:
    if isinstance(padding, str):
        return padding.upper()
    return [_explicit_pads(padding)] * ndim


def measured_conv_sizes(
    ns: Iterable[int],
    kernel: int,
    stride: int,
    padding: Padding,
    dilation: int = 1,
    batch: int = 3,
) -> np.ndarray:
    """Output size lax.conv_general_dilated really produces for each n x n input.

    Shapes are found with ``jax.eval_shape`` (no FLOPs). Each grid point vmaps a
    single-image conv over a batch of ``batch`` images of that size, so the check
    also covers that batching leaves the spatial arithmetic alone. A kernel that
    does not fit gives 0, which is what lax itself reports.
    """
    pad = _lax_padding(padding)
    w = jax.ShapeDtypeStruct((kernel, kernel, 1, 1), jnp.float32)

    def one_image(x: jax.Array, w: jax.Array) -> jax.Array:
        y = lax.conv_general_dilated(
            x[None],
            w,
            (stride, stride),
            pad,
            rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y[0]

    batched = jax.vmap(one_image, in_axes=(0, None))
    sizes = []
    for n in ns:
        x = jax.ShapeDtypeStruct((batch, n, n, 1), jnp.float32)
        out = jax.eval_shape(batched, x, w).shape
        if out[0] != batch or out[1] != out[2]:
            raise AssertionError(f"unexpected conv output shape {out} for n={n}")
        sizes.append(out[1])
    return np.asarray(sizes, dtype=np.int64)


def measured_pool_size(
    n: int, window: int, stride: int | None = None, padding: Padding = "valid"
) -> int:
    """Max-pool output size from flax.linen.max_pool, cross-checked with lax.reduce_window."""
    stride = window if stride is None else stride
    x = jax.ShapeDtypeStruct((1, n, n, 1), jnp.float32)
    flax_pad = _lax_padding(padding)
    via_flax = jax.eval_shape(
        lambda x: nn.max_pool(x, (window, window), (stride, stride), flax_pad), x
    ).shape
    lax_pad = flax_pad if isinstance(flax_pad, str) else [(0, 0), *flax_pad, (0, 0)]
    via_lax = jax.eval_shape(
        lambda x: lax.reduce_window(
            x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), lax_pad
        ),
        x,
    ).shape
    if via_flax != via_lax:
        raise AssertionError(f"flax max_pool {via_flax} != lax.reduce_window {via_lax}")
    return int(via_flax[1])


def _formula_or_zero(fn, *args) -> int:
    # The formula raises where lax returns a 0-sized axis; map both to 0 to compare.
    try:
        return fn(*args)
    except ValueError:
        return 0


def check_grid(
    ns: Iterable[int],
    kernels: Iterable[int],
    strides: Iterable[int],
    paddings: Iterable[Padding],
) -> list[dict]:
    """Compare formulas with measured conv and max-pool sizes; returns the mismatches."""
    ns = list(ns)
    mismatches = []
    for k, s, p in itertools.product(kernels, strides, paddings):
        measured = measured_conv_sizes(ns, k, s, p)
        for n, got in zip(ns, measured):
            rows = [("conv", _formula_or_zero(conv_output_size, n, k, s, p), int(got))]
            pool_got = measured_pool_size(n, k, s, p)
            rows.append(("pool", _formula_or_zero(pool_output_size, n, k, s, p), pool_got))
            for op, want, got_ in rows:
                if want != got_:
                    mismatches.append(
                        dict(op=op, n=n, kernel=k, stride=s, padding=p, formula=want, measured=got_)
                    )
    return mismatches


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a shape walk; unused fields stay None for kinds that ignore them."""

    kind: str  # "conv" | "pool" | "flatten" | "dense"
    features: int | None = None
    kernel: int | None = None
    stride: int | None = None  # conv: 1, pool: the window, when None
    padding: Padding = "valid"
    window: int | None = None
    activation: str | None = None  # descriptive only; does not change shapes

    def describe(self) -> str:
        act = f" {self.activation}" if self.activation else ""
        if self.kind == "conv":
            s = self.stride or 1
            return f"conv {self.features} {self.kernel}x{self.kernel} s{s} {self.padding}{act}"
        if self.kind == "pool":
            s = self.stride or self.window
            return f"maxpool {self.window}x{self.window} s{s} {self.padding}"
        if self.kind == "dense":
            return f"dense {self.features}{act}"
        return self.kind


def shape_walk(
    input_shape: tuple[int, int, int], layers: Sequence[LayerSpec]
) -> list[tuple[str, tuple[int, ...]]]:
    """(description, output shape) per layer, HWC without batch, starting at the input."""
    shape: tuple[int, ...] = tuple(input_shape)
    rows: list[tuple[str, tuple[int, ...]]] = [("input", shape)]
    for layer in layers:
        if layer.kind in ("conv", "pool"):
            if len(shape) != 3:
                raise ValueError(f"{layer.kind} needs an (H, W, C) input, got {shape}")
            h, w, c = shape
            if layer.kind == "conv":
                args = (layer.kernel, layer.stride or 1, layer.padding)
                shape = tuple(conv_output_size(n, *args) for n in (h, w)) + (layer.features,)
            else:
                args = (layer.window, layer.stride, layer.padding)
                shape = tuple(pool_output_size(n, *args) for n in (h, w)) + (c,)
        elif layer.kind == "flatten":
            shape = (math.prod(shape),)
        elif layer.kind == "dense":
            # Like flax/Keras Dense: only the last axis changes.
            shape = (*shape[:-1], layer.features)
        else:
            raise ValueError(f"unknown layer kind {layer.kind!r}")
        rows.append((layer.describe(), shape))
    return rows


def cnn_layers(cfg: ModelConfig | None = None, classes: int = 10) -> list[LayerSpec]:
    """A CNN config's layers (default: the chapter's): (Conv -> MaxPool) per filter count, Flatten,
    Dense(hidden), Dense(classes)."""
    cfg = cfg or model_config("cnn")
    layers: list[LayerSpec] = []
    for f in cfg.filters:
        conv = LayerSpec(
            "conv",
            features=f,
            kernel=cfg.kernel,
            stride=cfg.strides,
            padding=cfg.padding,
            activation=cfg.activation,
        )
        layers += [conv, LayerSpec("pool", window=cfg.pool, stride=cfg.pool, padding="valid")]
    layers += [
        LayerSpec("flatten"),
        LayerSpec("dense", features=cfg.hidden, activation=cfg.activation),
        LayerSpec("dense", features=classes, activation="softmax"),
    ]
    return layers


def format_walk(rows: Sequence[tuple[str, tuple[int, ...]]]) -> str:
    """Aligned text table of a shape walk (layer, output shape, element count)."""
    table = [("layer", "output shape", "elements")]
    table += [(name, str(tuple(shape)), str(math.prod(shape))) for name, shape in rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)

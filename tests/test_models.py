"""The registered models: output shapes, parameter shapes driven by the config, pooling, dropout."""

from __future__ import annotations

import functools

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fashion_jax.chapter import shapes
from fashion_jax.config import ModelConfig, model_config
from fashion_jax.model.models import (
    CONV_LAYERS,
    MODELS,
    SingleChannelConv,
    build_model,
    init_params,
    max_pool,
)
from fashion_jax.runtime.compile import compile_ahead

ALL_MODELS = ["logreg", "dense", "mlp", "cnn", "cnn_fast"]


def shapes_of(params) -> dict:
    return jax.tree.map(lambda a: tuple(a.shape), params)


@functools.cache
def params_for(cfg: ModelConfig, seed: int = 0):
    """init_params once per (config, seed): each call compiles a fresh init, seconds for a CNN."""
    return init_params(build_model(cfg), seed)


def abstract_params(cfg: ModelConfig):
    """Parameter shapes without compiling or running anything."""
    model = build_model(cfg)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28)))["params"])


def capture(model, params, x, **apply_kwargs) -> dict[str, jax.Array]:
    """Output of every named submodule's __call__ (the CNN's own sow cannot be read, see below)."""
    captured = {}

    def grab(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.name:
            captured[context.module.name] = out
        return out

    with nn.intercept_methods(grab):
        model.apply({"params": params}, x, **apply_kwargs)
    return captured


def scaled(images: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(images, jnp.float32) / 255.0


def test_registry_holds_the_chapter_models():
    assert set(ALL_MODELS) <= set(MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_maps_a_batch_of_images_to_10_logits(name, small_data):
    cfg = model_config(name)
    model = build_model(cfg)
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
    x = scaled(small_data.test_x[:6])
    logits = np.asarray(apply(params_for(cfg), x))
    assert logits.shape == (6, 10)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    assert not np.allclose(logits[0], logits[1])  # different images, different logits
    # Rows are independent: permuting the batch permutes the logits.
    perm = np.array([3, 0, 5, 1, 4, 2])
    np.testing.assert_allclose(
        np.asarray(apply(params_for(cfg), x[perm])), logits[perm], rtol=1e-5, atol=1e-5
    )


def test_logreg_and_dense_are_one_784_by_10_layer_in_flax_and_keras_layout():
    for name in ("logreg", "dense"):
        assert shapes_of(params_for(model_config(name))) == {
            "dense": {"kernel": (784, 10), "bias": (10,)}
        }


def test_cnn_parameter_shapes_match_the_chapter():
    got = shapes_of(params_for(model_config("cnn")))
    assert got == {
        "conv0": {"kernel": (3, 3, 1, 32), "bias": (32,)},
        "conv1": {"kernel": (3, 3, 32, 64), "bias": (64,)},
        "hidden": {"kernel": (3136, 100), "bias": (100,)},
        "out": {"kernel": (100, 10), "bias": (10,)},
    }


def test_mlp_hidden_size_comes_from_the_config():
    assert shapes_of(params_for(model_config("mlp")))["hidden"]["kernel"] == (784, 100)
    got = shapes_of(params_for(model_config("mlp", hidden=50)))
    assert got == {
        "hidden": {"kernel": (784, 50), "bias": (50,)},
        "out": {"kernel": (50, 10), "bias": (10,)},
    }


def test_cnn_fast_uses_its_own_defaults():
    cfg = model_config("cnn_fast")
    assert shapes_of(params_for(cfg))["hidden"]["kernel"] == (3136, cfg.hidden)
    assert (
        cfg.hidden != ModelConfig().hidden
    )  # otherwise this test would not tell the presets apart


@pytest.mark.parametrize(
    "overrides",
    [
        {"filters": (8, 16)},
        {"filters": (8, 16), "padding": "valid"},
        {"filters": (4,), "padding": "valid", "kernel": 5},
        {"filters": (4, 8), "padding": "same", "strides": 2},
    ],
    ids=["filters", "valid", "one-conv-k5", "stride2"],
)
def test_cnn_shapes_follow_the_config_and_agree_with_shape_walk(overrides):
    cfg = model_config("cnn", hidden=12, **overrides)
    model = build_model(cfg)
    got = shapes_of(abstract_params(cfg))
    walk = shapes.shape_walk(
        (28, 28, 1),
        shapes.cnn_layers(cfg),
    )
    flat = dict(walk)["flatten"]
    assert got["hidden"]["kernel"] == (flat[0], 12)
    channels = 1
    for i, f in enumerate(cfg.filters):
        assert got[f"conv{i}"]["kernel"] == (cfg.kernel, cfg.kernel, channels, f)
        channels = f
    # The forward pass (traced, not run) produces the feature maps shape_walk predicts.
    maps = jax.eval_shape(lambda p: capture(model, p, jnp.zeros((2, 28, 28))), abstract_params(cfg))
    conv_rows = [shape for name, shape in walk if name.startswith("conv")]
    assert len(conv_rows) == len(cfg.filters)
    for i, want in enumerate(conv_rows):
        assert maps[f"conv{i}"].shape == (2, *want)


def test_valid_padding_shrinks_the_flatten_size():
    same = shapes_of(abstract_params(model_config("cnn")))["hidden"]["kernel"][0]
    valid = shapes_of(abstract_params(model_config("cnn", padding="valid")))["hidden"]["kernel"][0]
    assert (same, valid) == (7 * 7 * 64, 5 * 5 * 64)


# ------------------------------------------------------------------ max_pool


def reference_pool(x, window=2):
    return nn.max_pool(x, (window, window), strides=(window, window), padding="VALID")


@pytest.mark.parametrize(
    "shape, window",
    [
        ((2, 8, 8, 3), 2),
        ((2, 7, 7, 3), 2),
        ((1, 28, 28, 4), 2),
        ((3, 7, 5, 2), 2),
        ((2, 9, 11, 1), 3),
    ],
)
def test_max_pool_equals_flax_max_pool(shape, window):
    x = jnp.asarray(np.random.default_rng(sum(shape)).normal(size=shape), jnp.float32)
    got, want = max_pool(x, window), reference_pool(x, window)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_max_pool_equals_flax_on_integer_valued_inputs_with_ties():
    x = jnp.asarray(np.random.default_rng(0).integers(0, 3, (2, 7, 7, 2)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(max_pool(x, 2)), np.asarray(reference_pool(x)))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 7, 3)])
def test_max_pool_gradient_equals_flax_without_ties(shape):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)  # continuous values: no ties
    w = jnp.asarray(rng.normal(size=reference_pool(x).shape), jnp.float32)
    got = jax.grad(lambda v: jnp.sum(max_pool(v, 2) * w))(x)
    want = jax.grad(lambda v: jnp.sum(reference_pool(v) * w))(x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # The ragged edge of an odd input gets no gradient at all.
    if shape[1] % 2:
        assert not np.any(np.asarray(got)[:, -1, :, :]) and not np.any(np.asarray(got)[:, :, -1, :])


@pytest.mark.parametrize("window", [2, 3])
def test_max_pool_gradient_shares_ties_as_jnp_max_does(window):
    # Integer-valued inputs (and a ReLU's zeros) tie often; the hand-written gradient must split
    # each window's gradient over its tied maxima exactly as autodiff of jnp.max does.
    rng = np.random.default_rng(2)
    x = jax.nn.relu(jnp.asarray(rng.integers(-2, 3, (3, 9, 7, 4)), jnp.float32))
    hh, ww = 9 // window, 7 // window

    def by_jnp_max(v):
        v = v[:, : hh * window, : ww * window]
        return v.reshape(3, hh, window, ww, window, 4).max(axis=(2, 4))

    w = jnp.asarray(rng.normal(size=(3, hh, ww, 4)), jnp.float32)
    got = jax.grad(lambda v: jnp.sum(max_pool(v, window) * w))(x)
    want = jax.grad(lambda v: jnp.sum(by_jnp_max(v) * w))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=0)
    assert np.sum(np.asarray(got)) == pytest.approx(
        float(jnp.sum(w)), rel=1e-5
    )  # each window passes on all of it


# ------------------------------------------------------------------ dropout


@pytest.fixture(scope="module")
def mlp_dropout(small_data):
    # Dropout has no parameters: the plain MLP's params fit the dropout MLP.
    return (
        build_model(model_config("mlp", dropout=0.5)),
        params_for(model_config("mlp")),
        scaled(small_data.train_x[:64]),
    )


def test_dropout_keys_drive_the_mask(mlp_dropout):
    model, params, x = mlp_dropout
    apply = lambda key: np.asarray(
        model.apply({"params": params}, x, train=True, rngs={"dropout": key})
    )
    a, a2, b = apply(jax.random.key(1)), apply(jax.random.key(1)), apply(jax.random.key(2))
    np.testing.assert_array_equal(a, a2)
    assert not np.allclose(a, b)


def test_eval_mode_is_deterministic_and_equals_the_no_dropout_model(mlp_dropout):
    model, params, x = mlp_dropout
    first = np.asarray(model.apply({"params": params}, x, train=False))
    second = np.asarray(model.apply({"params": params}, x, train=False))
    no_dropout = build_model(model_config("mlp", dropout=0.0))
    plain = np.asarray(no_dropout.apply({"params": params}, x, train=False))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, plain)
    # Dropout draws no randomness in eval mode: no rng needed, a given one changes nothing.
    keyed = model.apply({"params": params}, x, train=False, rngs={"dropout": jax.random.key(9)})
    np.testing.assert_array_equal(np.asarray(keyed), first)
    # train mode without a dropout key is an error, not a silent no-op
    with pytest.raises(flax.errors.InvalidRngError):
        model.apply({"params": params}, x, train=True)


@pytest.mark.parametrize(
    "name, rate, activation", [("mlp", 0.5, jax.nn.sigmoid), ("cnn", 0.4, jax.nn.relu)]
)
def test_train_mode_zeroes_about_rate_of_the_hidden_units(name, rate, activation, small_data):
    cfg = model_config(name, dropout=rate)
    model = build_model(cfg)
    assert model.cfg.dropout == rate
    x = scaled(small_data.train_x[:64])
    params = params_for(model_config(name))  # the same tree with or without dropout
    inter = jax.jit(
        lambda p: capture(model, p, x, train=True, rngs={"dropout": jax.random.key(5)})
    )(params)
    hidden = np.asarray(activation(inter["hidden"]))
    dropped = np.asarray(inter["Dropout_0"])
    live = hidden != 0  # relu units that are already 0 cannot tell
    assert live.sum() > 1000
    zeroed = (dropped == 0) & live
    assert abs(zeroed.sum() / live.sum() - rate) < 0.05
    # Kept units are scaled by 1 / (1 - rate), as inverted dropout (Keras) does.
    kept = ~zeroed & live
    np.testing.assert_allclose(dropped[kept], hidden[kept] / (1 - rate), rtol=1e-5)


@pytest.mark.parametrize(
    "kernel,stride,padding",
    [(3, 1, "SAME"), (3, 2, "SAME"), (5, 1, "VALID"), (2, 2, "SAME"), (4, 3, "VALID")],
)
def test_single_channel_conv_is_nn_conv(kernel, stride, padding):
    ours, ref = (
        SingleChannelConv(8, kernel, stride, padding),
        nn.Conv(8, (kernel, kernel), strides=stride, padding=padding),
    )
    loss = lambda m: lambda p, x, g: jnp.vdot(jax.nn.relu(m.apply({"params": p}, x)), g)  # noqa: E731
    rng = np.random.default_rng(0)
    x = rng.random((4, 28, 28, 1), np.float32)
    # Both initialisations in one program compiled as init_params compiles init: random draws at
    # the default optimisation level cost most of a case's compile time, and are not under test.
    init = lambda key: tuple(m.init(key, x)["params"] for m in (ours, ref))  # noqa: E731
    key = jax.random.key(1)
    inits = compile_ahead(jax.jit(init), key, tuning="one_shot")(key)
    params = {"kernel": inits[0]["kernel"], "bias": inits[0]["bias"] + 0.1}
    # gradients through a ReLU (some units dead) for the kernel, the bias and the image
    g = rng.standard_normal(jax.eval_shape(ref.apply, {"params": params}, x).shape, np.float32)

    @jax.jit  # one program a case: op by op, each primitive would compile on its own
    def both(params, x, g):
        outs = ours.apply({"params": params}, x), ref.apply({"params": params}, x)
        return outs, [jax.grad(loss(m), (0, 1))(params, x, g) for m in (ours, ref)]

    outs, (got, want) = both(params, x, g)
    # same parameters and, for a seed, the same initial values
    jax.tree.map(np.testing.assert_array_equal, *inits)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b))))


def test_cnn_uses_the_single_channel_conv_for_the_images_only():
    model = build_model(model_config("cnn"))
    x = jnp.zeros((1, 28, 28))
    convs = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, CONV_LAYERS):
            convs[context.module.name] = type(context.module).__name__
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):  # traced on abstract values: nothing is compiled
        jax.eval_shape(model.init, jax.random.key(0), x)
    assert convs == {"conv0": "SingleChannelConv", "conv1": "Conv"}

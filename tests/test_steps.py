"""The train and eval steps: loss goes down, one compile per epoch,
masking, dropout keys, evaluate."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fashion_jax.config import TrainConfig, model_config
from fashion_jax.data import batching
from fashion_jax.data.batching import epoch_order
from fashion_jax.model.models import build_model, init_params
from fashion_jax.model.optim import OPTIMIZERS, make_optimizer
from fashion_jax.model.state import create_train_state, epoch_sums
from fashion_jax.training import evaluate, steps


def device_split(data, n: int, start: int = 0):
    x = jax.device_put(data.train_x[start : start + n])
    y = jax.device_put(data.train_y[start : start + n].astype(np.int32))
    return x, y


def leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def copy_tree(tree):
    """A fresh copy: the jitted train step donates its state and sums."""
    return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


@functools.partial(jax.jit, static_argnames=("model", "train"))
def _mean_loss(model, params, images, labels, rngs, train):
    logits = model.apply(
        {"params": params}, images.astype(jnp.float32) / 255.0, train=train, rngs=rngs
    )
    return jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
    )


def steps_on_one_batch(model, params, tx, data, n: int):
    """(state, losses) after n train steps on the first 64 real images,
    the same batch every time."""
    step = steps.make_train_step(model, tx, seed=0, batch_size=64)
    x, y = device_split(data, 64)
    order = jnp.arange(64, dtype=jnp.int32)
    state = create_train_state(copy_tree(params), tx)
    losses = []
    for _ in range(n):  # a fresh accumulator each time: position 0, the same batch again
        state, _, metrics = step(state, epoch_sums(64), order, x, y)
        losses.append(float(metrics["loss"]))
    return state, losses


def reference_loss(model, params, images, labels, rngs=None) -> float:
    """Mean cross-entropy computed directly from model.apply (dropout on when rngs are given)."""
    return float(
        _mean_loss(model, params, jnp.asarray(images), jnp.asarray(labels), rngs, rngs is not None)
    )


class CountingModel:
    """Delegates to a flax module and counts how often the step's Python code traces apply()."""

    def __init__(self, model):
        self.model, self.traces = model, 0

    def apply(self, *args, **kwargs):
        self.traces += 1
        return self.model.apply(*args, **kwargs)


@pytest.fixture(scope="module")
def logreg():
    model = build_model(model_config("logreg"))
    return model, init_params(model, 0)


def test_repeated_steps_on_one_real_batch_lower_the_loss(small_data):
    model = build_model(model_config("mlp"))
    params = init_params(model, 0)
    config = TrainConfig(model=model.cfg, optimizer="sgd", learning_rate=0.5)
    tx = make_optimizer(config, total_steps=10)
    state, losses = steps_on_one_batch(model, params, tx, small_data, 6)
    assert int(state.step) == 6
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[0] == pytest.approx(
        reference_loss(model, params, small_data.train_x[:64], small_data.train_y[:64]), rel=1e-5
    )
    assert (
        reference_loss(model, state.params, small_data.train_x[:64], small_data.train_y[:64])
        < losses[-1]
    )


def test_a_whole_epoch_with_a_partial_last_batch_compiles_once_and_counts_every_row(
    small_data, logreg
):
    model, params = logreg
    n, batch_size = 100, 32  # 3 full batches and one of 4 rows
    counting = CountingModel(model)
    tx = optax.sgd(0.1)
    step = steps.make_train_step(counting, tx, seed=0, batch_size=batch_size)
    x, y = device_split(small_data, n)
    order = jax.device_put(batching.padded_order(epoch_order(n, 0, 0), batch_size))
    assert order.shape == (128,)
    state, acc = create_train_state(copy_tree(params), tx), epoch_sums(n)
    steps_per_epoch = -(-n // batch_size)
    for _ in range(steps_per_epoch):
        state, acc, _ = step(state, acc, order, x, y)
    assert counting.traces == 1
    if hasattr(step, "_cache_size"):
        assert step._cache_size() == 1
    acc = jax.device_get(acc)
    assert int(acc.next_batch) == steps_per_epoch
    assert int(acc.count) == n
    assert int(state.step) == steps_per_epoch
    assert int(acc.first_bad_step) == -1
    assert 0 < int(acc.correct) <= n


def test_padded_rows_are_masked_out_of_loss_gradient_and_counts(small_data, logreg):
    model, params = logreg
    n, batch_size = 20, 32
    x, y = device_split(small_data, batch_size)  # rows 20..31 are real images, but beyond n
    tx = optax.sgd(0.5)
    step = jax.jit(steps.train_step_fn(model, tx, seed=0, batch_size=batch_size))
    order = jnp.arange(batch_size, dtype=jnp.int32)
    state, acc, metrics = step(create_train_state(params, tx), epoch_sums(n), order, x, y)
    want = reference_loss(model, params, small_data.train_x[:n], small_data.train_y[:n])
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-6)
    assert float(metrics["loss"]) != pytest.approx(
        reference_loss(
            model, params, small_data.train_x[:batch_size], small_data.train_y[:batch_size]
        ),
        rel=1e-4,
    )
    assert int(acc.count) == n
    assert float(acc.loss_sum) == pytest.approx(want * n, rel=1e-6)
    logits = model.apply(
        {"params": params}, jnp.asarray(small_data.train_x[:n], jnp.float32) / 255.0
    )
    assert int(acc.correct) == int(
        np.sum(np.argmax(np.asarray(logits), -1) == small_data.train_y[:n])
    )
    # The update equals a step on exactly the n real rows, without any padding.
    exact = jax.jit(steps.train_step_fn(model, tx, seed=0, batch_size=n))
    exact_state, _, exact_metrics = exact(
        create_train_state(params, tx), epoch_sums(n), order[:n], x, y
    )
    assert float(exact_metrics["loss"]) == pytest.approx(float(metrics["loss"]), rel=1e-6)
    for got, ref in zip(jax.tree.leaves(state.params), jax.tree.leaves(exact_state.params)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_multi_step_call_matches_single_steps(small_data, logreg):
    model, params = logreg
    n, batch_size, k = 96, 32, 3
    tx = optax.adam(1e-2)
    x, y = device_split(small_data, n)
    order = jax.device_put(batching.padded_order(epoch_order(n, 1, 0), batch_size))
    single = steps.make_train_step(model, tx, seed=0, batch_size=batch_size)
    multi = steps.make_train_step(model, tx, seed=0, batch_size=batch_size, steps_per_call=k)
    s1, a1 = create_train_state(copy_tree(params), tx), epoch_sums(n)
    for _ in range(k):
        s1, a1, m1 = single(s1, a1, order, x, y)
    s2, a2, m2 = multi(create_train_state(copy_tree(params), tx), epoch_sums(n), order, x, y)
    assert int(s2.step) == int(s1.step) == k
    assert int(a2.count) == int(a1.count) == n and int(a2.correct) == int(a1.correct)
    assert float(a2.loss_sum) == pytest.approx(float(a1.loss_sum), rel=1e-5)
    assert float(m2["loss"]) == pytest.approx(
        float(m1["loss"]), rel=1e-5
    )  # the last step's metrics
    for got, ref in zip(jax.tree.leaves(s2.params), jax.tree.leaves(s1.params)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_dropout_key_is_fold_in_of_seed_and_global_step(small_data):
    cfg = model_config("mlp", dropout=0.5)
    model = build_model(cfg)
    params = init_params(model, 0)
    tx = optax.sgd(0.0)
    seed, batch_size = 7, 64
    x, y = device_split(small_data, batch_size)
    order = jnp.arange(batch_size, dtype=jnp.int32)
    step = jax.jit(steps.train_step_fn(model, tx, seed=seed, batch_size=batch_size))

    def loss_at(fn, global_step: int) -> float:
        state = create_train_state(params, tx).replace(step=jnp.asarray(global_step, jnp.int32))
        return float(fn(state, epoch_sums(batch_size), order, x, y)[2]["loss"])

    root = jax.random.fold_in(jax.random.key(seed), steps.DROPOUT_STREAM)
    losses = {}
    for s in (0, 1, 5):
        losses[s] = loss_at(step, s)
        direct = reference_loss(
            model,
            params,
            small_data.train_x[:batch_size],
            small_data.train_y[:batch_size],
            rngs={"dropout": jax.random.fold_in(root, s)},
        )
        assert losses[s] == pytest.approx(direct, rel=1e-6)
    assert loss_at(step, 5) == losses[5]  # same step, same mask
    assert len(set(losses.values())) == 3  # another step, another mask
    no_dropout = reference_loss(
        model, params, small_data.train_x[:batch_size], small_data.train_y[:batch_size]
    )
    assert no_dropout not in losses.values()


@pytest.mark.parametrize("whole_split", [False, True], ids=["batch-per-call", "whole-split"])
@pytest.mark.parametrize("n, batch_size", [(250, 64), (37, 100), (64, 64)])
def test_evaluate_equals_a_numpy_computation(small_data, logreg, n, batch_size, whole_split):
    model, params = logreg
    x, y = small_data.val_x[:n], small_data.val_y[:n]
    eval_step = evaluate.make_eval_step(model, batch_size, whole_split=whole_split)
    assert len(eval_step.starts(n)) == (1 if whole_split else -(-n // batch_size))
    got = evaluate.evaluate(
        eval_step, params, jax.device_put(x), jax.device_put(y.astype(np.int32))
    )
    w = np.asarray(params["dense"]["kernel"], np.float64)  # (784, 10), as nn.Dense and Keras
    b = np.asarray(params["dense"]["bias"], np.float64)
    logits = (x.reshape(n, -1).astype(np.float64) / 255.0) @ w + b
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert got["n"] == n
    assert got["loss"] == pytest.approx(float(-log_probs[np.arange(n), y].mean()), rel=1e-5)
    assert got["accuracy"] == float(np.mean(np.argmax(logits, 1) == y))


def test_a_cnn_split_in_one_program_sums_as_batch_per_call(small_data):
    model = build_model(model_config("cnn", filters=(4, 8), hidden=16))
    params = init_params(model, 0)
    x, y = jax.device_put(small_data.val_x[:77]), jax.device_put(small_data.val_y[:77])
    one, whole = (evaluate.make_eval_step(model, 20, whole_split=w) for w in (False, True))
    a, b = (evaluate.evaluate(step, params, x, y) for step in (one, whole))
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_loops_run_inside_one_program_except_conv_nets_on_cpu():
    assert not evaluate.loops_in_one_program(convolutional=True, backend="cpu")
    assert evaluate.loops_in_one_program(convolutional=False, backend="cpu")
    assert evaluate.loops_in_one_program(convolutional=True, backend="gpu")
    # training follows the same rule: one step per call exactly where eval runs a batch per call
    assert steps.steps_per_call(True, "cpu", 1500) == 1
    assert steps.steps_per_call(False, "cpu", 1500) == 100
    assert steps.steps_per_call(False, "cpu", 40) == 40
    assert steps.steps_per_call(True, "tpu", 1500) == 1500
    conv = evaluate.eval_step_for(build_model(model_config("cnn")), 200)
    dense = evaluate.eval_step_for(build_model(model_config("dense")), 200)
    cpu = jax.default_backend() == "cpu"
    assert conv.whole_split is not cpu and dense.whole_split


def test_evaluate_of_an_empty_split_is_nan(logreg):
    model, params = logreg
    out = evaluate.evaluate(
        evaluate.make_eval_step(model, 8),
        params,
        jnp.zeros((0, 28, 28), jnp.uint8),
        jnp.zeros((0,), jnp.int32),
    )
    assert out["n"] == 0 and np.isnan(out["loss"]) and np.isnan(out["accuracy"])


def test_padded_order_pads_with_index_zero_to_whole_batches():
    order = np.array([5, 3, 9, 1, 7], np.int32)
    np.testing.assert_array_equal(
        np.asarray(batching.padded_order(order, 4)), [5, 3, 9, 1, 7, 0, 0, 0]
    )
    np.testing.assert_array_equal(np.asarray(batching.padded_order(order, 5)), order)


def test_optimizer_registry_is_the_chapter_set():
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"}


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
def test_each_optimizer_lowers_the_loss_in_a_few_steps(name, small_data, logreg):
    model, params = logreg
    config = TrainConfig(model=model.cfg, optimizer=name)  # Keras's default learning rate
    tx = make_optimizer(config, total_steps=5)
    state, losses = steps_on_one_batch(model, params, tx, small_data, 5)
    final = reference_loss(model, state.params, small_data.train_x[:64], small_data.train_y[:64])
    assert final < losses[0], (name, losses, final)
    assert not leaves_equal(state.params, params)

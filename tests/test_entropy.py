"""Entropy, cross-entropy and KL against hand values, optax, and their identities."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fashion_jax.chapter.entropy as ent
from fashion_jax.chapter.entropy import (
    EPS,
    EXPLANATION,
    cross_entropy,
    entropy,
    kl_divergence,
    sparse_cross_entropy_from_logits,
)

PROPS = settings(max_examples=60, deadline=None)


@st.composite
def distributions(draw, k=None):
    k = draw(st.sampled_from([2, 3, 10])) if k is None else k
    w = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k)), dtype=np.float32)
    return w / w.sum()


@st.composite
def distribution_pairs(draw):
    k = draw(st.sampled_from([2, 3, 10]))  # few shapes, few XLA compiles
    return draw(distributions(k)), draw(distributions(k))


def test_hand_values():
    assert float(entropy(jnp.full(4, 0.25))) == pytest.approx(math.log(4), rel=1e-6)
    assert float(entropy(jnp.array([0.0, 1.0, 0.0]))) == 0.0
    assert float(cross_entropy(jnp.array([1.0, 0.0]), jnp.array([0.5, 0.5]))) == pytest.approx(
        math.log(2)
    )
    assert float(kl_divergence(jnp.array([1.0, 0.0]), jnp.array([0.5, 0.5]))) == pytest.approx(
        math.log(2)
    )


def test_no_nans_at_zero_probabilities():
    p = jnp.array([0.0, 1.0])
    assert np.isfinite(float(entropy(p)))
    # q == 0 where p > 0: infinite in exact arithmetic, capped by EPS here.
    ce = float(cross_entropy(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])))
    assert ce == pytest.approx(-math.log(EPS), rel=1e-5)
    grad = jax.grad(lambda q: cross_entropy(p, q))(jnp.array([0.5, 0.5]))
    assert np.isfinite(np.asarray(grad)).all()


def test_last_axis_batching():
    p = jnp.array([[0.25] * 4, [1.0, 0, 0, 0]])
    np.testing.assert_allclose(entropy(p), [math.log(4), 0.0], atol=1e-6)


@PROPS
@given(pq=distribution_pairs())
def test_kl_nonnegative_zero_iff_equal(pq):
    p, q = pq
    kl = float(kl_divergence(p, q))
    assert kl >= -1e-6
    assert float(kl_divergence(p, p)) == pytest.approx(0.0, abs=1e-6)
    # Pinsker's inequality makes "zero only if equal" quantitative: KL >= 2 * TV^2.
    tv = 0.5 * float(np.abs(p - q).sum())
    assert kl >= 2 * tv**2 - 1e-5
    np.testing.assert_allclose(kl, float(cross_entropy(p, q) - entropy(p)), atol=1e-5)


@PROPS
@given(p=distributions())
def test_entropy_bounds(p):
    h = float(entropy(p))
    assert -1e-6 <= h <= math.log(len(p)) + 1e-5


# Ten classes, as in Fashion-MNIST; one fixed shape also keeps XLA from
# recompiling every op for every example.
@PROPS
@given(
    logits=st.lists(st.floats(-30, 30), min_size=10, max_size=10),
    label=st.integers(0, 9),
)
def test_sparse_loss_matches_optax_and_one_hot_cross_entropy(logits, label):
    logits = jnp.asarray(logits, dtype=jnp.float32)[None]
    label = jnp.array([label])
    ours = sparse_cross_entropy_from_logits(logits, label)
    one_hot = jax.nn.one_hot(label, logits.shape[-1])
    np.testing.assert_allclose(
        ours, optax.softmax_cross_entropy_with_integer_labels(logits, label), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        ours, optax.softmax_cross_entropy(logits, one_hot), rtol=1e-5, atol=1e-5
    )
    # One-hot p: H(p) = 0, so cross-entropy == KL == -log q[label]; eps only
    # matters once q[label] < 1e-7, i.e. a loss above ~16 nats.
    q = jax.nn.softmax(logits)
    if float(ours[0]) < 15.0:
        np.testing.assert_allclose(cross_entropy(one_hot, q), ours, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(kl_divergence(one_hot, q), ours, rtol=1e-4, atol=1e-4)


def test_sparse_loss_batched_shape():
    logits = np.random.default_rng(0).normal(size=(5, 3, 10)).astype(np.float32)
    labels = jnp.zeros((5, 3), dtype=jnp.int32)
    assert sparse_cross_entropy_from_logits(logits, labels).shape == (5, 3)


def test_explanation_matches_docstring():
    assert "KL" in EXPLANATION and "maximum-likelihood" in EXPLANATION
    if ent.__doc__ is not None:  # absent under python -OO
        assert EXPLANATION in " ".join(ent.__doc__.split())

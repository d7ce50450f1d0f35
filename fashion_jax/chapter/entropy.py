"""Entropy and cross-entropy, in nats, and why cross-entropy is the training loss.

Entropy H(p) = -sum p log p measures how uncertain a distribution is: zero
for a sure outcome, largest (log K) when all K outcomes are equally likely.
Cross-entropy H(p, q) = -sum p log q is the average surprise of outcomes drawn
from the true distribution p when we score them with the model's distribution
q; it splits as H(p, q) = H(p) + KL(p || q), so for fixed data minimising it
minimises the KL gap between model and truth. With one-hot labels H(p) = 0,
so cross-entropy equals KL and reduces to -log q[label], which is Keras's
sparse_categorical_crossentropy. Averaged over a data set that is the negative
log-likelihood, so minimising it is maximum-likelihood training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

__all__ = [
    "EPS",
    "EXPLANATION",
    "cross_entropy",
    "entropy",
    "kl_divergence",
    "sparse_cross_entropy_from_logits",
]

# Kept in step with the module docstring (tests check); a separate constant so a
# report generator still has the text when Python runs with -OO and drops docstrings.
EXPLANATION: str = (
    "Entropy H(p) = -sum p log p measures how uncertain a distribution is: zero "
    "for a sure outcome, largest (log K) when all K outcomes are equally likely. "
    "Cross-entropy H(p, q) = -sum p log q is the average surprise of outcomes drawn "
    "from the true distribution p when we score them with the model's distribution "
    "q; it splits as H(p, q) = H(p) + KL(p || q), so for fixed data minimising it "
    "minimises the KL gap between model and truth. With one-hot labels H(p) = 0, "
    "so cross-entropy equals KL and reduces to -log q[label], which is Keras's "
    "sparse_categorical_crossentropy. Averaged over a data set that is the negative "
    "log-likelihood, so minimising it is maximum-likelihood training."
)

# Same value as Keras's backend epsilon: a predicted probability of exactly 0 for
# an outcome that happens would give an infinite loss; clipping caps it at
# -log(1e-7) ~= 16.1 nats. Probabilities above EPS are untouched.
EPS: float = 1e-7


def entropy(p: jax.Array) -> jax.Array:
    """H(p) = -sum p log p over the last axis, in nats; 0 log 0 counts as 0."""
    p = jnp.asarray(p)
    # xlogy(0, 0) == 0, so impossible outcomes contribute nothing instead of NaN.
    return -jnp.sum(xlogy(p, p), axis=-1)


def cross_entropy(p_true: jax.Array, q_pred: jax.Array, eps: float = EPS) -> jax.Array:
    """H(p, q) = -sum p log q over the last axis, with q clipped to [eps, 1]."""
    p = jnp.asarray(p_true)
    q = jnp.clip(jnp.asarray(q_pred), eps, 1.0)
    return -jnp.sum(xlogy(p, q), axis=-1)


def kl_divergence(p: jax.Array, q: jax.Array, eps: float = EPS) -> jax.Array:
    """KL(p || q) = H(p, q) - H(p), in nats; >= 0 and 0 exactly when q == p."""
    p = jnp.asarray(p)
    q = jnp.clip(jnp.asarray(q), eps, 1.0)
    # Subtract per element before summing: the same quantity as
    # cross_entropy - entropy, without cancelling two large sums in float32.
    return jnp.sum(xlogy(p, p) - xlogy(p, q), axis=-1)


def sparse_cross_entropy_from_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example -log softmax(logits)[label]; the models' loss (no mean taken)."""
    # log_softmax subtracts the max logit first, so no softmax underflows to 0
    # and no eps clipping is needed on this path.
    log_q = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
    labels = jnp.asarray(labels)
    return -jnp.take_along_axis(log_q, labels[..., None], axis=-1)[..., 0]

"""The chapter's perceptron / XOR / backpropagation story, made checkable.

The chapter says a single perceptron cannot compute XOR, that a multi-layer
perceptron can, that backpropagation (gradient descent through the layers)
finds weights for it, and that the book first plugs in known-correct w, b by
hand. Each claim is a function here so tests can hold it to account.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_HIDDEN",
    "XOR_X",
    "XOR_Y",
    "hand_accuracy",
    "hand_predict",
    "hand_weights",
    "mlp_predict",
    "perceptron_best_accuracy",
    "train_mlp",
    "xor_report",
]

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
XOR_Y = np.array([0, 1, 1, 0], dtype=np.int32)

Params = dict[str, jax.Array]


def _step(z: jax.Array) -> jax.Array:
    # Threshold unit: fires only when the weighted sum strictly exceeds 0.
    return (z > 0).astype(jnp.int32)


def _accuracy(pred: jax.Array) -> float:
    return float(np.mean(np.asarray(pred) == XOR_Y))


# Each function below is one jitted program: op by op, every jnp call outside jit compiles a
# program of its own, and compiling was most of what `fashion-jax xor` cost (docs/SPEED.md).
@partial(jax.jit, static_argnames=("lo", "hi", "num"))
def _grid_perceptron_accuracy(lo: float = -3.0, hi: float = 3.0, num: int = 61) -> jax.Array:
    # Every (w1, w2, b) on the grid at once: (G, 3) params against 4 points.
    axis = jnp.linspace(lo, hi, num)
    w1, w2, b = (a.ravel() for a in jnp.meshgrid(axis, axis, axis, indexing="ij"))
    z = w1[:, None] * XOR_X[:, 0] + w2[:, None] * XOR_X[:, 1] + b[:, None]
    return jnp.mean(_step(z) == XOR_Y, axis=1).max()


@partial(jax.jit, static_argnames=("steps",))
def _logistic_perceptron_predictions(seed: int = 0, steps: int = 2000, lr: float = 0.5):
    # The best a gradient-trained single layer does; it drifts towards w=0, i.e. a coin flip.
    w = 0.5 * jax.random.normal(jax.random.fold_in(jax.random.key(seed), 0), (2,))
    x, y = jnp.asarray(XOR_X), jnp.asarray(XOR_Y, jnp.float32)

    def loss(wb):
        w, b = wb
        return _bce_from_logits(x @ w + b, y)

    def body(wb, _):
        g = jax.grad(loss)(wb)
        return jax.tree.map(lambda p, d: p - lr * d, wb, g), None

    w, b = jax.lax.scan(body, (w, jnp.zeros(())), None, length=steps)[0]
    return _step(x @ w + b)


def perceptron_best_accuracy() -> float:
    """Best accuracy of any single-layer step(w.x + b) on XOR: at most 3/4, since XOR is not
    linearly separable."""
    return max(float(_grid_perceptron_accuracy()), _accuracy(_logistic_perceptron_predictions()))


def _bce_from_logits(logits: jax.Array, y: jax.Array) -> jax.Array:
    # log-sigmoid form avoids log(0) when the sigmoid saturates.
    return -jnp.mean(y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits))


def _init_mlp(hidden: int, seed: int) -> Params:
    key = jax.random.key(seed)
    # Distinct fold_in streams per tensor: changing `hidden` never reshuffles the others.
    # Scale 1 (not 1/sqrt(fan_in)): with 2 inputs, small weights leave tanh near-linear
    # and the net sits on the symmetric saddle for many steps.
    return {
        "w1": jax.random.normal(jax.random.fold_in(key, 1), (2, hidden)),
        "b1": jnp.zeros((hidden,)),
        "w2": jax.random.normal(jax.random.fold_in(key, 2), (hidden,)) / jnp.sqrt(hidden),
        "b2": jnp.zeros(()),
    }


def _mlp_logits(params: Params, x: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


@jax.jit
def mlp_predict(params: Params, x: jax.Array | np.ndarray = XOR_X) -> jax.Array:
    """0/1 predictions of a trained 2-hidden-1 MLP (sigmoid > 0.5, i.e. logit > 0)."""
    return (_mlp_logits(params, jnp.asarray(x)) > 0).astype(jnp.int32)


@partial(jax.jit, static_argnames=("hidden", "steps"))
def _fit(seed: int, hidden: int, steps: int, lr: float) -> tuple[Params, jax.Array]:
    params = _init_mlp(hidden, seed)
    x, y = jnp.asarray(XOR_X), jnp.asarray(XOR_Y, jnp.float32)
    loss = lambda p: _bce_from_logits(_mlp_logits(p, x), y)

    def body(p, _):
        value, g = jax.value_and_grad(loss)(p)
        # Plain full-batch gradient descent: this is the chapter's backpropagation.
        return jax.tree.map(lambda a, d: a - lr * d, p, g), value

    return jax.lax.scan(body, params, None, length=steps)


# Width 8, not the minimal 2 or 4: with 4 tanh units about 1 seed in 30 (42 among
# them) lands in the BCE local minimum at loss ln(2)/2; 8 units solved 1000/1000 seeds.
DEFAULT_HIDDEN = 8


def train_mlp(
    hidden: int = DEFAULT_HIDDEN, steps: int = 2000, lr: float = 0.5, seed: int = 0
) -> tuple[Params, float]:
    """Train a 2-hidden-1 tanh/sigmoid MLP on XOR with BCE and gradient descent; (params,
    accuracy)."""
    params, _ = _fit(seed, hidden, steps, lr)
    return params, _accuracy(mlp_predict(params))


def hand_weights() -> dict[str, np.ndarray]:
    """Known-correct step-activation weights: hidden = (NAND, OR), output = AND of the two."""
    return {
        "w1": np.array([[-2.0, 2.0], [-2.0, 2.0]], dtype=np.float32),  # columns: NAND, OR
        "b1": np.array([3.0, -1.0], dtype=np.float32),
        "w2": np.array([1.0, 1.0], dtype=np.float32),
        "b2": np.float32(-1.5),
    }


@jax.jit
def hand_predict(x: jax.Array | np.ndarray = XOR_X) -> jax.Array:
    """Forward pass of the hand-set 2-2-1 step network."""
    w = hand_weights()
    h = _step(jnp.asarray(x) @ w["w1"] + w["b1"])
    return _step(h @ w["w2"] + w["b2"])


def hand_accuracy() -> float:
    """Accuracy of the hand-set weights on the four XOR points (1.0)."""
    return _accuracy(hand_predict())


def xor_report(seed: int = 0) -> dict:
    """JSON-ready summary: perceptron ceiling, trained MLP and hand-set network on XOR."""
    hidden = DEFAULT_HIDDEN
    params, mlp_acc = train_mlp(hidden=hidden, seed=seed)
    return {
        "perceptron_accuracy": perceptron_best_accuracy(),
        "mlp_accuracy": mlp_acc,
        "mlp_hidden": hidden,
        "hand_accuracy": hand_accuracy(),
        "mlp_predictions": [int(v) for v in mlp_predict(params)],
        "hand_predictions": [int(v) for v in hand_predict()],
    }

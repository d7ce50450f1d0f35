"""Research harness for issue 15's item 4 (time to 92%): a cheaper CNN trained on its hardest
examples. Not a preset yet; README ("Presets") says what it would take.

The recipe: conv32 -> pool -> conv64 with stride 2 (no second pool) -> Dense(64) -> Dense(10),
Adam 3e-3 with cosine decay over every step, batch 32. The first pass covers all training rows;
each later pass trains on the highest-loss share of them (FRACTIONS), ranked by each row's loss
from when it was last trained on, which the train step records at no extra cost. `--plain` trains
the same net for the same number of steps on uniformly drawn rows instead (the control).

    python -m experiments.research.hard_examples [--seeds 0,1,2,3] [--plain]

Prints one JSON line per seed: test accuracy and training seconds (compiles excluded). Time it
against `python -m experiments.bench.peers torch_cnn` run next to it, as
experiments/bench/fast_seeds.py times the preset.
"""

from __future__ import annotations

import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fashion_jax.data.dataset import load_dataset
from fashion_jax.model.cpu_layers import SingleChannelConv, max_pool
from fashion_jax.runtime.compile import compile_ahead

FRACTIONS = (1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.3)  # share of the training rows per pass
BATCH, LEARNING_RATE = 32, 3e-3


class StridedCNN(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(SingleChannelConv(32, 3, 1, "SAME")(x[..., None]))  # 28x28x32
        x = max_pool(x, 2)  # 14x14x32
        x = nn.relu(nn.Conv(64, (3, 3), strides=2, padding="SAME")(x))  # 7x7x64
        x = nn.relu(nn.Dense(64)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(x)


def make_step(model: nn.Module, tx: optax.GradientTransformation):
    def step(state, images, labels, idx):
        params, opt_state, last_loss = state
        x, y = images[idx].astype(jnp.float32) / 255.0, labels[idx]

        def loss_fn(p):
            per_row = optax.softmax_cross_entropy_with_integer_labels(
                model.apply({"params": p}, x), y
            )
            return per_row.mean(), per_row

        grads, per_row = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, last_loss.at[idx].set(per_row)

    return step


def hardest(last_loss: jax.Array, order: jax.Array, key: jax.Array, k: int) -> jax.Array:
    """The k rows of `order` with the highest last loss (ties in `order`'s random order),
    reshuffled."""
    top = order[jnp.argsort(-last_loss[order], stable=True)][:k]
    return top[jax.random.permutation(key, k)]


def train(seed: int, images: jax.Array, labels: jax.Array, plain: bool) -> tuple[dict, float]:
    n = images.shape[0]
    steps = [round(f * n) // BATCH for f in FRACTIONS]
    tx = optax.adam(optax.cosine_decay_schedule(LEARNING_RATE, sum(steps)))
    model, key = StridedCNN(), jax.random.key(seed)
    params = model.init(jax.random.fold_in(key, 0), jnp.zeros((1, 28, 28)))["params"]
    state = (params, tx.init(params), jnp.full((n,), jnp.inf))  # unseen rows rank first
    step = compile_ahead(
        jax.jit(make_step(model, tx), donate_argnums=0),
        state,
        images,
        labels,
        jnp.zeros(BATCH, jnp.int32),
        tuning="hot",
    )
    select = jax.jit(hardest, static_argnums=3)
    orders = [
        jax.random.permutation(jax.random.fold_in(key, 1000 + p), n) for p in range(len(FRACTIONS))
    ]
    keys = [jax.random.fold_in(key, 2000 + p) for p in range(len(FRACTIONS))]
    for p, f in enumerate(FRACTIONS):  # compiled before the clock starts
        if f < 1 and not plain:
            select(state[2], orders[p], keys[p], steps[p] * BATCH).block_until_ready()
    t0 = time.perf_counter()
    for p, f in enumerate(FRACTIONS):
        k = steps[p] * BATCH
        rows = orders[p][:k] if f >= 1 or plain else select(state[2], orders[p], keys[p], k)
        batches = rows.reshape(steps[p], BATCH)
        for i in range(steps[p]):
            state = step(state, images, labels, batches[i])
    jax.block_until_ready(state)
    return state[0], time.perf_counter() - t0


def accuracy(params: dict, images: jax.Array, labels: jax.Array) -> float:
    logits = jax.jit(lambda p, x: StridedCNN().apply({"params": p}, x.astype(jnp.float32) / 255))
    hits = sum(
        int((logits(params, images[i : i + 1000]).argmax(-1) == labels[i : i + 1000]).sum())
        for i in range(0, images.shape[0], 1000)
    )
    return hits / images.shape[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--plain", action="store_true", help="uniform rows: the control")
    args = p.parse_args()
    data = load_dataset()
    images, labels = jax.device_put((data.train_x, data.train_y.astype("int32")))
    test = jax.device_put((data.test_x, data.test_y.astype("int32")))
    for seed in (int(s) for s in args.seeds.split(",")):
        params, seconds = train(seed, images, labels, args.plain)
        out = {"seed": seed, "plain": args.plain, "train_seconds": round(seconds, 2)}
        print(json.dumps({**out, "test_accuracy": accuracy(params, *test)}), flush=True)


if __name__ == "__main__":
    main()

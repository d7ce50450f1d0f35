"""
Section 14: entropy and cross-entropy, and why cross-entropy is the loss every model here trains on.

The chapter's notes: entropy measures uncertainty; cross-entropy scores the model's distribution q
against the true one p; Keras's loss='sparse_categorical_crossentropy'. A few numbers make that
concrete, and the last checks that our sparse cross-entropy equals optax's on real logits from the
section-6 Dense model (and that its mean is the validation loss fit reported).
"""

from __future__ import annotations

import math
from pathlib import Path

from experiments.chapter import common as C
from experiments.chapter import s06_dense

SECTION = "s14"
TITLE = "Section 14: entropy, cross-entropy and the loss"


def _dense_model(out_dir: Path, quick: bool):
    """(model, params, how) of s06's Dense model; trained here (1 epoch) when s06 has not run."""
    import dataclasses

    from fashion_jax.storage.model_files import load_model
    from fashion_jax.storage.run_files import load_json

    workdir = C.work_dir(out_dir, "dense")
    if (workdir / "config.json").exists() and load_json(
        workdir / "config.json"
    ).model.name == "dense":
        try:
            _, model, params = load_model(workdir)
            return model, params, f"s06's Dense model ({workdir.name}/, restored)"
        except Exception:  # an interrupted s06 leaves no params: train our own below
            pass
    from fashion_jax.model.models import build_model

    cfg = dataclasses.replace(s06_dense.config(quick), epochs=1)
    r = C.fit(cfg, C.dataset(quick), C.work_dir(out_dir, "s14_dense"))
    return (
        build_model(cfg.model),
        r.params,
        "a Dense model trained here for 1 epoch (s06 had not run)",
    )


def run(out_dir: Path, quick: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from fashion_jax.chapter.entropy import (
        EXPLANATION,
        cross_entropy,
        entropy,
        kl_divergence,
        sparse_cross_entropy_from_logits,
    )
    from fashion_jax.training.evaluate import predict_logits

    rows = []
    with C.timer() as t:
        uniform = jnp.full(10, 0.1)
        onehot = jax.nn.one_hot(0, 10)
        confident = jnp.concatenate([jnp.array([0.9]), jnp.full(9, 0.1 / 9)])
        wrong = jnp.concatenate([jnp.array([0.01]), jnp.full(9, 0.99 / 9)])
        h_uniform = float(entropy(uniform))
        ce_confident, ce_unsure, ce_wrong = (
            float(cross_entropy(onehot, q)) for q in (confident, uniform, wrong)
        )
        p = jax.nn.softmax(jax.random.normal(jax.random.key(1), (10,)))
        q = jax.nn.softmax(jax.random.normal(jax.random.key(2), (10,)))
        split = abs(float(cross_entropy(p, q)) - float(entropy(p) + kl_divergence(p, q)))
    each = t() / 5
    rows += [
        C.row(
            SECTION,
            "entropy of the uniform distribution over 10 classes (nats)",
            h_uniform,
            f"ln 10 = {math.log(10):.4f}",
            each,
            ok=abs(h_uniform - math.log(10)) < 1e-5,
        ),
        C.row(
            SECTION,
            "cross-entropy, confident and right (q[true] = 0.9)",
            ce_confident,
            f"−ln 0.9 = {-math.log(0.9):.4f}",
            each,
            ok=abs(ce_confident + math.log(0.9)) < 1e-5,
        ),
        C.row(
            SECTION,
            "cross-entropy, unsure (uniform q)",
            ce_unsure,
            f"ln 10 = {math.log(10):.4f}",
            each,
            ok=abs(ce_unsure - math.log(10)) < 1e-5,
        ),
        C.row(
            SECTION,
            "cross-entropy, confident and wrong (q[true] = 0.01)",
            ce_wrong,
            f"−ln 0.01 = {-math.log(0.01):.4f}",
            each,
            ok=abs(ce_wrong + math.log(0.01)) < 1e-4,
        ),
        C.row(
            SECTION,
            "|H(p, q) − (H(p) + KL(p‖q))|, random p, q",
            f"{split:.1e}",
            "0",
            each,
            ok=split < 1e-5,
        ),
    ]

    with C.timer() as t:
        model, params, how = _dense_model(out_dir, quick)
        data = C.dataset(quick)
        # the library's forward pass; one batch of the whole split, so one compile
        # for a one-off pass
        logits = predict_logits(model, params, data.val_x, batch_size=len(data.val_x))
        labels = jnp.asarray(data.val_y, jnp.int32)
        ours = np.asarray(sparse_cross_entropy_from_logits(logits, labels))
        theirs = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        via_probs = np.asarray(cross_entropy(jax.nn.one_hot(labels, 10), jax.nn.softmax(logits)))
        evaluated = C.evaluate(model, params, data.val_x, data.val_y)
    diff = float(np.max(np.abs(ours - theirs)))
    rows += [
        C.row(
            SECTION,
            f"sparse CE vs optax on {len(labels):,} real logits: max |diff|",
            f"{diff:.1e}",
            "0 (float32 rounding)",
            t(),
            ok=diff < 1e-5,
        ),
        C.row(
            SECTION,
            "mean sparse CE = the model's evaluated val loss",
            f"{ours.mean():.4f} = {evaluated['loss']:.4f}",
            "equal (it is the loss)",
            0.0,
            ok=abs(float(ours.mean()) - evaluated["loss"]) < 1e-4,
        ),
    ]
    gap = np.abs(via_probs - ours)
    capped = int(np.sum(gap > 1e-3))
    notes = [
        f"Logits from {how}. "
        "Through probabilities instead, cross_entropy(one_hot, softmax(logits)) agrees with the "
        f"logits path to {float(np.median(gap)):.1e} (median) but not everywhere: "
        f"on {capped} of {len(ours):,} "
        "examples the float32 softmax of the true class is below 1e-7, "
        "the clip caps the loss at −ln 1e-7 ≈ 16.1 "
        f"nats while the true value is up to {float(ours.max()):.1f} "
        f"(largest gap {float(gap.max()):.1f}). "
        "That is why the loss is computed from logits (log_softmax), never from softmax outputs.",
        "In the project's own words (fashion_jax.chapter.entropy.EXPLANATION): " + EXPLANATION,
        "How that reaches the models: every model here outputs 10 logits, with no softmax layer; "
        "the train and eval "
        "steps score them with optax.softmax_cross_entropy_with_integer_labels, "
        "i.e. −log softmax(logits)[label] "
        "(the row above shows it equals ours), averaged over the batch: "
        "Keras's sparse_categorical_crossentropy. "
        "A sure, right prediction costs 0 nats, a coin flip over 10 classes "
        "ln 10 ≈ 2.30, and a confident mistake a lot (−ln 0.01 ≈ 4.61): "
        "the loss falls as the model "
        "puts more probability on the true class, "
        "which is why the chapter sees it fall while accuracy rises.",
    ]
    return {"rows": rows, "figures": [], "notes": notes}


if __name__ == "__main__":
    C.main(run, __doc__)

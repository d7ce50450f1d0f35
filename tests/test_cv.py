"""Vmapped k-fold CV: every fold equals that fold trained alone;
any model; the chapter's target on real data."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import require_real_data

from fashion_jax.config import ModelConfig, TrainConfig, model_config
from fashion_jax.data import batching, splits
from fashion_jax.data import dataset as data
from fashion_jax.model.models import build_model, init_params
from fashion_jax.model.optim import make_optimizer
from fashion_jax.model.state import create_train_state, epoch_sums
from fashion_jax.training import cv, evaluate, steps

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def real_train() -> tuple[np.ndarray, np.ndarray]:
    require_real_data(system_dir_only=True)
    return data.load_split("train", REAL_DIR)


@functools.cache
def reference_init(model: ModelConfig, seed: int) -> dict:
    return init_params(build_model(model), seed)  # fit's init; cached: its compile is the slow part


def lone_folds(
    config: TrainConfig, images: np.ndarray, labels: np.ndarray, folds: int, **kfold
) -> tuple[list, list]:
    """Reference: each fold trained on its own, un-vmapped, as fit would
    (init_params, data.epoch_order)."""
    bs = config.batch_size
    folds_rows = splits.kfold_indices(len(labels), folds, **kfold)
    model = build_model(config.model)
    # The CV's optimizer sees the largest fold's step count (it matters only to a schedule); so does
    # this one.
    tx = make_optimizer(config, config.epochs * -(-max(len(tr) for tr, _ in folds_rows) // bs))
    step = jax.jit(steps.train_step_fn(model, tx, config.seed, bs))
    eval_step = evaluate.make_eval_step(model, 64)
    x, y = jax.device_put(images), jax.device_put(labels.astype(np.int32))
    params, accuracies = [], []
    init = reference_init(config.model, config.seed)  # the same for every fold, as in the CV
    for tr, va in folds_rows:
        state = create_train_state(init, tx)
        for epoch in range(config.epochs):
            order = batching.padded_order(tr[batching.epoch_order(len(tr), config.seed, epoch)], bs)
            acc = epoch_sums(len(tr))
            for _ in range(-(-len(tr) // bs)):
                state, acc, _ = step(state, acc, order, x, y)
        params.append(state.params)
        ev = evaluate.evaluate(
            eval_step,
            state.params,
            jax.device_put(images[va]),
            jax.device_put(labels[va].astype(np.int32)),
        )
        accuracies.append(ev["accuracy"])
    return params, accuracies


def assert_matches_lone(result: cv.CVResult, params: list, accuracies: list) -> None:
    for f, lone in enumerate(params):
        fold = jax.tree.map(lambda leaf: np.asarray(leaf[f]), result.params)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-5),
            fold,
            lone,
        )
    np.testing.assert_allclose(result.fold_accuracies, accuracies, atol=1e-5)


# n=600, k=3: equal folds of 400 (batch 32: 12 full + one 16-row batch). n=625, k=3: train sizes
# 416 and 417, so one fold has 13 batches and the others 14 (the short fold must idle through the
# last step).
CASES = {
    "logreg-equal-folds": (cv.cv_config("logreg", batch_size=32, epochs=2), 600, {}),
    "logreg-unequal-folds": (cv.cv_config("logreg", batch_size=32, epochs=2), 625, {}),
    "mlp-dropout-unequal-shuffled": (
        cv.cv_config(
            model_config("mlp", dropout=0.3),
            optimizer="momentum",
            learning_rate=0.05,
            schedule="constant",
            batch_size=32,
            epochs=2,
        ),
        625,
        {"shuffle": True, "seed": 7},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_vmapped_folds_equal_lone_folds(real_train, case):
    config, n, kfold = CASES[case]
    images, labels = real_train[0][:n], real_train[1][:n]
    result = cv.cross_validate(config, images, labels, 3, **kfold)
    params, accuracies = lone_folds(
        config, images, labels, 3, shuffle=kfold.get("shuffle", False), seed=kfold.get("seed", 0)
    )
    assert_matches_lone(result, params, accuracies)
    assert result.fold_sizes == [
        len(va) for _, va in splits.kfold_indices(n, 3, **{"shuffle": False, **kfold})
    ]
    assert result.mean_accuracy == pytest.approx(np.mean(accuracies), abs=1e-6)


@pytest.mark.parametrize("name", ["logreg", "dense", "mlp", "cnn"])
def test_any_model(real_train, name):
    images, labels = real_train[0][:90], real_train[1][:90]
    result = cv.cross_validate(
        cv.cv_config(name, batch_size=16), images, labels, 3, shuffle=True, seed=1
    )
    assert result.folds == 3 and len(result.fold_accuracies) == len(result.fold_losses) == 3
    assert all(0.0 <= a <= 1.0 for a in result.fold_accuracies)
    assert all(np.isfinite(result.fold_losses))
    assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves(result.params))
    summary = json.loads(json.dumps(result.summary()))
    assert "params" not in summary and summary["mean_accuracy"] == pytest.approx(
        result.mean_accuracy
    )


def test_every_train_call_of_cv_goes_through_the_in_flight_bound(monkeypatch):
    added: list[int] = []
    real_add = steps.InFlight.add
    monkeypatch.setattr(steps.InFlight, "add", lambda self, m: (added.append(1), real_add(self, m)))
    dispatched: list[int] = []
    real_compile = cv._compile_training

    def counting_compile(*args):
        state, sums, perms, train_step, eval_shape = real_compile(*args)
        counted = lambda *a: (dispatched.append(1), train_step(*a))[1]  # noqa: E731
        return state, sums, perms, counted, eval_shape

    monkeypatch.setattr(cv, "_compile_training", counting_compile)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 60).astype(np.uint8)
    cv.cross_validate(cv.cv_config("logreg", batch_size=8, epochs=2), images, labels, 3)
    # 40 training rows per fold in batches of 8: 5 calls per epoch
    assert len(dispatched) == 2 * 5 and len(added) == len(dispatched)


def test_nonfinite_loss_raises(real_train):
    config = cv.cv_config(
        "logreg", optimizer="sgd", learning_rate=1e38, schedule="constant", batch_size=16
    )
    with pytest.raises(cv.NonFiniteCVError, match="non-finite loss in fold"):
        cv.cross_validate(config, real_train[0][:60], real_train[1][:60], 2)


def test_chapter_target_on_full_training_set(real_train):
    """sklearn's 5-fold cross_validate of SGDClassifier gets 0.8194 on these 60,000 images."""
    result = cv.cross_validate(cv.cv_config(), *real_train, 5)
    assert result.fold_sizes == [12000] * 5
    assert result.mean_accuracy >= 0.82, result.summary()
    assert min(result.fold_accuracies) >= 0.81, result.summary()


SHARDED = """
import json, sys, jax, numpy as np
from fashion_jax.training import cv
x, y = np.load(sys.argv[1]), np.load(sys.argv[2])
r = cv.cross_validate(cv.cv_config("logreg", batch_size=32), x, y, 3)
leaf = jax.tree.leaves(r.params)[0]
print(json.dumps({"devices": len(leaf.sharding.device_set), "spec": str(leaf.sharding.spec),
                  "acc": r.fold_accuracies}))
"""


def test_fold_axis_sharded_over_devices(real_train, tmp_path):
    """With a device per fold the fold axis is sharded (forced host devices here);
    results are unchanged."""
    images, labels = real_train[0][:300], real_train[1][:300]
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=3",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", SHARDED, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["devices"] == 3 and "fold" in got["spec"]
    here = cv.cross_validate(cv.cv_config("logreg", batch_size=32), images, labels, 3)
    np.testing.assert_allclose(got["acc"], here.fold_accuracies, atol=1e-5)

"""The Keras peers: the chapter's CNN and dense fits, with the compile cost estimated apart."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from experiments.bench.peers_common import (
    SEED,
    Result,
    chapter_split,
    peak_rss_mb,
    skipped,
    try_import,
)


def _import_keras() -> Any | None:
    # The backend is fixed at import time, and ~/.keras/keras.json may say "tensorflow" (not
    # installed here).
    os.environ["KERAS_BACKEND"] = "jax"
    return try_import("keras")


class _BatchClock:
    """Keras callback that stamps the start of every training batch.

    Only on_train_batch_begin is used: a batch-*end* hook would turn off Keras's async dispatch and
    force a host sync per step, slowing down the very thing being timed. The first step traces and
    compiles synchronously, so the gap between batch 0 and batch 1, less one steady step, estimates
    the compile cost.
    """

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def make(self, keras: Any) -> Any:
        clock = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
                clock.stamps.append(time.perf_counter())

        return Callback()

    def compile_seconds(self) -> float | None:
        gaps = np.diff(self.stamps)
        if len(gaps) < 3:
            return None
        return max(0.0, float(gaps[0] - statistics.median(gaps[1:])))


def _keras_model(
    args: argparse.Namespace, layers: Callable[[Any], list]
) -> tuple[Any, Any, tuple] | None:
    """(keras, Sequential(layers(keras.layers)), chapter split) with the seed set; None without
    Keras."""
    keras = _import_keras()
    if keras is None:
        return None
    keras.utils.set_random_seed(SEED)
    split = chapter_split(args.subset)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # Keras 3 warns about input_shape=; the chapter's code is kept as written
        model = keras.Sequential(layers(keras.layers))
    return keras, model, split


def _keras_fit(
    keras: Any,
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    validation_data: tuple | None = None,
    callbacks: tuple = (),
) -> tuple[float, float | None]:
    """Fit and return (whole fit seconds, estimated compile seconds or None)."""
    clock = _BatchClock()
    t0 = time.perf_counter()
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        validation_data=validation_data,
        callbacks=[clock.make(keras), *callbacks],
    )
    return time.perf_counter() - t0, clock.compile_seconds()


def _keras_result(
    workload: str, keras: Any, total: float, compile_s: float | None, val_acc: float
) -> Result:
    steady = total - compile_s if compile_s is not None else total
    return {
        "workload": workload,
        "peer": f"keras {keras.__version__} ({keras.backend.backend()})",
        "seconds": steady,
        "compile_seconds": compile_s,
        "total_seconds": total,
        "val_accuracy": val_acc,
        "peak_rss_mb": peak_rss_mb(),
    }


def keras_cnn(args: argparse.Namespace) -> Result:
    setup = _keras_model(
        args,
        lambda layers: [
            layers.Conv2D(
                32, kernel_size=3, activation="relu", padding="same", input_shape=(28, 28, 1)
            ),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, kernel_size=3, activation="relu", padding="same"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(100, activation="relu"),
            layers.Dropout(0.4),
            layers.Dense(10, activation="softmax"),
        ],
    )
    if setup is None:
        return skipped("keras_cnn", "keras")
    keras, model, (tx, ty, vx, vy) = setup
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # The chapter's fit for this CNN: validation every epoch and
    # ModelCheckpoint(save_best_only=True), the same work our fit does each epoch (it validates,
    # then checkpoints).
    with tempfile.TemporaryDirectory(prefix="keras-cnn-") as tmp:
        best = keras.callbacks.ModelCheckpoint(
            os.path.join(tmp, "best-cnn-model.keras"), save_best_only=True
        )
        total, compile_s = _keras_fit(
            keras,
            model,
            tx[..., None],
            ty,
            args.epochs or 1,
            args.batch_size,
            validation_data=(vx[..., None], vy),
            callbacks=(best,),
        )
    _, val_acc = model.evaluate(vx[..., None], vy, verbose=0)
    return _keras_result("keras_cnn", keras, total, compile_s, float(val_acc))


def keras_dense(args: argparse.Namespace) -> Result:
    setup = _keras_model(
        args, lambda layers: [layers.Dense(10, activation="softmax", input_shape=(784,))]
    )
    if setup is None:
        return skipped("keras_dense", "keras")
    keras, model, (tx, ty, vx, vy) = setup
    model.compile(
        loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )  # default optimizer: RMSprop
    total, compile_s = _keras_fit(
        keras, model, tx.reshape(-1, 784), ty, args.epochs or 5, args.batch_size
    )
    _, val_acc = model.evaluate(vx.reshape(-1, 784), vy, verbose=0)
    return _keras_result("keras_dense", keras, total, compile_s, float(val_acc))

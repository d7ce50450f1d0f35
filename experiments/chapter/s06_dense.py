"""Sections 5-6: the chapter's first neural network, Dense(10, softmax) on 784 pixels.

model.compile(loss='sparse_categorical_crossentropy', metrics='accuracy') (so the default RMSprop),
fit 5 epochs with the default batch of 32 on the 48,000-image split, evaluate on the 12,000.
The chapter gets about 0.85; Keras 3 measured beside us: val 0.8447 in 4.45 s.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.chapter import common as C

SECTION = "s06"
TITLE = "Sections 5–6: Dense(10, softmax), 5 epochs, RMSprop, batch 32"
KERAS = {"val_accuracy": 0.8447, "seconds": 4.45}
TARGET = 0.84


def config(quick: bool):
    from fashion_jax.config import TrainConfig, model_config

    # TrainConfig's defaults are Keras's bare compile(): rmsprop, lr 1e-3, batch 32. No callbacks in
    # the chapter's fit, so the model evaluated is the last epoch's (restore_best=False), as in
    # Keras.
    return TrainConfig(model=model_config("dense"), epochs=2 if quick else 5, restore_best=False)


def run(out_dir: Path, quick: bool) -> dict:
    data = C.dataset(quick)
    cfg = config(quick)
    result = C.fit(cfg, data, C.work_dir(out_dir, "dense"))
    per_epoch = ", ".join(f"{row['val_accuracy']:.4f}" for row in result.history)
    rows = [
        C.row(
            SECTION,
            f"dense softmax, {cfg.epochs} epochs {cfg.optimizer} "
            f"batch {cfg.batch_size}: val accuracy",
            result.val_accuracy,
            f"none in the chapter / {KERAS['val_accuracy']} (Keras)",
            result.seconds,
            ok=None if quick else result.val_accuracy >= TARGET,
        ),
        C.row(
            SECTION,
            f"same model: test accuracy ({len(data.test_y):,} images)",
            result.test_accuracy,
            "—",
            0.0,
        ),
        C.row(
            SECTION,
            "wall time of the fit, compiles included (s)",
            f"{result.seconds:.1f}",
            f"{KERAS['seconds']} (Keras 3, JAX backend)",
            result.seconds,
        ),
    ]
    notes = [
        f"Val accuracy per epoch: {per_epoch}; epoch times "
        + ", ".join(f"{s:.1f}" for s in result.epoch_seconds)
        + f" s; compile {result.compile_seconds:.1f} s."
    ]
    cv_path = C.work_dir(out_dir, "cv.json")
    if (
        cv_path.exists()
    ):  # section 4's number, beside this one: the chapter's point is that they are the same model
        cv = json.loads(cv_path.read_text())
        notes.append(
            f"Beside section 4: logistic regression, 5-fold CV on {cv['rows']:,} images, mean "
            f"{cv['mean_accuracy']:.4f}; this Dense(10, softmax) network, one train/val split, "
            f"{result.val_accuracy:.4f}. "
            "Both are a linear map of the 784 pixels followed by softmax; "
            "they differ in the optimiser and in how the data is held out."
        )
    return {"rows": rows, "figures": [], "notes": notes}


if __name__ == "__main__":
    C.main(run, __doc__)

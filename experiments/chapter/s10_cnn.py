"""Section 10: the chapter's CNN with early stopping.

Conv(32, 3x3, same, relu) -> MaxPool(2) -> Conv(64, 3x3, same, relu) -> MaxPool(2) -> Flatten
-> Dense(100, relu) -> Dropout(0.4) -> Dense(10); Adam, batch 32, up to 20 epochs,
EarlyStopping(patience=2, restore_best_weights=True): the `chapter` preset of the CLI
(= `make train`).
The chapter prints no accuracy for it (its only figure is 82%, for section 4's CV). The workdir
(out/cnn) is kept for section 12.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from experiments.chapter import common as C

SECTION = "s10"
TITLE = "Section 10: the chapter's CNN, Adam, dropout 0.4, early stopping"
WORKDIR = "cnn"  # out_dir/out/cnn, read by s12
TEST_TARGET = 0.91
TARGET_VAL = 0.92  # the chapter prints no CNN figure; ours
KERAS_EPOCH = {
    "seconds": 43.1,
    "val_accuracy": 0.876,
}  # Keras 3 (JAX backend), 1 epoch, measured beside us
TORCH_EPOCH_SECONDS = 28.7


def config(quick: bool):
    from fashion_jax.config import preset

    return preset(
        "chapter", epochs=2 if quick else None
    )  # the same run as `make train`; None: the preset's


def run(out_dir: Path, quick: bool) -> dict:
    import os

    data = C.dataset(quick)
    cfg = config(quick)
    load_before = os.getloadavg()[0]
    r = C.fit(cfg, data, C.work_dir(out_dir, WORKDIR))
    load_after = os.getloadavg()[0]
    per_epoch = statistics.median(r.epoch_seconds)
    first = r.history[0]
    target = lambda ok: None if quick else ok
    rows = [
        C.row(
            SECTION,
            f"CNN test accuracy ({len(data.test_y):,} images), best epoch's params",
            r.test_accuracy,
            f"≥ {TEST_TARGET} (target)",
            r.seconds,
            ok=target(r.test_accuracy >= TEST_TARGET),
        ),
        C.row(
            SECTION,
            "CNN val accuracy, best epoch's params",
            r.val_accuracy,
            f"none in the chapter; ≥ {TARGET_VAL - 0.01:.2f} (ours)",
            0.0,
            ok=target(r.val_accuracy >= TARGET_VAL - 0.01),
        ),
        C.row(
            SECTION,
            "val accuracy after epoch 1",
            first["val_accuracy"],
            f"{KERAS_EPOCH['val_accuracy']} (Keras, 1 epoch)",
            r.epoch_seconds[0],
        ),
        C.row(
            SECTION,
            "seconds per epoch (median; batch 32, 2-core CPU)",
            f"{per_epoch:.1f}",
            f"{KERAS_EPOCH['seconds']} (Keras) / {TORCH_EPOCH_SECONDS} (PyTorch)",
            sum(r.epoch_seconds),
        ),
        C.row(
            SECTION,
            f"epochs run (of {cfg.epochs}) / best epoch",
            f"{r.epochs_run} / {r.best_epoch}",
            "stops 2 epochs after the best",
            0.0,
            ok=(r.best_epoch == r.epochs_run - cfg.patience) if r.stopped_early else None,
        ),
    ]
    notes = [
        "Per epoch (val loss / val accuracy / seconds): "
        + "; ".join(
            f"{h['epoch']}: {h['val_loss']:.4f} / {h['val_accuracy']:.4f} / {s:.1f}"
            for h, s in zip(r.history, r.epoch_seconds)
        )
        + ".",
        f"Stopped early: {r.stopped_early}; compile {r.compile_seconds:.1f} s; "
        f"whole fit {r.seconds:.1f} s; "
        f"peak RSS {r.peak_rss_mb:.0f} MB; test loss {r.test_loss:.4f}.",
        "The machine is shared with other jobs "
        f"(1-minute load average {load_before:.1f} before the fit, "
        f"{load_after:.1f} after, on {os.cpu_count()} cores), so seconds are noisy; "
        "the Keras/PyTorch figures "
        "come from a side-by-side measurement on a 2-core CPU "
        "(/work/shared/NOTES.md, which lists this Flax CNN "
        "at about 13 s per epoch in the same session).",
    ]
    if not quick and not r.stopped_early:
        notes.append(f"Early stopping did not trigger within {cfg.epochs} epochs.")
    return {"rows": rows, "figures": [], "notes": notes}


if __name__ == "__main__":
    C.main(run, __doc__)

"""
Sections 1-3: get Fashion-MNIST, split it (train / val / test), show the first 10 training images.

The chapter loads keras.datasets.fashion_mnist (60,000 training and 10,000 test images), prints the
first 10 labels and np.unique(train_target, return_counts=True), and later splits the training set
with train_test_split(test_size=0.2, random_state=42) into 48,000 / 12,000.
"""

from __future__ import annotations

from pathlib import Path

from experiments.chapter import common as C

SECTION = "s01"
TITLE = "Sections 1–3: the data, its split and the first 10 training images"
# What the chapter's code prints for the Keras copy of the data (the official files).
CHAPTER_FIRST_LABELS = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def run(out_dir: Path, quick: bool) -> dict:
    import numpy as np

    from fashion_jax.data.dataset import CLASS_NAMES, describe, load_split
    from fashion_jax.viz.plots import plot_samples

    with C.timer() as t_load:
        train_x, train_y = load_split("train")
        test_x, test_y = load_split("test")
    with C.timer() as t_split:
        info = describe(C.dataset(False))  # the split is the same in quick mode; it is cheap
    with C.timer() as t_png:
        png = plot_samples(train_x, train_y, C.figure_dir(out_dir, SECTION) / "samples.png", n=10)

    values, counts = np.unique(train_y, return_counts=True)
    per_class = sorted(set(counts.tolist()))
    first = [int(v) for v in train_y[:10]]
    rows = [
        C.row(
            SECTION,
            "training images × pixels (keras load_data)",
            f"{len(train_y):,} × {train_x.shape[1]}×{train_x.shape[2]}",
            "60,000 × 28×28",
            t_load(),
            ok=len(train_y) == 60000,
        ),
        C.row(SECTION, "test images", f"{len(test_y):,}", "10,000", 0.0, ok=len(test_y) == 10000),
        C.row(
            SECTION,
            "train / val split (train_test_split 0.2, seed 42)",
            f"{info['train']:,} / {info['val']:,}",
            "48,000 / 12,000",
            t_split(),
            ok=(info["train"], info["val"]) == (48000, 12000),
        ),
        C.row(
            SECTION,
            "images per class, 60,000 training set (np.unique)",
            f"{len(values)} classes × {per_class[0]:,}"
            if len(per_class) == 1
            else str(dict(zip(values, counts))),
            "10 classes × 6,000",
            0.0,
            ok=len(values) == 10 and per_class == [6000],
        ),
        C.row(
            SECTION,
            "first 10 training labels",
            str(first),
            str(CHAPTER_FIRST_LABELS),
            t_png(),
            ok=first == CHAPTER_FIRST_LABELS,
        ),
    ]
    val_counts = info["class_counts"]["val"]
    notes = [
        "Labels of the first 10 images: " + ", ".join(CLASS_NAMES[i] for i in first) + ".",
        f"Validation split per class (12,000, not stratified, like the chapter): "
        f"min {min(val_counts.values())}, max {max(val_counts.values())}.",
        f"Data source: {info['source']}.",
    ]
    return {"rows": rows, "figures": [C.rel(out_dir, png)], "notes": notes}


if __name__ == "__main__":
    C.main(run, __doc__)

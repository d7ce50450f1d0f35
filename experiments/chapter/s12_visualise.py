"""Section 12: what the CNN learned: conv filters, feature maps, confusion matrix, learning curves.

The chapter ends by plotting the first conv layer's 32 kernels and the feature maps one image
produces in both conv layers. fashion_jax.viz.plots.plot_all does all of it from s10's workdir
(restored with load_model, so nothing here knows the architecture), and adds the test-set
confusion matrix.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.chapter import common as C
from experiments.chapter import s10_cnn

SECTION = "s12"
TITLE = "Section 12: filters, feature maps, confusion matrix and curves of the CNN"
IMAGE_INDEX = 0  # test image 0, an ankle boot


def run(out_dir: Path, quick: bool) -> dict:
    import numpy as np

    from fashion_jax.data.dataset import CLASS_NAMES
    from fashion_jax.inference import inspection
    from fashion_jax.storage.model_files import load_model
    from fashion_jax.viz import plots

    workdir = C.work_dir(out_dir, s10_cnn.WORKDIR)
    if not (workdir / "config.json").exists():
        raise FileNotFoundError(
            f"no CNN workdir at {workdir}; run s10 first (run_all.py runs it before s12)"
        )
    data = C.dataset(quick)
    with C.timer() as t:
        written = plots.plot_all(
            workdir, data, image_index=IMAGE_INDEX, out_dir=C.figure_dir(out_dir, SECTION)
        )
    figures = [C.rel(out_dir, p) for p in written.values() if not p.startswith("skipped")]
    skipped = [f"{name}: {p}" for name, p in written.items() if p.startswith("skipped")]
    rows = [
        C.row(
            SECTION,
            f"plot_all on s10's workdir (test image #{IMAGE_INDEX})",
            f"{len(figures)} figures: " + ", ".join(written),
            "filters, feature maps of both conv layers",
            t(),
            ok=not skipped and {"feature_maps_conv0", "feature_maps_conv1"} <= written.keys(),
        )
    ]
    notes = [
        f"Feature maps are for test image #{IMAGE_INDEX} "
        f"({CLASS_NAMES[int(data.test_y[IMAGE_INDEX])]})."
    ] + skipped
    if (
        not quick
    ):  # one more restore and pass over the test set: the confusion matrix agrees with s10
        with C.timer() as t:
            _, model, params = load_model(workdir)
            cm = inspection.confusion_matrix(model, params, data.test_x, data.test_y)
        accuracy = float(np.trace(cm) / cm.sum())
        result = json.loads((workdir / "result.json").read_text())
        rows.append(
            C.row(
                SECTION,
                "confusion-matrix accuracy (restored model, test set)",
                accuracy,
                f"{result['test_accuracy']:.4f} (s10's test accuracy)",
                t(),
                ok=abs(accuracy - result["test_accuracy"]) < 1e-9,
            )
        )
        off = cm.copy()
        np.fill_diagonal(off, 0)
        worst = np.dstack(np.unravel_index(np.argsort(-off, axis=None)[:3], off.shape))[0]
        notes.append(
            "Most confused (true → predicted, test images): "
            + "; ".join(f"{CLASS_NAMES[i]} → {CLASS_NAMES[j]} {off[i, j]}" for i, j in worst)
            + "."
        )
        recall = np.diag(cm) / cm.sum(axis=1)
        notes.append(
            f"Hardest class: {CLASS_NAMES[int(recall.argmin())]} (recall {recall.min():.3f}); "
            f"easiest: {CLASS_NAMES[int(recall.argmax())]} ({recall.max():.3f})."
        )
    return {"rows": rows, "figures": figures, "notes": notes}


if __name__ == "__main__":
    C.main(run, __doc__)

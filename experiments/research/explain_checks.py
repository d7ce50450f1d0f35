"""Checks that an attribution map depends on the model and points at what decided the class.

tests/test_explain.py runs these on a briefly trained CNN; run this file for the full-size figures
on the chapter CNN (docs/CHAPTER.md quotes them):

    python experiments/research/explain_checks.py [--workdir W] [--images 100]

Without --workdir it trains the chapter CNN (preset chapter, 3 epochs) into experiments/out/.
The checks:
- randomisation (Adebayo et al. 2018): Spearman rank correlation of each method's map on the trained
  model with its map on the same network re-initialised; low means the map depends on the weights.
- known answer: a model trained on images whose label depends only on one square; the share of each
  map's mass inside the square.
- completeness: integrated gradients' attributions sum to logit_c(x) - logit_c(black).
- deletion: zeroing the top 10% of garment pixels by the map against a random 10%: the ratio of the
  mean drops in the predicted class's probability.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from fashion_jax.inference.explain import IG_STEPS, Explainer, integrated_gradients

DELETE_SHARE = 0.10
RANDOM_DRAWS = 5
# The known-answer task: the label is a 3x3 code of 4-pixel cells at CODE, inside REGION with a
# 2-pixel margin (a 3x3 conv's reach); noise of the same brightness covers NOISE_DENSITY of every
# other pixel, drawn independently of the label, margin included.
REGION = (slice(6, 22), slice(6, 22))
CODE = slice(8, 20)
NOISE_DENSITY = 0.1


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (ties get their mean rank); 0 if either is flat."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def randomisation(
    trained: dict[str, np.ndarray], random: dict[str, np.ndarray], garment: np.ndarray
) -> dict[str, dict[str, float]]:
    """Per method, the mean Spearman correlation over images between the trained and the random
    model's maps: on all 784 pixels, and on the garment (non-zero) pixels only, where the zeros
    both maps share on a black background cannot agree for free."""
    out = {}
    for method, maps in trained.items():
        whole = [spearman(a, b) for a, b in zip(maps, random[method])]
        inside = [spearman(a[g], b[g]) for a, b, g in zip(maps, random[method], garment)]
        out[method] = {"all_pixels": float(np.mean(whole)), "garment": float(np.mean(inside))}
    return out


def mass_in_region(maps: np.ndarray, region: tuple[slice, slice] = REGION) -> float:
    """The mean share of a map's total inside `region`."""
    inside = maps[:, region[0], region[1]].sum((1, 2))
    total = maps.sum((1, 2))
    return float(np.mean(np.where(total > 0, inside / np.where(total > 0, total, 1), 0)))


def region_area(region: tuple[slice, slice] = REGION) -> float:
    """The square's share of the image's pixels."""
    return float(np.zeros((28, 28))[region].size / 784)


def region_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 images of 10 classes whose label shows only in REGION: a class-specific code of
    bright 4x4 cells at CODE; everywhere else (the margin around the code included) pixels of the
    same brightness at random, drawn independently of the label, so nothing outside the square
    carries any information about it."""
    rng = np.random.default_rng(seed)
    codes = np.random.default_rng(99).random((10, 3, 3)) > 0.5  # each class's 3x3 cell code
    assert len(np.unique(codes.reshape(10, -1), axis=0)) == 10
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.uniform(180, 255, (n, 28, 28)) * (rng.random((n, 28, 28)) < NOISE_DENSITY)
    code = np.kron(codes[labels], np.ones((1, 4, 4))) * rng.uniform(180, 255, (n, 12, 12))
    images[:, CODE, CODE] = code
    return images.astype(np.uint8), labels


def completeness(
    model: Any, params: Any, images: np.ndarray, targets: np.ndarray, steps: int
) -> np.ndarray:
    """Per image |sum of attributions - (logit_c(x) - logit_c(0))| / |logit_c(x) - logit_c(0)|."""
    import jax
    import jax.numpy as jnp

    from fashion_jax.model.models import forward, pixels_to_inputs

    @jax.jit
    def error(params: Any, x: jax.Array, c: jax.Array) -> jax.Array:
        attributions = integrated_gradients(model, params, pixels_to_inputs(x), c, steps)
        rows = jnp.arange(len(x))
        logits, black = forward(model, params, x), forward(model, params, jnp.zeros_like(x))
        diff = logits[rows, c] - black[rows, c]
        return jnp.abs(attributions.sum((1, 2)) - diff) / jnp.abs(diff)

    return np.asarray(error(params, jnp.asarray(images), jnp.asarray(targets)))


def deletion(
    explainer: Explainer, images: np.ndarray, maps: dict[str, np.ndarray], seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per method: the mean drop in the predicted class's probability when each image's top 10%
    garment pixels by the map are zeroed, the same for a random 10% (RANDOM_DRAWS draws), and
    their ratio."""
    probs = explainer.probabilities(images)
    pred = probs.argmax(-1)
    before = probs[np.arange(len(images)), pred]
    rng = np.random.default_rng(seed)
    random_drops = []
    for _ in range(RANDOM_DRAWS):
        order = [rng.permutation(np.flatnonzero(im)) for im in images]
        random_drops.append(before - _after(explainer, images, order, pred))
    random_drop = float(np.mean(random_drops))
    out = {}
    for method, m in maps.items():
        order = [_ranked(im, mp) for im, mp in zip(images, m)]
        drop = float(np.mean(before - _after(explainer, images, order, pred)))
        out[method] = {"top": drop, "random": random_drop, "ratio": drop / random_drop}
    return out


def _ranked(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The garment pixels' flat indices, most important first (stable: ties in pixel order)."""
    garment = np.flatnonzero(image)
    return garment[np.argsort(-m.ravel()[garment], kind="stable")]


def _after(
    explainer: Explainer, images: np.ndarray, order: list[np.ndarray], pred: np.ndarray
) -> np.ndarray:
    cut = images.reshape(len(images), -1).copy()
    for row, idx in zip(cut, order):
        row[idx[: int(np.ceil(DELETE_SHARE * len(idx)))]] = 0
    return explainer.probabilities(cut.reshape(images.shape))[np.arange(len(images)), pred]


def chapter_workdir(workdir: str | None, out: Path) -> Path:
    """The given workdir, or the chapter CNN (3 epochs) trained into `out` once."""
    from fashion_jax.config import RunOptions, preset
    from fashion_jax.data.dataset import load_dataset
    from fashion_jax.training.loop import fit

    if workdir:
        return Path(workdir)
    if not (out / "result.json").exists():
        fit(preset("chapter", epochs=3), load_dataset(), out, RunOptions(quiet=True))
    return out


def known_answer(n: int, epochs: int) -> dict[str, float]:
    """Mass inside the square for each method, on a small CNN trained on `n` region_images."""
    import tempfile

    from fashion_jax.config import RunOptions, TrainConfig, model_config
    from fashion_jax.data.dataset import FashionMNIST
    from fashion_jax.model.models import build_model
    from fashion_jax.training.loop import fit

    parts = [region_images(k, seed) for k, seed in ((n, 0), (1000, 1), (200, 2))]
    model = model_config("cnn", filters=(8, 16), hidden=32, dropout=0.0)
    config = TrainConfig(model=model, optimizer="adam", epochs=epochs, patience=0)
    with tempfile.TemporaryDirectory() as tmp:
        data = FashionMNIST(*parts[0], *parts[1], *parts[2], "synthetic")
        result = fit(config, data, Path(tmp) / "w", RunOptions(quiet=True))
    images, labels = parts[2]
    out = {"test_accuracy": result.summary()["test_accuracy"], "area": region_area()}
    for layer in ("conv1", "conv0"):
        explainer = Explainer(build_model(model), result.params, gradcam_layer=layer)
        maps = explainer.explain(images, labels, None if layer == "conv1" else ("gradcam",))
        for method, m in maps.items():
            out[method if layer == "conv1" else f"gradcam@{layer}"] = mass_in_region(m)
    return out


def one_image_seconds(explainer: Explainer, images: np.ndarray, repeats: int = 20) -> float:
    """Median wall time of all methods on one image, after a warm-up call."""
    explainer.explain(images[:1])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        explainer.explain(images[i % len(images)][None])
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench() -> dict[str, Any]:
    """The bench's row (experiments/bench_workloads.py): one image, all four methods, warm, on
    the chapter CNN with its seed-0 weights (the time does not depend on what they are)."""
    from fashion_jax.config import model_config
    from fashion_jax.data.dataset import load_split
    from fashion_jax.model.models import build_model, init_params

    model = build_model(model_config("cnn"))
    explainer = Explainer(model, init_params(model, 0))
    return {"seconds": one_image_seconds(explainer, load_split("test")[0][:20])}


def main() -> None:
    from fashion_jax.data.dataset import load_split
    from fashion_jax.model.models import init_params
    from fashion_jax.storage.model_files import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="a trained chapter CNN (default: train one)")
    parser.add_argument("--images", type=int, default=100, help="test images (default: 100)")
    parser.add_argument("--known-train", type=int, default=20000)
    parser.add_argument("--known-epochs", type=int, default=10)
    parser.add_argument("--bench", action="store_true", help="only the one-image time, as JSON")
    args = parser.parse_args()
    if args.bench:
        print(json.dumps(bench()))
        return
    workdir = chapter_workdir(
        args.workdir, Path(__file__).resolve().parent / "out" / "explain_chapter"
    )
    _, model, params = load_model(workdir)
    images = load_split("test")[0][: args.images]
    explainer = Explainer(model, params)
    pred = explainer.probabilities(images).argmax(-1)
    trained = explainer.explain(images, pred)
    fine = Explainer(model, params, gradcam_layer="conv0").explain(images, pred, ("gradcam",))
    random = Explainer(model, init_params(model, 1)).explain(images, pred)
    again = explainer.explain(images, pred)
    figures: dict[str, Any] = {
        "workdir": str(workdir),
        "images": len(images),
        "repeat_identical": {m: bool(np.array_equal(again[m], v)) for m, v in trained.items()},
        "spearman": randomisation(trained, random, images > 0),
        "deletion": deletion(explainer, images, trained | {"gradcam@conv0": fine["gradcam"]}),
        "ig_completeness": {
            steps: {"max": float(e.max()), "mean": float(e.mean())}
            for steps in (8, 32, 128, IG_STEPS)
            for e in [completeness(model, params, images, pred, steps)]
        },
        "one_image_all_methods_seconds": one_image_seconds(explainer, images),
        "known_answer": known_answer(args.known_train, args.known_epochs),
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

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

import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fashion_jax.inference.explain import Explainer, integrated_gradients  # noqa: E402

DELETE_SHARE = 0.10
RANDOM_DRAWS = 5
# The known-answer task: labels from the brightness pattern inside this square (rows, cols) only.
REGION = (slice(6, 22), slice(6, 22))
NOISE = 255


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
    """n uint8 images of 10 classes whose label shows only in REGION: there a bar pattern of
    class-specific bright cells; everywhere else noise of the same brightness, drawn independently
    of the label, so nothing outside the square carries any information about it."""
    rng = np.random.default_rng(seed)
    codes = np.random.default_rng(99).random((10, 4, 4)) > 0.5  # each class's 4x4 cell code
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.uniform(0, NOISE, (n, 28, 28)) * (rng.random((n, 28, 28)) < 0.5)
    square = np.kron(codes[labels], np.ones((1, 4, 4))) * rng.uniform(180, 255, (n, 16, 16))
    images[:, REGION[0], REGION[1]] = square
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

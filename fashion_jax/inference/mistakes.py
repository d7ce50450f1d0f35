"""The model's most confident mistakes, grouped by the most confused class pairs: what `plot`'s
mistakes.png and the page's "mistakes" view show, each image with its map (explain.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fashion_jax.data.dataset import CLASS_NAMES
from fashion_jax.inference.explain import Explainer

GALLERY_METHOD = "integrated-gradients"  # pixel-sharp, and it applies to every model


def confused_pairs(
    probs: np.ndarray, labels: np.ndarray, pairs: int = 3, per_pair: int = 4
) -> list[dict[str, Any]]:
    """The `pairs` (true, predicted) off-diagonal cells of the confusion matrix with the most
    images, each with its `per_pair` wrong images of highest confidence (index, probability)."""
    pred, labels = probs.argmax(-1), np.asarray(labels, np.int64)
    k = probs.shape[1]
    counts = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    np.fill_diagonal(counts, 0)
    order = np.argsort(-counts, axis=None, kind="stable")[:pairs]
    groups = []
    for true, said in zip(*np.unravel_index(order, counts.shape)):
        if counts[true, said] == 0:
            break
        wrong = np.flatnonzero((labels == true) & (pred == said))
        wrong = wrong[np.argsort(-probs[wrong, said], kind="stable")][:per_pair]
        groups.append(
            {
                "true": CLASS_NAMES[true],
                "predicted": CLASS_NAMES[said],
                "count": int(counts[true, said]),
                "indices": [int(i) for i in wrong],
                "confidence": [float(probs[i, said]) for i in wrong],
            }
        )
    return groups


def mistakes(
    explainer: Explainer,
    images: np.ndarray,
    labels: np.ndarray,
    pairs: int = 3,
    per_pair: int = 4,
    probs: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """`confused_pairs` of the model on (images, labels), each group with "maps": the
    GALLERY_METHOD map of each image for the class the model wrongly said. `probs`, when given,
    are the explainer's probabilities of these images, already computed."""
    probs = explainer.probabilities(images) if probs is None else probs
    groups = confused_pairs(probs, labels, pairs, per_pair)
    for group in groups:
        said = CLASS_NAMES.index(group["predicted"])
        idx = np.asarray(group["indices"], np.int64)
        targets = np.full(len(idx), said)
        group["maps"] = explainer.explain(images[idx], targets, (GALLERY_METHOD,))[GALLERY_METHOD]
    return groups

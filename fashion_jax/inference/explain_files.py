"""`explain` on files: each image read as `predict` reads it, its maps, one JSON row per file.

A file that cannot be read becomes {"file", "error"} and the others are still explained, as in
predictor.predict_files. A row is predict's row (file, class, label, probability, top3,
preprocessing, notes) for the explained class, plus `maps`: method -> 28x28 nested list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fashion_jax.data.dataset import CLASS_NAMES
from fashion_jax.inference.explain import METHODS, Explainer, ExplainError
from fashion_jax.inference.predictor import Predictor, prepare_each
from fashion_jax.inference.preprocess import Prepared

# What a caller does with each explained image: (its row, the 28x28 input, method -> map) -> more
# fields for the row (the CLI's --save writes the PNGs and names them).
OnImage = Callable[[dict, np.ndarray, dict[str, np.ndarray]], dict[str, Any]]


def parse_class(text: str | int) -> int:
    """A class index from its index (0..9) or its name, any case ("shirt", "T-shirt/top")."""
    names = {name.lower(): k for k, name in enumerate(CLASS_NAMES)}
    value = str(text).strip()
    if value.isdigit() and int(value) < len(CLASS_NAMES):
        return int(value)
    if value.lower() in names:
        return names[value.lower()]
    choices = ", ".join(f"{k} {name}" for k, name in enumerate(CLASS_NAMES))
    raise ExplainError(f"unknown class {text!r}; give an index or a name: {choices}")


def parse_methods(text: str, available: Sequence[str]) -> tuple[str, ...]:
    """'all' -> the methods that apply to the model; otherwise the one named."""
    return tuple(available) if text == "all" else (text,)


def explained_row(
    name: str,
    prepared: Prepared,
    probs: np.ndarray,
    target: int,
    maps: dict[str, np.ndarray],
) -> dict[str, Any]:
    """predict's row for one image, with class, label and probability those of `target`."""
    row = Predictor.row(name, prepared, probs)
    row.update({"class": CLASS_NAMES[target], "label": target, "probability": float(probs[target])})
    row["maps"] = {m: np.asarray(v, np.float64).round(8).tolist() for m, v in maps.items()}
    return row


def explain_files(
    workdir: str | Path,
    files: Sequence[str | Path],
    method: str = "all",
    target: int | str | None = None,
    mode: str = "auto",
    gradcam_layer: str | None = None,
    on_image: OnImage | None = None,
) -> list[dict]:
    """One row per file, in order: its maps for `target` (default: the predicted class) by
    `method` (one of METHODS, or "all": those that apply to the model)."""
    if method != "all" and method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; choose from {', '.join(METHODS)} or all")
    label = None if target is None else parse_class(target)
    prepared, rows = prepare_each(files, mode)
    if not prepared:
        return rows
    predictor = Predictor(workdir)
    explainer = Explainer(predictor.model, predictor.params, gradcam_layer=gradcam_layer)
    methods = parse_methods(method, explainer.methods)
    images = np.stack([p.image for p in prepared.values()])
    probs = predictor.predict_images(images)
    targets = probs.argmax(-1) if label is None else np.full(len(images), label)
    maps = explainer.explain(images, targets, methods)
    for j, (i, p) in enumerate(prepared.items()):
        own = {m: v[j] for m, v in maps.items()}
        rows[i] = explained_row(str(files[i]), p, probs[j], int(targets[j]), own)
        if on_image is not None:
            rows[i].update(on_image(rows[i], p.image, own))
    return rows

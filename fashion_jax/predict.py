"""Classify image files with a restored model: 28x28 grayscale PNG/JPEG or .npy arrays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from PIL import Image, UnidentifiedImageError

from fashion_jax.data import CLASS_NAMES
from fashion_jax.evaluate import predict_logits
from fashion_jax.idx import DataError
from fashion_jax.model_io import load_model
from fashion_jax.numerics import first_nonfinite

log = logging.getLogger("fashion_jax")


def load_image(path: str | Path) -> np.ndarray:
    """A (28, 28) uint8 image; other sizes are resized with a warning, non-images are refused."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    if path.suffix.lower() == ".npy":
        array = _load_npy(path)
    else:
        array = _load_picture(path)
    if array.shape != (28, 28):
        log.warning("%s: resizing %dx%d to 28x28", path, array.shape[1], array.shape[0])
        array = np.asarray(Image.fromarray(array).resize((28, 28), Image.BILINEAR))
    return array


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)  # never unpickle a user's file
    except (ValueError, OSError, EOFError) as err:
        raise DataError(path, f"not a readable .npy array ({err.__class__.__name__})") from None
    array = np.squeeze(array)
    if array.ndim != 2 or array.size == 0:
        raise DataError(path, f"expected one 2-D grayscale image, got shape {array.shape}")
    if first_nonfinite(array) is not None:
        raise DataError(path, "array holds NaN or Inf")
    if array.dtype.kind == "f" and array.max() <= 1.0:
        array = array * 255.0  # already scaled to [0, 1], as the chapter's train_scaled
    return np.clip(array, 0, 255).astype(np.uint8)


def _load_picture(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(path, f"not an image ({err.__class__.__name__})") from None


def predict_files(workdir: str | Path, files: Sequence[str | Path]) -> list[dict]:
    """Class, label and probability of each file, by the model in `workdir`."""
    images = np.stack(
        [load_image(f) for f in files]
    )  # validate every file before restoring the model
    config, model, params = load_model(workdir)
    logits = predict_logits(model, params, images, config.eval_batch_size)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    return [
        {
            "file": str(f),
            "class": CLASS_NAMES[int(p.argmax())],
            "label": int(p.argmax()),
            "probability": float(p.max()),
        }
        for f, p in zip(files, probs)
    ]

"""Classify image files with a restored model: photos, Fashion-MNIST-like pictures or .npy arrays.

`Predictor` restores a model once and compiles its forward pass once, for a fixed batch shape, so a
server (serve) and a CLI batch reuse the same program. `predict_files` turns each file into one row
of JSON: a file that cannot be read becomes an error row and the others are still classified.
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from fashion_jax.data.dataset import CLASS_NAMES
from fashion_jax.errors import is_bad_input
from fashion_jax.inference.preprocess import SIDE, ImageError, Prepared, prepare_file
from fashion_jax.model.models import forward
from fashion_jax.runtime.compile import compile_ahead
from fashion_jax.storage.model_files import load_model

# The one batch shape the forward pass is compiled for: a server's requests are single images, a
# CLI batch of hundreds runs in chunks of this size.
PREDICT_BATCH = 16
TOP_K = 3


class Predictor:
    """The model of a workdir (or saved model folder), restored and compiled once."""

    def __init__(self, workdir: str | Path) -> None:
        self.config, self.model, self.params = load_model(workdir)
        example = jax.ShapeDtypeStruct((PREDICT_BATCH, SIDE, SIDE), np.uint8)
        self._probs = compile_ahead(
            jax.jit(lambda params, images: jax.nn.softmax(forward(self.model, params, images), -1)),
            self.params,
            example,
            tuning="one_shot",
        )

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """(n, 28, 28) uint8 -> (n, num_classes) float32 probabilities."""
        images = np.asarray(images, np.uint8)
        n = len(images)
        padded = np.zeros((-(-n // PREDICT_BATCH) * PREDICT_BATCH, SIDE, SIDE), np.uint8)
        padded[:n] = images
        chunks = [
            self._probs(self.params, padded[s : s + PREDICT_BATCH])
            for s in range(0, len(padded), PREDICT_BATCH)
        ]
        if not chunks:
            return np.zeros((0, len(CLASS_NAMES)), np.float32)
        return np.concatenate(jax.device_get(chunks))[:n]

    @staticmethod
    def row(name: str, prepared: Prepared, probs: np.ndarray) -> dict:
        """The JSON object of one file: its class, the top 3, and how it was preprocessed."""
        order = np.argsort(-probs, kind="stable")[:TOP_K]
        top = [
            {"class": CLASS_NAMES[int(k)], "label": int(k), "probability": float(probs[k])}
            for k in order
        ]
        return {
            "file": name,
            **top[0],
            "top3": top,
            "preprocessing": prepared.preprocessing,
            "notes": list(prepared.notes),
        }


def predict_files(
    workdir: str | Path,
    files: Sequence[str | Path],
    mode: str = "auto",
    save_inputs: str | Path | None = None,
) -> list[dict]:
    """One row per file, in order; a file that cannot be read is {"file", "error"}. The model is
    restored only when at least one file is readable; `save_inputs` gets the 28x28 PNG of each."""
    prepared, rows = prepare_each(files, mode)
    if prepared:
        predictor = Predictor(workdir)
        probs = predictor.predict_images(np.stack([p.image for p in prepared.values()]))
        for (i, p), prob in zip(prepared.items(), probs):
            rows[i] = predictor.row(str(files[i]), p, prob)
    if save_inputs is not None:
        for i, path in zip(prepared, input_names([files[i] for i in prepared], save_inputs)):
            Image.fromarray(prepared[i].image).save(path)
            rows[i]["input_png"] = str(path)
    return rows


def prepare_each(
    files: Sequence[str | Path], mode: str = "auto"
) -> tuple[dict[int, Prepared], list[dict]]:
    """({index: Prepared} of the files that convert, one row per file): {} for those, {"file",
    "error"} for a file that fails for any reason, so one file never costs the batch."""
    prepared: dict[int, Prepared] = {}
    rows: list[dict] = []
    for i, f in enumerate(files):
        try:
            prepared[i] = prepare_file(f, mode)
            rows.append({})
        except Exception as err:
            rows.append({"file": str(f), "error": file_problem(err)})
    return prepared, rows


def file_problem(err: Exception) -> str:
    """One line on why a file failed. Bad input says its cause; anything else is our bug, said
    as one (its traceback too under FASHION_JAX_DEBUG), and the other files still go on."""
    if isinstance(err, ImageError):
        return err.problem
    if isinstance(err, (MemoryError, RecursionError)):
        return f"too large or deep to convert ({err.__class__.__name__})"
    text = " ".join(str(err).split())
    if is_bad_input(err):
        return text or err.__class__.__name__
    if os.environ.get("FASHION_JAX_DEBUG"):
        traceback.print_exception(err)
    return f"internal error ({err.__class__.__name__}: {text[:200]}); this is a bug in fashion_jax"


def input_names(files: Sequence[str | Path], folder: str | Path) -> list[Path]:
    """A distinct PNG path in `folder` for each file, from its name (a.jpg -> a.png; the second
    a.jpg, or an a.png already there, gets a number), never an existing file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    names = []
    for f in files:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(f).stem).strip("._") or "image"
        name, k = f"{stem}.png", 1
        while name in taken or (folder / name).exists():
            k += 1
            name = f"{stem}-{k}.png"
        taken.add(name)
        names.append(folder / name)
    return names

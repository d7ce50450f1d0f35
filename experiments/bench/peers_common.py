"""What every benchmark peer (peers.py) shares: the chapter's data split, the peak RSS, the skip
result for a peer whose package is missing, and the import that tells the two apart."""

from __future__ import annotations

import importlib
import resource
from typing import Any

import numpy as np

SEED = 42
Result = dict[str, Any]


def chapter_split(subset: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, val_x, val_y) as float32 in [0, 1] and int64 labels.

    --subset keeps the first N training images and the whole validation part, as our CLI does.
    """
    # the split is bit for bit sklearn's train_test_split(0.2, 42)
    from fashion_jax.data.dataset import load_dataset

    ds = load_dataset(subset=subset)
    return (
        _scale(ds.train_x),
        ds.train_y.astype(np.int64),
        _scale(ds.val_x),
        ds.val_y.astype(np.int64),
    )


def full_train(subset: int | None) -> tuple[np.ndarray, np.ndarray]:
    """All 60,000 training images in file order: cross_validate's unshuffled folds depend on that
    order."""
    from fashion_jax.data.dataset import load_split

    x, y = load_split("train")
    if subset:
        x, y = x[:subset], y[:subset]
    return _scale(x), y.astype(np.int64)


def _scale(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32) / np.float32(255.0)


# -------------------------------------------------------------------------------------- helpers ---


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def skipped(workload: str, package: str) -> Result:
    return {
        "workload": workload,
        "peer": package,
        "skipped": f"{package} not installed",
        "seconds": None,
        "compile_seconds": None,
        "val_accuracy": None,
        "peak_rss_mb": peak_rss_mb(),
    }


def try_import(module: str) -> Any | None:
    """The module, or None when it is not installed. One that is installed but fails to import (a
    missing dependency, a wrong Keras backend) raises: that is an error to see, not a peer to
    skip."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise

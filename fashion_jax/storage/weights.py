"""Weights-only folders, as Keras's save_weights/load_weights: the params alone, no config; the
caller supplies the architecture (a `like` tree, e.g. freshly initialised params)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from fashion_jax.storage.checkpoint_trust import (
    CheckpointError,
    abstract,
    brief,
    check_finite,
    check_tree,
    refuse_symlinks,
)


def save_weights(path: str | os.PathLike, params: Any) -> Path:
    """Weights only (Keras save_weights): params, no config. Load into a known model with
    load_weights."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, params, force=True)
        ckptr.wait_until_finished()
    return path


def load_weights(path: str | os.PathLike, like: Any) -> Any:
    """Params saved by save_weights, checked against `like` (e.g. freshly initialised params)."""
    path = Path(path).absolute()
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such weights checkpoint")
    refuse_symlinks(path)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            check_tree(ckptr.metadata(path).item_metadata.tree, like, str(path))
            params = ckptr.restore(path, abstract(like))
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: weights do not fit this model ({brief(err)})") from None
    check_finite(params, str(path))
    return params

"""Whole models on disk: `save_model` / `load_model` (Keras's save / load_model), by config +
params.

A model folder (save_model) or a training workdir holds `config.json`, so `load_model` rebuilds
the architecture from it and restores the params into that model's own shapes. The params come
from `params.msgpack` when it is an intact copy of the folder it names (params_file.py), which
needs no Orbax; otherwise from the Orbax folders themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from fashion_jax.config import TrainConfig
from fashion_jax.model.models import build_model, init_fn, init_params
from fashion_jax.storage import params_file, run_files


def save_model(path: str | os.PathLike, config: TrainConfig, params: Any) -> Path:
    """Whole model (Keras save): config JSON plus params; load_model needs nothing else."""
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    params_file.discard(path)
    run_files.save_json(config, path / "config.json")
    _, weights = _orbax_storage()
    weights.save_weights(path / "params", params)
    params_file.write(path, "params", jax.device_get(params))
    return path


def load_model(path: str | os.PathLike) -> tuple[TrainConfig, nn.Module, Any]:
    """(config, flax module, params) from a save_model folder or a training workdir (its best
    params, else the params of its latest full state)."""
    path = Path(path)
    if not path.is_dir():
        ckpt, _ = _orbax_storage()
        raise ckpt.CheckpointError(f"{path}: no such model folder or workdir")
    config = run_files.load_json(path / "config.json")
    model = build_model(config.model)
    source = _newest_params_folder(path)
    if source is not None:
        shapes = jax.eval_shape(init_fn(model), np.int32(config.seed))  # traced, not compiled
        copied = params_file.read(path, source, shapes)
        if copied is not None:
            return config, model, jax.device_put(copied)
    return config, model, _restore_with_orbax(path, config, model)


def _newest_params_folder(path: Path) -> str | None:
    """What load_model reads first: "params" (a model folder), else "best/<newest epoch>"."""
    if (path / "params").is_dir():
        return "params"
    try:
        epochs = [int(p.name) for p in (path / "best").iterdir() if p.name.isdigit()]
    except OSError:
        return None
    return f"best/{max(epochs)}" if epochs else None


def _restore_with_orbax(path: Path, config: TrainConfig, model: nn.Module) -> Any:
    ckpt, weights = _orbax_storage()
    # Imported here for the same reason: optax, only to rebuild a full state's template.
    from fashion_jax.model.optim import make_optimizer
    from fashion_jax.model.state import create_train_state, epoch_sums

    like = init_params(model, config.seed)
    if (path / "params").is_dir():
        return weights.load_weights(path / "params", like)
    if (path / "best").is_dir():
        restored = ckpt.restore_newest_readonly(path / "best", "params", like)
        if restored is not None:
            return restored[0]
    if (path / "checkpoints").is_dir():
        # The whole state is restored against a template built from config.json (never reshaped to
        # fit), then only its params are kept.
        target = {
            "train": create_train_state(like, make_optimizer(config, 1)),
            "sums": epoch_sums(0),
        }
        restored = ckpt.restore_newest_readonly(path / "checkpoints", "state", target)
        if restored is not None:
            return restored[0]["train"].params
    raise ckpt.CheckpointError(f"{path}: no saved params (no params/, best/ or checkpoints/)")


def _orbax_storage() -> tuple[Any, Any]:
    """The checkpoint and weights modules, which bring Orbax."""
    # Imported on first use: Orbax takes about half a second to import, and a reader whose
    # params.msgpack is intact (predict, evaluate, serve) never needs it.
    from fashion_jax.storage import checkpoint, weights

    return checkpoint, weights

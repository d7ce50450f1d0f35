"""Whole models on disk: `save_model` / `load_model` (Keras's save / load_model), by config +
params.

A model folder (save_model) or a training workdir holds `config.json`, so `load_model` rebuilds
the architecture from it and restores the params into that model's own shapes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import flax.linen as nn

from fashion_jax import checkpoint as ckpt
from fashion_jax import config as config_lib
from fashion_jax.config import TrainConfig
from fashion_jax.models import build_model, init_params
from fashion_jax.optim import make_optimizer
from fashion_jax.steps import create_train_state, epoch_sums


def save_model(path: str | os.PathLike, config: TrainConfig, params: Any) -> Path:
    """Whole model (Keras save): config JSON plus params; load_model needs nothing else."""
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    config_lib.save_json(config, path / "config.json")
    ckpt.save_weights(path / "params", params)
    return path


def load_model(path: str | os.PathLike) -> tuple[TrainConfig, nn.Module, Any]:
    """(config, flax module, params) from a save_model folder or a training workdir (its best
    params,
    else the params of its latest full state)."""
    path = Path(path)
    if not path.is_dir():
        raise ckpt.CheckpointError(f"{path}: no such model folder or workdir")
    config = config_lib.load_json(path / "config.json")
    model = build_model(config.model)
    like = init_params(model, config.seed)
    if (path / "params").is_dir():
        return config, model, ckpt.load_weights(path / "params", like)
    if (path / "best").is_dir():
        restored = ckpt.restore_newest_readonly(path / "best", "params", like)
        if restored is not None:
            return config, model, restored[0]
    if (path / "checkpoints").is_dir():
        # The whole state is restored against a template built from config.json (never reshaped to
        # fit), then only its params are kept.
        target = {
            "train": create_train_state(like, make_optimizer(config, 1)),
            "sums": epoch_sums(0),
        }
        restored = ckpt.restore_newest_readonly(path / "checkpoints", "state", target)
        if restored is not None:
            return config, model, restored[0]["train"].params
    raise ckpt.CheckpointError(f"{path}: no saved params (no params/, best/ or checkpoints/)")

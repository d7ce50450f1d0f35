"""Frozen run configuration, saved as JSON beside every checkpoint.

A model restores from its workdir alone: `config.json` names the architecture and all of its
hyper-parameters, so the caller never needs to know them.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Per-model architecture defaults; anything not listed falls back to ModelConfig's own default.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "logreg": {},
    "dense": {},
    "mlp": {"hidden": 100, "activation": "sigmoid", "dropout": 0.0},
    "cnn": {"hidden": 100, "activation": "relu", "dropout": 0.4},
    "cnn_fast": {"hidden": 128, "activation": "relu", "dropout": 0.0, "filters": (32, 64)},
}


class ConfigError(ValueError):
    """A configuration value that cannot work; the message is one line."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "cnn"
    hidden: int = 100
    activation: str = "relu"
    dropout: float = 0.0
    filters: tuple[int, ...] = (32, 64)
    kernel: int = 3
    padding: str = "same"
    strides: int = 1
    pool: int = 2
    num_classes: int = 10


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: str = "rmsprop"  # Keras's bare compile() default, which the chapter's Dense model relies on.
    learning_rate: float | None = None  # None: the Keras default for that optimizer.
    epochs: int = 5
    batch_size: int = 32  # Keras's default mini-batch.
    seed: int = 0
    patience: int = 0  # 0 disables early stopping.
    monitor: str = "val_loss"
    min_delta: float = 0.0
    restore_best: bool = True
    checkpoint_every: int = 0  # extra mid-epoch checkpoints every N steps; 0 = at epoch ends only.
    eval_batch_size: int = 200  # XLA:CPU runs the CNN forward ~2x faster per image at 100-250 than at 1000
    skip_nonfinite: int = 0  # tolerate up to N non-finite updates (optax.apply_if_finite).
    schedule: str = "constant"  # or "cosine" (decays to 0 over all planned steps)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The named model's defaults, with non-None overrides applied."""
    from fashion_jax.models import MODELS  # late import: models imports this module

    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    values = {**MODEL_DEFAULTS.get(name, {}), **{k: v for k, v in overrides.items() if v is not None}}
    if "filters" in values:
        values["filters"] = tuple(values["filters"])
    return ModelConfig(name=name, **values)


def validate(config: TrainConfig) -> TrainConfig:
    """Reject values that would only fail later, deep inside jit, with a clear one-line error."""
    from fashion_jax.optim import OPTIMIZERS

    checks = [
        (config.epochs > 0, f"--epochs must be positive, got {config.epochs}"),
        (config.batch_size > 0, f"--batch-size must be positive, got {config.batch_size}"),
        (config.eval_batch_size > 0, f"eval batch size must be positive, got {config.eval_batch_size}"),
        (config.optimizer in OPTIMIZERS,
         f"unknown optimizer {config.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"),
        (config.learning_rate is None or config.learning_rate > 0,
         f"--learning-rate must be positive, got {config.learning_rate}"),
        (0.0 <= config.model.dropout < 1.0, f"--dropout must be in [0, 1), got {config.model.dropout}"),
        (config.patience >= 0, f"--patience must be >= 0, got {config.patience}"),
        (config.monitor in ("val_loss", "val_accuracy"),
         f"monitor must be val_loss or val_accuracy, got {config.monitor!r}"),
        (config.checkpoint_every >= 0, f"--checkpoint-every must be >= 0, got {config.checkpoint_every}"),
        (config.schedule in ("constant", "cosine"), f"unknown schedule {config.schedule!r}"),
        (config.model.activation in ("relu", "sigmoid", "tanh"),
         f"unknown activation {config.model.activation!r}; choose relu, sigmoid or tanh"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    model_config(config.model.name)  # raises on an unknown model name
    return config


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Inverse of to_dict; unknown keys are an error so a foreign JSON is never half-read."""
    try:
        model = dict(raw["model"])
        model["filters"] = tuple(model.get("filters", ModelConfig.filters))
        return TrainConfig(**{**raw, "model": ModelConfig(**model)})
    except (KeyError, TypeError) as err:
        raise ConfigError(f"not a fashion_jax config: {err}") from None


def save_json(config: TrainConfig, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a crash never leaves a half-written config


def load_json(path: Path) -> TrainConfig:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no config.json; not a fashion_jax workdir") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: unreadable config ({err.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a fashion_jax config")
    return from_dict(raw)

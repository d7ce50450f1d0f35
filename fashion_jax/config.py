"""Every setting and every default, written once: the config dataclasses, the presets, checks.

A workdir's `config.json` is a `TrainConfig` (storage/run_files.py); it names the
architecture and all of its hyper-parameters, so a model restores without the caller knowing them.
The CLI's flags are generated from these dataclasses (config_flags.py), so a field, its default and
its help sentence live here and nowhere else. Standard library only: everything else imports this
module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fashion_jax.errors import FashionJaxError

NUM_CLASSES = 10
ACTIVATION_NAMES = ("relu", "sigmoid", "tanh")
MONITORS = ("val_loss", "val_accuracy")
SCHEDULES = ("constant", "cosine")
CHECKPOINT_POLICIES = ("epoch", "end")
# How `predict` and `serve` turn an image into what the model sees (preprocess.py): auto decides
# per image, fashion-mnist always runs the dataset's photo conversion, none only greys and resizes.
PREPROCESS_MODES = ("auto", "fashion-mnist", "none")

# Keras 3's default learning rates, which the chapter's compile() calls rely on; the keys are the
# optimizers there are (optim.py builds each one).
DEFAULT_LEARNING_RATES: dict[str, float] = {
    "sgd": 0.01,
    "momentum": 0.01,
    "nesterov": 0.01,
    "adagrad": 0.001,
    "rmsprop": 0.001,
    "adam": 0.001,
}

# Per-model architecture defaults; a field not listed takes ModelConfig's own default. The keys
# are the model names there are (models.py registers a module under each).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "logreg": {},
    "dense": {},
    "mlp": {"hidden": 100, "activation": "sigmoid", "dropout": 0.0},
    "cnn": {"hidden": 100, "activation": "relu", "dropout": 0.4},
    "cnn_fast": {"hidden": 256, "activation": "relu", "dropout": 0.0, "filters": (32, 64)},
}

# Named starting points, reachable as preset(name) from Python and --preset NAME from the CLI.
PRESETS: dict[str, dict[str, Any]] = {
    # The chapter's final setup: CNN, Adam, dropout 0.4, up to 20 epochs, EarlyStopping(patience=2).
    "chapter": {"model": "cnn", "optimizer": "adam", "epochs": 20, "patience": 2, "batch_size": 32},
    # The fastest measured route to 92% test accuracy on a 2-core CPU (README, "Presets").
    "fast": {
        "model": "cnn_fast",
        "optimizer": "adam",
        "learning_rate": 3e-3,
        "epochs": 4,
        "batch_size": 32,
        "patience": 0,
        "schedule": "cosine",
    },
    # The chapter's section 4 (SGDClassifier under 5-fold cross_validate) as one vmapped program:
    # a cosine-decayed Adam epoch at batch 256 reaches sklearn's accuracy in a fraction of its time.
    "cv": {
        "model": "logreg",
        "optimizer": "adam",
        "learning_rate": 3e-2,
        "schedule": "cosine",
        "batch_size": 256,
        "epochs": 1,
    },
}


class ConfigError(FashionJaxError, ValueError):
    """A configuration value that cannot work; the message is one line."""


def _doc(
    help: str, flag: str | None = None, choices: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Field metadata for its CLI flag: the help sentence, the flag's name when it is not the
    field's (also the override's name in `preset`), and the allowed values."""
    return {
        "help": help,
        **({"flag": flag} if flag else {}),
        **({"choices": choices} if choices else {}),
    }


@dataclass(frozen=True)
class ModelConfig:
    name: str = field(default="cnn", metadata=_doc("architecture", "model", tuple(MODEL_DEFAULTS)))
    hidden: int = field(default=100, metadata=_doc("units of the hidden Dense layer"))
    activation: str = field(
        default="relu", metadata=_doc("hidden activation", choices=ACTIVATION_NAMES)
    )
    dropout: float = field(
        default=0.0, metadata=_doc("dropout rate before the output layer, in [0, 1)")
    )
    filters: tuple[int, ...] = field(default=(32, 64), metadata=_doc("filters of each conv layer"))
    kernel: int = field(default=3, metadata=_doc("conv kernel size (square)"))
    padding: str = field(default="same", metadata=_doc("conv padding", choices=("same", "valid")))
    strides: int = field(default=1, metadata=_doc("conv stride"))
    pool: int = field(default=2, metadata=_doc("max-pool window after each conv; 1 disables"))
    num_classes: int = field(default=NUM_CLASSES, metadata=_doc("output classes (labels are 0..9)"))


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    # RMSprop is Keras's bare compile() default, which the chapter's Dense model relies on.
    optimizer: str = field(
        default="rmsprop", metadata=_doc("optimizer", choices=tuple(DEFAULT_LEARNING_RATES))
    )
    learning_rate: float | None = field(
        default=None, metadata=_doc("learning rate; unset: the optimizer's Keras default")
    )
    epochs: int = field(default=5, metadata=_doc("epochs to train (at most, with early stopping)"))
    batch_size: int = field(default=32, metadata=_doc("training mini-batch, Keras's default"))
    seed: int = field(default=0, metadata=_doc("seed of the init, data order and dropout"))
    patience: int = field(default=0, metadata=_doc("early-stopping patience in epochs; 0 disables"))
    monitor: str = field(
        default="val_loss",
        metadata=_doc("metric early stopping and best/ follow", choices=MONITORS),
    )
    min_delta: float = field(default=0.0, metadata=_doc("smallest change of --monitor that counts"))
    restore_best: bool = field(
        default=True, metadata=_doc("return (and evaluate) the best epoch's params")
    )
    checkpoint_every: int = field(
        default=0,
        metadata=_doc("also checkpoint every N steps inside an epoch; 0: epoch ends only"),
    )
    # XLA:CPU ran the CNN forward about twice as fast per image at 100-250 as at 1000.
    eval_batch_size: int = field(
        default=200, metadata=_doc("batch of the validation and test passes")
    )
    skip_nonfinite: int = field(
        default=0,
        metadata=_doc("skip up to N consecutive non-finite updates; 0: stop at the first"),
    )
    schedule: str = field(
        default="constant",
        metadata=_doc(
            "learning-rate schedule (cosine decays to 0 over all steps)", choices=SCHEDULES
        ),
    )


@dataclass(frozen=True)
class RunOptions:
    """How one fit() call runs; not part of the model or its training maths, so not in
    config.json."""

    resume: bool = field(
        default=False, metadata=_doc("continue from the latest checkpoint in --workdir")
    )
    overwrite: bool = field(default=False, metadata=_doc("replace a previous run in --workdir"))
    checkpoints: str = field(
        default="epoch",
        metadata=_doc(
            "epoch: save the full state each epoch, resumable; end: save the final params only",
            choices=CHECKPOINT_POLICIES,
        ),
    )
    devices: int | None = field(
        default=None, metadata=_doc("data-parallel over the first N devices; unset: all")
    )
    quiet: bool = field(default=False, metadata=_doc("no progress bar or per-epoch lines"))
    tensorboard: bool = field(
        default=False,
        metadata=_doc("write each epoch's metrics and learning rate to WORKDIR/tensorboard"),
    )


@dataclass(frozen=True)
class CVOptions:
    folds: int = field(default=5, metadata=_doc("number of folds"))
    shuffle: bool = field(
        default=False, metadata=_doc("shuffle before folding (sklearn KFold's default: no)")
    )


MODEL_FIELDS = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.name != "name"
)  # name: `model`


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The named model's defaults, with non-None overrides applied."""
    if name not in MODEL_DEFAULTS:
        raise ConfigError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(MODEL_DEFAULTS))}"
        )
    values = {**MODEL_DEFAULTS[name], **{k: v for k, v in overrides.items() if v is not None}}
    if "filters" in values:
        values["filters"] = tuple(values["filters"])
    return ModelConfig(name=name, **values)


def preset(name: str | None, **overrides: Any) -> TrainConfig:
    """A TrainConfig from preset `name` (None: no preset) with overrides; None values are ignored.

    Overrides are flat: TrainConfig fields, ModelConfig fields, and `model` for the model's name
    (`preset("chapter", epochs=3, dropout=0.2)`). A new optimizer without a new learning rate
    drops the preset's rate, which was tuned for the preset's optimizer.
    """
    if name is not None and name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(MODEL_FIELDS) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ConfigError(f"unknown setting {sorted(unknown)[0]!r}")
    values = dict(PRESETS[name]) if name else {}
    if "optimizer" in overrides and "learning_rate" not in overrides:
        values.pop("learning_rate", None)
    values.update(overrides)
    model = values.pop("model", None)
    if model is None:
        raise ConfigError(
            "a model is needed (--model "
            + ", ".join(MODEL_DEFAULTS)
            + ") unless a preset names one"
        )
    model_fields = {k: values.pop(k) for k in MODEL_FIELDS if k in values}
    return TrainConfig(model=model_config(model, **model_fields), **values)


def validate(config: TrainConfig) -> TrainConfig:
    """Reject values that would only fail later, deep inside jit, with a clear one-line error."""
    m = config.model
    checks = [
        (
            m.name in MODEL_DEFAULTS,
            f"unknown model {m.name!r}; choose one of: {', '.join(sorted(MODEL_DEFAULTS))}",
        ),
        (config.epochs > 0, f"--epochs must be positive, got {config.epochs}"),
        (config.batch_size > 0, f"--batch-size must be positive, got {config.batch_size}"),
        (
            config.eval_batch_size > 0,
            f"--eval-batch-size must be positive, got {config.eval_batch_size}",
        ),
        (
            config.optimizer in DEFAULT_LEARNING_RATES,
            f"unknown optimizer {config.optimizer!r}; "
            f"choose one of: {', '.join(DEFAULT_LEARNING_RATES)}",
        ),
        (
            config.learning_rate is None or config.learning_rate > 0,
            f"--learning-rate must be positive, got {config.learning_rate}",
        ),
        (0.0 <= m.dropout < 1.0, f"--dropout must be in [0, 1), got {m.dropout}"),
        (config.patience >= 0, f"--patience must be >= 0, got {config.patience}"),
        (
            config.monitor in MONITORS,
            f"--monitor must be one of {', '.join(MONITORS)}, got {config.monitor!r}",
        ),
        (
            config.checkpoint_every >= 0,
            f"--checkpoint-every must be >= 0, got {config.checkpoint_every}",
        ),
        (config.skip_nonfinite >= 0, f"--skip-nonfinite must be >= 0, got {config.skip_nonfinite}"),
        (
            config.schedule in SCHEDULES,
            f"unknown schedule {config.schedule!r}; choose constant or cosine",
        ),
        (
            m.activation in ACTIVATION_NAMES,
            f"unknown activation {m.activation!r}; choose one of: {', '.join(ACTIVATION_NAMES)}",
        ),
        (
            m.hidden > 0 and m.kernel > 0 and m.strides > 0 and m.pool > 0,
            "--hidden, --kernel, --strides and --pool must be positive",
        ),
        (
            bool(m.filters) and min(m.filters) > 0,
            f"--filters must be positive counts, got {list(m.filters)}",
        ),
        (m.padding in ("same", "valid"), f"--padding must be same or valid, got {m.padding!r}"),
        (
            m.num_classes >= NUM_CLASSES,
            f"--num-classes must be at least {NUM_CLASSES}, got {m.num_classes}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return config

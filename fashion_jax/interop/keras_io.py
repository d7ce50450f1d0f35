"""The chapter's Keras models <-> fashion_jax: which Sequential is which ModelConfig, and how the
weights map onto our params.

Import needs no Keras: keras_h5.py reads the files with h5py, zipfile and json. Export builds the
Keras model with Keras itself (the `keras` extra) and lets it write the file, so whatever Keras
version loads it, the file is one Keras wrote. Layouts differ at this boundary only: Keras and
flax share the Conv2D (kh, kw, in, out) and Dense (in, out) kernels and both flatten NHWC row-major,
so the arrays map one to one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from fashion_jax.config import ACTIVATION_NAMES, DEFAULT_LEARNING_RATES, ModelConfig, TrainConfig
from fashion_jax.interop.keras_h5 import KerasFileError, KerasLayer, KerasModel
from fashion_jax.model.models import CNN, MLP, MODELS, build_model, init_fn
from fashion_jax.model.optim import learning_rate
from fashion_jax.runtime.numerics import first_nonfinite

IMAGE_SHAPE = (28, 28)  # what every model takes (models.init_fn)
KERAS_LAYERS = ("Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dropout")
SHAPE_OF_MODELS = "[Conv2D, MaxPooling2D]..., Flatten, [Dense, [Dropout]], Dense(softmax)"


def _refuse(layer: KerasLayer, what: str) -> KerasFileError:
    return KerasFileError(f"layer {layer.name!r} ({layer.kind}): {what}")


def _pair(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _activation(layer: KerasLayer, allowed: tuple[str, ...]) -> str:
    act = layer.config.get("activation", "linear")
    if isinstance(act, dict):  # a serialized function object: its name is the config
        act = act.get("config")
    if act not in allowed:
        raise _refuse(layer, f"activation {act!r} has no counterpart in fashion_jax")
    return act


def _check_layer(layer: KerasLayer) -> None:
    """Settings of a known layer class that our modules cannot reproduce."""
    cfg = layer.config
    fixed = {"data_format": ("channels_last", None), "use_bias": (True, None)}
    if layer.kind == "Conv2D":
        fixed.update(dilation_rate=((1, 1), 1, None), groups=(1, None))
    if layer.kind == "MaxPooling2D":
        fixed["padding"] = ("valid", None)
    for key, allowed in fixed.items():
        value = _pair(cfg[key]) if isinstance(cfg.get(key), list) else cfg.get(key)
        if value not in allowed:
            raise _refuse(layer, f"{key}={cfg.get(key)!r} has no counterpart in fashion_jax")
    squares = ("kernel_size", "strides") if layer.kind == "Conv2D" else ("pool_size", "strides")
    if layer.kind in ("Conv2D", "MaxPooling2D"):
        for key in squares:
            if cfg.get(key) is not None and len(set(_pair(cfg[key]))) != 1:
                raise _refuse(layer, f"non-square {key} {cfg[key]} has no counterpart")
    if layer.kind == "MaxPooling2D" and cfg.get("strides") not in (None, cfg.get("pool_size")):
        raise _refuse(layer, "overlapping pooling (strides != pool_size) has no counterpart")


def model_fields(model: KerasModel) -> dict[str, Any]:
    """The architecture as flat `config.preset` overrides: `model` plus ModelConfig fields."""
    layers = model.layers
    for layer in layers:
        if layer.kind not in KERAS_LAYERS:
            raise KerasFileError(
                f"layer {layer.name!r} ({layer.kind}) has no counterpart in fashion_jax"
            )
        _check_layer(layer)
    i, convs = 0, []
    while i < len(layers) and layers[i].kind == "Conv2D":
        pool = layers[i + 1] if i + 1 < len(layers) else None
        has_pool = pool is not None and pool.kind == "MaxPooling2D"
        convs.append((layers[i], _pair(pool.config["pool_size"])[0] if has_pool else 1))
        i += 2 if has_pool else 1
    flat = i < len(layers) and layers[i].kind == "Flatten"
    hidden, dropout, out = _head(layers[i + flat :], layers[-1])
    if model.input_shape and int(np.prod(model.input_shape)) != IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
        raise KerasFileError(f"input shape {model.input_shape}: fashion_jax takes 28x28 images")
    if (convs or (model.input_shape and len(model.input_shape) > 1)) and not flat:
        raise _refuse(hidden or out, f"Dense on an unflattened input; expected {SHAPE_OF_MODELS}")
    fields = {"num_classes": int(out.config["units"])}
    if hidden is not None:
        fields.update(
            hidden=int(hidden.config["units"]),
            activation=_activation(hidden, ACTIVATION_NAMES),
            dropout=float(dropout.config["rate"]) if dropout else 0.0,
        )
    _activation(out, ("softmax",))
    if not convs:
        return {"model": "mlp" if hidden else "dense", **fields}
    if hidden is None:
        raise _refuse(out, "fashion_jax's cnn has a hidden Dense layer before the output")
    return {"model": "cnn", **fields, **_conv_fields(convs, fields["activation"])}


def _conv_fields(convs: list[tuple[KerasLayer, int]], activation: str) -> dict[str, Any]:
    """kernel, strides, padding, pool and filters: one value each in our CNN, so in every block."""

    def settings(conv: KerasLayer, pool: int) -> dict[str, Any]:
        return {
            "kernel": _pair(conv.config["kernel_size"])[0],
            "strides": _pair(conv.config.get("strides", 1))[0],
            "padding": conv.config.get("padding", "valid"),
            "activation": _activation(conv, ACTIVATION_NAMES),
            "pool": pool,
        }

    common = {**settings(*convs[0]), "activation": activation}  # the hidden Dense's too
    for conv, pool in convs:
        for key, value in settings(conv, pool).items():
            if value != common[key]:
                raise _refuse(conv, f"{key} {value!r} differs from the rest of the network's")
    return {**common, "filters": tuple(int(conv.config["filters"]) for conv, _ in convs)}


def _head(head: list[KerasLayer], last: KerasLayer) -> tuple[Any, Any, KerasLayer]:
    """(hidden Dense or None, Dropout or None, output Dense) of the layers after Flatten."""
    denses: list[KerasLayer] = []
    dropout = None
    for layer in head:
        if layer.kind == "Dense" and len(denses) < 2:
            denses.append(layer)
        elif layer.kind == "Dropout" and len(denses) == 1 and dropout is None:
            dropout = layer
        else:
            raise _refuse(layer, f"is out of place; fashion_jax's models are {SHAPE_OF_MODELS}")
    if not denses or (dropout is not None and len(denses) == 1):
        raise _refuse(last, f"ends the model; fashion_jax's models are {SHAPE_OF_MODELS}")
    if len(denses) == 1:
        return None, None, denses[0]
    return denses[0], dropout, denses[1]


def param_layers(cfg: ModelConfig) -> list[str]:
    """Our params' layers, in the order of the Keras layers that hold weights."""
    if issubclass(MODELS[cfg.name], CNN):
        return [f"conv{i}" for i in range(len(cfg.filters))] + ["hidden", "out"]
    return ["hidden", "out"] if issubclass(MODELS[cfg.name], MLP) else ["dense"]


def params_from_keras(cfg: ModelConfig, weighted: list[tuple[str, list[np.ndarray]]]) -> dict:
    """Our params from the (name, [kernel, bias]) of each Keras layer with weights."""
    shapes = jax.eval_shape(init_fn(build_model(cfg)), 0)
    names = param_layers(cfg)
    if len(weighted) != len(names):
        raise KerasFileError(
            f"{len(weighted)} layers with weights; fashion_jax's {cfg.name} has {len(names)}"
        )
    params = {}
    for ours, (theirs, arrays) in zip(names, weighted):
        if len(arrays) != 2:
            raise KerasFileError(f"layer {theirs!r} holds {len(arrays)} arrays, not kernel, bias")
        if first_nonfinite(arrays) is not None:
            raise KerasFileError(f"layer {theirs!r} holds NaN or Inf weights")
        layer = {}
        for key, array in zip(("kernel", "bias"), arrays):
            want = shapes[ours][key].shape
            if array.shape != want:
                raise KerasFileError(
                    f"layer {theirs!r}: {key} of shape {array.shape} does not fit fashion_jax's "
                    f"{cfg.name} ({want})"
                )
            layer[key] = np.asarray(array, np.float32)
        params[ours] = layer
    return params


def keras_arrays(cfg: ModelConfig, params: Any) -> list[list[np.ndarray]]:
    """[kernel, bias] in Keras's layout for each Keras layer with weights; params_from_keras's
    inverse."""
    return [
        [np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])]
        for name in param_layers(cfg)
    ]


def optimizer_fields(optimizer: Any) -> dict[str, Any]:
    """`optimizer` and `learning_rate` overrides from Keras's serialized compile() optimizer; {}
    when it has no counterpart (the import still works; fine-tuning then uses the default)."""
    kind, cfg = (optimizer, {}) if isinstance(optimizer, str) else ("", {})
    if isinstance(optimizer, dict):
        kind, cfg = str(optimizer.get("class_name", "")), optimizer.get("config") or {}
    kind = kind.split(">")[-1].split(".")[-1].lower()
    if kind == "sgd":
        momentum = cfg.get("momentum", 0.0)
        kind = {0.0: "sgd", 0.9: "nesterov" if cfg.get("nesterov") else "momentum"}.get(momentum)
    if kind not in DEFAULT_LEARNING_RATES:
        return {}
    rate = cfg.get("learning_rate", cfg.get("lr"))
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
        return {"optimizer": kind}  # a schedule, or unset: the optimizer's default rate
    rate = float(f"{rate:.7g}")  # Keras keeps float32: 0.0010000000474974513 is 0.001
    return {
        "optimizer": kind,
        **({} if rate == DEFAULT_LEARNING_RATES[kind] else {"learning_rate": rate}),
    }


def load_keras() -> Any:
    """The keras module on the JAX backend (unless KERAS_BACKEND says otherwise); TensorFlow is
    not needed."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        # Lazy: Keras is an optional extra that only export (and the tests) need.
        import keras
    except ImportError as err:
        raise KerasFileError(
            f"export needs Keras ({err}); install it with: pip install 'fashion-jax[keras]'"
        ) from None
    return keras


def keras_model(config: TrainConfig, params: Any, compiled: bool = True) -> Any:
    """The chapter's Keras Sequential for `config.model`, holding `params`; compiled as the chapter
    compiles (sparse categorical cross-entropy, accuracy, the configured optimizer) unless not
    `compiled` (a weights file: the chapter's model.load_weights wants no optimizer slots there)."""
    keras = load_keras()
    cfg, layers = config.model, keras.layers
    zeros = lambda activation: {"activation": activation, "kernel_initializer": "zeros"}
    flat_input = param_layers(cfg) == ["dense"]
    if flat_input:  # the chapter feeds this one flat (N, 784) rows
        stack = [keras.Input((IMAGE_SHAPE[0] * IMAGE_SHAPE[1],))]
    elif issubclass(MODELS[cfg.name], CNN):
        stack = [keras.Input((*IMAGE_SHAPE, 1))]
        for filters in cfg.filters:
            stack.append(
                layers.Conv2D(
                    filters, cfg.kernel, cfg.strides, cfg.padding, **zeros(cfg.activation)
                )
            )
            stack += [layers.MaxPooling2D(cfg.pool)] if cfg.pool > 1 else []
        stack.append(layers.Flatten())
    else:
        stack = [keras.Input(IMAGE_SHAPE), layers.Flatten()]
    if not flat_input:
        stack.append(layers.Dense(cfg.hidden, **zeros(cfg.activation)))
        stack += [layers.Dropout(cfg.dropout)] if cfg.dropout > 0 else []
    stack.append(layers.Dense(cfg.num_classes, **zeros("softmax")))
    model = keras.Sequential(stack, name=cfg.name)
    for layer, arrays in zip([x for x in model.layers if x.weights], keras_arrays(cfg, params)):
        layer.set_weights(arrays)
        # Built with zeros, which set_weights replaces: Keras's random initialiser compiles a JAX
        # program per kernel shape (16 s for the CNN's on the busy 2-core machine) only to be
        # overwritten. The file then names the chapter layers' initialiser, Keras's default.
        layer.kernel_initializer = keras.initializers.GlorotUniform()
    if not compiled:
        return model
    model.compile(
        optimizer=_keras_optimizer(keras, config),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # Built now, so the saved file holds all its (zero) slots: Keras warns on loading one without.
    model.optimizer.build(model.trainable_variables)
    return model


def _keras_optimizer(keras: Any, config: TrainConfig) -> Any:
    """Ours as Keras's (optim.OPTIMIZERS); a cosine schedule is saved as its starting rate."""
    rate, opt = learning_rate(config), keras.optimizers
    return {
        "sgd": lambda: opt.SGD(rate),
        "momentum": lambda: opt.SGD(rate, momentum=0.9),
        "nesterov": lambda: opt.SGD(rate, momentum=0.9, nesterov=True),
        "adagrad": lambda: opt.Adagrad(rate),
        "rmsprop": lambda: opt.RMSprop(rate),
        "adam": lambda: opt.Adam(rate),
    }[config.optimizer]()

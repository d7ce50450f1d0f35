"""Keras model files read without Keras: a Sequential model's layers, their settings and weights.

The layouts, as Keras writes them (keras/src/saving/saving_lib.py and
keras/src/legacy/saving/legacy_h5_format.py in Keras 3; tf_keras/saving/legacy/hdf5_format.py in
Keras 2):
- `.keras` (Keras 3): a zip holding `config.json` (the serialized model) and `model.weights.h5`.
- `.weights.h5` (Keras 3 `save_weights`): that same weights file. A layer's arrays are
  `layers/<name>/vars/0, 1, ...`, where the name is its class in snake case with a counter
  (`dense`, `dense_1`, `conv2d`), never the layer's own name.
- `.h5` whole model (Keras 2 `save`, and Keras 3's legacy HDF5): root attrs `keras_version`,
  `backend`, `model_config` (JSON) and `training_config`; the arrays under
  `model_weights/<layer name>/`, in the order of that group's `weight_names` attr, and the layers
  in the order of the `layer_names` attr.
- `.h5` weights only (Keras 2 `save_weights`): the same layer groups, at the root.
Keras 2 writes the attrs as bytes and splits an attr over 64 KB into `name0`, `name1`, ...
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fashion_jax.errors import FashionJaxError


class KerasFileError(FashionJaxError, ValueError):
    """A file that is not a Keras model fashion_jax can read; the message is one line."""


@dataclass
class KerasLayer:
    kind: str  # the Keras class name: Dense, Conv2D, ...
    name: str
    config: dict[str, Any]
    weights: list[np.ndarray] = field(default_factory=list)


@dataclass
class KerasModel:
    layers: list[KerasLayer]  # in model order, without the InputLayer
    input_shape: tuple[int, ...] | None  # without the batch axis; None when the file omits it
    optimizer: Any  # the compile() optimizer as Keras serialized it, or None
    keras_version: str


def file_kind(path: Path) -> str:
    """'keras' (a .keras zip), 'h5' (a whole model in HDF5) or 'weights' (weights only)."""
    if not path.is_file():
        raise KerasFileError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if {"config.json", "model.weights.h5"} <= set(zf.namelist()):
                return "keras"
        raise KerasFileError(f"{path}: a zip without config.json and model.weights.h5; not .keras")
    if not h5py.is_hdf5(path):
        raise KerasFileError(f"{path}: not a Keras model (neither a .keras zip nor HDF5)")
    with _open_h5(path) as f:
        if "model_config" in f.attrs:
            return "h5"
        if "layer_names" in f.attrs or "layer_names0" in f.attrs or "layers" in f:
            return "weights"
    raise KerasFileError(f"{path}: HDF5 without model_config or layer weights; not a Keras model")


def read_model(path: Path) -> KerasModel:
    """The layers of a whole-model file (.keras or .h5), each with its weights."""
    with _damaged(path):
        return _read_model(path)


def read_weights(path: Path) -> list[tuple[str, list[np.ndarray]]]:
    """(group name, arrays) of each layer that has weights, in model order, from a weights-only
    file."""
    with _damaged(path):
        return _read_weights(path)


@contextlib.contextmanager
def _damaged(path: Path) -> Iterator[None]:
    """A group or array the file's own attrs promise but that is missing: one line, not a trace."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, zipfile.BadZipFile) as err:
        what = f"{err.__class__.__name__}: {err}"
        raise KerasFileError(f"{path}: damaged Keras file ({what})") from None


def _read_model(path: Path) -> KerasModel:
    if file_kind(path) == "keras":
        with zipfile.ZipFile(path) as zf:
            spec = _json(zf.read("config.json"), path)
            weights = zf.read("model.weights.h5")
        model = _parse_model(spec, path, "3")
        with _open_h5(io.BytesIO(weights), path) as f:
            for layer, group in zip(model.layers, _class_names(model.layers)):
                layer.weights = _vars(f, f"layers/{group}")
        model.optimizer = (spec.get("compile_config") or {}).get("optimizer")
        return model
    with _open_h5(path) as f:
        spec = _json(f.attrs["model_config"], path)
        version = _text(f.attrs.get("keras_version", b"?"))
        model = _parse_model(spec, path, version)
        group = f.get("model_weights", f)
        names = set(_attr_list(group, "layer_names"))
        for layer in model.layers:
            if layer.name in names:
                layer.weights = _layer_arrays(group[layer.name])
        training = _json(f.attrs["training_config"], path) if "training_config" in f.attrs else {}
        model.optimizer = training.get("optimizer_config")
        return model


def _read_weights(path: Path) -> list[tuple[str, list[np.ndarray]]]:
    with _open_h5(path) as f:
        if "layers" in f:  # Keras 3: the model order is not stored, but the names encode it
            groups = [name for name in f["layers"] if len(f[f"layers/{name}/vars"])]
            for name in groups:
                if _base(name) not in ("conv2d", "dense"):
                    raise KerasFileError(
                        f"{path}: layer {name!r} has weights and no counterpart in fashion_jax"
                    )
            # Our models hold convs first, then denses: Sequential order is (class, counter).
            groups.sort(key=lambda n: (_base(n) != "conv2d", _counter(n)))
            return [(name, _vars(f, f"layers/{name}")) for name in groups]
        rows = [(name, _layer_arrays(f[name])) for name in _attr_list(f, "layer_names")]
        return [(name, arrays) for name, arrays in rows if arrays]


def _open_h5(source: Any, path: Path | None = None) -> h5py.File:
    try:
        return h5py.File(source, "r")
    except OSError as err:
        raise KerasFileError(f"{path or source}: unreadable HDF5 ({err})") from None


def _json(raw: Any, path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(_text(raw))
    except ValueError:
        raise KerasFileError(f"{path}: the model config is not JSON") from None
    if not isinstance(spec, dict):
        raise KerasFileError(f"{path}: the model config is not a JSON object")
    return spec


def _text(raw: Any) -> str:
    return raw.decode("utf8") if isinstance(raw, bytes) else str(raw)


def _short(class_name: Any) -> str:
    """'Dense' from 'Dense', 'keras.layers.Dense' or 'Custom>Dense'."""
    return re.split(r"[>.]", str(class_name))[-1]


def _parse_model(spec: dict[str, Any], path: Path, version: str) -> KerasModel:
    kind = _short(spec.get("class_name"))
    if kind != "Sequential":
        raise KerasFileError(
            f"{path}: a {kind} model; fashion_jax imports Sequential models like the chapter's"
        )
    config = spec.get("config")
    # Keras 2 before 2.2.3 stored the Sequential config as the bare list of layers.
    raw_layers = config if isinstance(config, list) else (config or {}).get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise KerasFileError(f"{path}: the model config lists no layers")
    layers, input_shape = [], None
    for raw in raw_layers:
        if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
            raise KerasFileError(f"{path}: a layer entry of the model config is not an object")
        kind, cfg = _short(raw.get("class_name")), raw["config"]
        # Keras 3 names the input `batch_shape`, Keras 2 `batch_input_shape` (on the InputLayer or
        # on the first layer); a Keras 3 layer's build_config holds its input shape too.
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        if shape is None and not layers and isinstance(raw.get("build_config"), dict):
            shape = raw["build_config"].get("input_shape")
        if input_shape is None and shape:
            input_shape = tuple(int(d) for d in shape[1:] if d is not None)
        if kind != "InputLayer":
            layers.append(KerasLayer(kind, str(cfg.get("name", kind.lower())), cfg))
    return KerasModel(layers, input_shape, None, version)


def _class_names(layers: list[KerasLayer]) -> list[str]:
    """Each layer's group in a Keras 3 weights file: snake-case class name plus a counter."""
    used: dict[str, int] = {}
    names = []
    for layer in layers:
        snake = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", layer.kind))
        snake = re.sub("([a-z])([A-Z])", r"\1_\2", snake).lower()
        used[snake] = used.get(snake, -1) + 1
        names.append(snake if used[snake] == 0 else f"{snake}_{used[snake]}")
    return names


def _base(group: str) -> str:
    return re.sub(r"_\d+$", "", group)


def _counter(group: str) -> int:
    found = re.search(r"_(\d+)$", group)
    return int(found.group(1)) if found else 0


def _vars(f: h5py.File, where: str) -> list[np.ndarray]:
    if f"{where}/vars" not in f:
        return []
    group = f[f"{where}/vars"]
    return [np.asarray(group[str(i)][()]) for i in range(len(group))]


def _attr_list(group: h5py.Group, name: str) -> list[str]:
    """A list attr, joined from its `name0`, `name1`, ... chunks when Keras 2 had to split it."""
    if name in group.attrs:
        raw = list(group.attrs[name])
    else:
        raw, i = [], 0
        while f"{name}{i}" in group.attrs:
            raw.extend(group.attrs[f"{name}{i}"])
            i += 1
    return [_text(item) for item in raw]


def _layer_arrays(group: h5py.Group) -> list[np.ndarray]:
    return [np.asarray(group[name][()]) for name in _attr_list(group, "weight_names")]

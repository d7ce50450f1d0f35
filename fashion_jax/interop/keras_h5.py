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
import lzma
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fashion_jax.errors import FashionJaxError
from fashion_jax.interop import reader_process
from fashion_jax.interop.h5_guard import (
    MAX_H5_FILE_BYTES,
    Budget,
    bounded_memory,
    check_fit,
    check_heaps,
    check_tree,
    read_attr,
)
from fashion_jax.limits import MAX_CONFIG_JSON_BYTES, LimitError, check_size, parse_json


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
    return _in_child("kind", path)


def _file_kind(path: Path) -> str:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if {"config.json", "model.weights.h5"} <= set(zf.namelist()):
                return "keras"
        raise KerasFileError(f"{path}: a zip without config.json and model.weights.h5; not .keras")
    if not h5py.is_hdf5(path):
        raise KerasFileError(f"{path}: not a Keras model (neither a .keras zip nor HDF5)")
    check_size("the file", path.stat().st_size, MAX_H5_FILE_BYTES, "MAX_H5_FILE_BYTES")
    with _open_h5(path) as f:
        if "model_config" in f.attrs:
            return "h5"
        if "layer_names" in f.attrs or "layer_names0" in f.attrs or "layers" in f:
            return "weights"
    raise KerasFileError(f"{path}: HDF5 without model_config or layer weights; not a Keras model")


def read_model(path: Path) -> KerasModel:
    """The layers of a whole-model file (.keras or .h5), each with its weights."""
    return _in_child("model", path)


def read_weights(path: Path) -> list[tuple[str, list[np.ndarray]]]:
    """(group name, arrays) of each layer that has weights, in model order, from a weights-only
    file."""
    return _in_child("weights", path)


def _in_child(what: str, path: Path) -> Any:
    """libhdf5 reads the file in reader_process's child: its crash or hang is one line here."""
    # The child keeps the folder it started in: it gets the absolute path, the user their own.
    absolute = str(Path(path).absolute())
    try:
        return reader_process.call(f"{__name__}:read_here", what, absolute)
    except reader_process.ReadFailed as err:
        text = str(err).replace(absolute, str(path))
        raise KerasFileError(text if text.startswith(str(path)) else f"{path}: {text}") from None


def read_here(what: str, path: str) -> Any:
    """What the child runs: one of the readers, with the checks and memory cap of `_damaged`."""
    readers = {"kind": _file_kind, "model": _read_model, "weights": _read_weights}
    with _damaged(Path(path)):
        return readers[what](Path(path))


# What a damaged file makes zipfile, zlib, h5py or our parsing raise: one line, not a trace.
DAMAGED = (
    KeyError, TypeError, AttributeError, IndexError, ValueError, OSError, EOFError,
    NotImplementedError, RuntimeError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
)  # fmt: skip


@contextlib.contextmanager
def _damaged(path: Path) -> Iterator[None]:
    """A group or array the file's own attrs promise but that is missing, a limit the file passes
    (named), or a link out of the file: one line, not a trace. The reading is capped at
    MAX_READ_MEMORY, which libhdf5's allocations obey too."""
    try:
        with bounded_memory():
            yield
    except KerasFileError:
        raise
    except FashionJaxError as err:
        raise KerasFileError(f"{path}: {err}") from None
    except DAMAGED as err:
        what = " ".join(f"{err.__class__.__name__}: {err}".split())
        raise KerasFileError(f"{path}: damaged Keras file ({what})") from None


def _read_model(path: Path) -> KerasModel:
    if _file_kind(path) == "keras":
        with zipfile.ZipFile(path) as zf:
            raw = _member(zf, "config.json", MAX_CONFIG_JSON_BYTES, "MAX_CONFIG_JSON_BYTES")
            spec = _json(raw, path)
            model = _parse_model(spec, path, "3")
            with _extracted(zf, "model.weights.h5") as weights, _open_h5(weights, path) as f:
                check_tree(f)
                budget = Budget()
                for layer, group in zip(model.layers, _class_names(model.layers)):
                    layer.weights = _vars(f, f"layers/{group}", budget, layer)
        model.optimizer = (spec.get("compile_config") or {}).get("optimizer")
        return model
    with _open_h5(path) as f:
        check_tree(f)
        spec = _json(read_attr(f, "model_config"), path)
        version = _text(read_attr(f, "keras_version")) if "keras_version" in f.attrs else "?"
        model = _parse_model(spec, path, version)
        group = f.get("model_weights", f)
        names, budget = set(_attr_list(group, "layer_names")), Budget()
        for layer in model.layers:
            if layer.name in names:
                layer.weights = _layer_arrays(group[layer.name], budget, layer)
        training = f.attrs.get("training_config") and _json(read_attr(f, "training_config"), path)
        model.optimizer = (training or {}).get("optimizer_config")
        return model


def _read_weights(path: Path) -> list[tuple[str, list[np.ndarray]]]:
    with _open_h5(path) as f:
        check_tree(f)
        budget = Budget()
        if "layers" in f:  # Keras 3: the model order is not stored, but the names encode it
            groups = [name for name in f["layers"] if len(f[f"layers/{name}"].get("vars", ()))]
            for name in groups:
                if _base(name) not in ("conv2d", "dense"):
                    raise KerasFileError(
                        f"{path}: layer {name!r} has weights and no counterpart in fashion_jax"
                    )
            # Our models hold convs first, then denses: Sequential order is (class, counter).
            groups.sort(key=lambda n: (_base(n) != "conv2d", _counter(n)))
            return [(name, _vars(f, f"layers/{name}", budget)) for name in groups]
        names = _attr_list(f, "layer_names")
        rows = [(name, _layer_arrays(f[name], budget)) for name in names]
        return [(name, arrays) for name, arrays in rows if arrays]


def _member(zf: zipfile.ZipFile, name: str, limit: int, limit_name: str) -> bytes:
    """A zip member's bytes, once the size the zip's directory declares is within `limit`; zipfile
    never inflates past that size (a member that holds more fails its CRC check)."""
    info = zf.getinfo(name)
    check_size(f"{name} (inflated)", info.file_size, limit, limit_name)
    with zf.open(info) as member:
        return member.read(limit + 1)


@contextlib.contextmanager
def _extracted(zf: zipfile.ZipFile, name: str) -> Iterator[Any]:
    """A zip member inflated into an unnamed temporary file (h5py reads an HDF5 file where it
    likes, so it must be a file), once its declared size is within MAX_H5_FILE_BYTES."""
    info = zf.getinfo(name)
    check_size(f"{name} (inflated)", info.file_size, MAX_H5_FILE_BYTES, "MAX_H5_FILE_BYTES")
    with tempfile.TemporaryFile() as out, zf.open(info) as member:
        shutil.copyfileobj(member, out, 1 << 20)
        out.seek(0)
        yield out


def _open_h5(source: Any, path: Path | None = None) -> h5py.File:
    check_heaps(source)
    try:
        return h5py.File(source, "r")
    except OSError as err:
        raise KerasFileError(f"{path or source}: unreadable HDF5 ({err})") from None


def _json(raw: Any, path: Path) -> dict[str, Any]:
    try:
        spec = parse_json(raw if isinstance(raw, bytes) else str(raw), "the model config")
    except LimitError as err:
        raise KerasFileError(f"{path}: {err}") from None
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
            input_shape = _sizes(shape, path)
        if kind != "InputLayer":
            layers.append(KerasLayer(kind, str(cfg.get("name", kind.lower())), cfg))
    return KerasModel(layers, input_shape, None, version)


def _sizes(shape: Any, path: Path) -> tuple[int, ...]:
    """An input shape's sizes after the batch axis; a value that is not one (inf, 2**64, a
    string: a damaged config) is one line, never an OverflowError."""
    dims = shape[1:] if isinstance(shape, list) else None
    if dims is None or not all(d is None or type(d) is int and 0 < d < 1 << 31 for d in dims):
        raise KerasFileError(f"{path}: input shape {str(shape)[:60]} is not a list of sizes")
    return tuple(d for d in dims if d is not None)


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


def _vars(f: h5py.File, where: str, budget: Budget, layer: KerasLayer | None = None) -> list:
    """A Keras 3 layer's arrays `<where>/vars/0, 1, ...`, their declared shapes checked first."""
    group = f.get(f"{where}/vars")
    if group is None:
        return []
    arrays = [group[str(i)] for i in range(len(group))]
    _fits(layer, arrays, where)
    return [budget.read_array(a, f"{where}/vars/{i}") for i, a in enumerate(arrays)]


def _attr_list(group: h5py.Group, name: str) -> list[str]:
    """A list attr, joined from its `name0`, `name1`, ... chunks when Keras 2 had to split it."""
    if name in group.attrs:
        raw = list(np.atleast_1d(read_attr(group, name)))
    else:
        raw, i = [], 0
        while f"{name}{i}" in group.attrs:
            raw.extend(np.atleast_1d(read_attr(group, f"{name}{i}")))
            i += 1
    return [_text(item) for item in raw]


def _layer_arrays(group: h5py.Group, budget: Budget, layer: KerasLayer | None = None) -> list:
    arrays = [group[name] for name in _attr_list(group, "weight_names")]
    _fits(layer, arrays, group.name)
    return [budget.read_array(a, f"{group.name}/{a.name}") for a in arrays]


def _fits(layer: KerasLayer | None, arrays: list[Any], where: str) -> None:
    if layer is not None:
        units = layer.config.get("units" if layer.kind == "Dense" else "filters")
        check_fit(layer.kind, layer.name, units, arrays, where)

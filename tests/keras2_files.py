"""Keras 2 HDF5 files written with h5py, in the layout of tf-keras's legacy saving
(tf_keras/saving/legacy/hdf5_format.py and saving_utils.model_metadata): Keras 3 cannot write them,
and the book's readers hold files from Keras 2.

Whole model (`model.save('x.h5')`): root attrs keras_version, backend, model_config and
training_config (JSON, as bytes); `model_weights/` with attrs layer_names (bytes), backend and
keras_version, one group per layer (created in name order) whose `weight_names` attr lists
`<layer>/kernel:0`, `<layer>/bias:0`, stored at `model_weights/<layer>/<layer>/kernel:0`; an empty
`top_level_model_weights` group. Weights only (`save_weights('x.h5')`): the same groups and attrs at
the root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

VERSION = b"2.13.1"
INIT = {"class_name": "GlorotUniform", "config": {"seed": None}}
ZEROS = {"class_name": "Zeros", "config": {}}


def layer(kind: str, name: str, **config: Any) -> dict[str, Any]:
    """A layer as Keras 2's legacy serialization writes it: no module, dtype a plain string."""
    return {
        "class_name": kind,
        "config": {"name": name, "trainable": True, "dtype": "float32", **config},
    }


def dense(name: str, units: int, activation: str, **extra: Any) -> dict[str, Any]:
    return layer(
        "Dense", name, units=units, activation=activation, use_bias=True,
        kernel_initializer=INIT, bias_initializer=ZEROS, kernel_regularizer=None,
        bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
        bias_constraint=None, **extra,
    )  # fmt: skip


def conv(name: str, filters: int, **extra: Any) -> dict[str, Any]:
    return layer(
        "Conv2D", name, filters=filters, kernel_size=[3, 3], strides=[1, 1], padding="same",
        data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="relu",
        use_bias=True, kernel_initializer=INIT, bias_initializer=ZEROS, **extra,
    )  # fmt: skip


def pool(name: str) -> dict[str, Any]:
    return layer(
        "MaxPooling2D", name, pool_size=[2, 2], padding="valid", strides=[2, 2],
        data_format="channels_last",
    )  # fmt: skip


def input_layer(name: str, shape: list[int]) -> dict[str, Any]:
    return {
        "class_name": "InputLayer",
        "config": {"batch_input_shape": [None, *shape], "dtype": "float32", "sparse": False,
                   "ragged": False, "name": name},
    }  # fmt: skip


def _write_layers(group: h5py.Group, names: list[str], weights: dict[str, list]) -> None:
    group.attrs["layer_names"] = np.array([n.encode("utf8") for n in names])
    group.attrs["backend"] = b"tensorflow"
    group.attrs["keras_version"] = VERSION
    for name in sorted(names):  # tf-keras creates the groups in name order
        g = group.create_group(name)
        arrays = weights.get(name, [])
        labels = [f"{name}/{w}:0".encode() for w in ("kernel", "bias")[: len(arrays)]]
        g.attrs["weight_names"] = np.array(labels, dtype="S") if labels else np.array([])
        for label, array in zip(labels, arrays):
            g.create_dataset(label.decode(), data=np.asarray(array, np.float32))
    group.create_group("top_level_model_weights").attrs["weight_names"] = np.array([])


def write_model(path: Path, layers: list[dict], weights: dict[str, list]) -> Path:
    """`model.save('x.h5')` of a Keras 2 Sequential: `layers` configs (InputLayer included or not),
    `weights` {layer name: [kernel, bias]}."""
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}
    training = {
        "loss": "sparse_categorical_crossentropy",
        "metrics": [[{"class_name": "MeanMetricWrapper", "config": {"name": "accuracy"}}]],
        "optimizer_config": {
            "class_name": "Adam",
            "config": {"name": "Adam", "learning_rate": 0.0010000000474974513, "beta_1": 0.9,
                       "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False},
        },
    }  # fmt: skip
    names = [entry["config"]["name"] for entry in layers if entry["class_name"] != "InputLayer"]
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = VERSION
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode("utf8")
        f.attrs["training_config"] = json.dumps(training).encode("utf8")
        _write_layers(f.create_group("model_weights"), names, weights)
    return path


def write_weights(path: Path, names: list[str], weights: dict[str, list]) -> Path:
    """`model.save_weights('x.h5')` in Keras 2: the layer groups at the root."""
    with h5py.File(path, "w") as f:
        _write_layers(f, names, weights)
    return path

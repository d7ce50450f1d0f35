"""Keras import and export: the chapter's three models in every file layout, both directions.

Keras models get random weights (equivalence needs no training) and random biases, so a bias or a
transposed kernel put in the wrong place shows in the probabilities. The 10,000-image figures are
experiments/research/keras_roundtrip.py's.
"""

from __future__ import annotations

import json
import shlex
import zipfile
from pathlib import Path
from typing import Any

import h5py
import jax
import keras2_files as k2
import numpy as np
import pytest
from conftest import require_real_data
from test_cli import run_main

from fashion_jax import config as config_lib
from fashion_jax.interop import keras_h5, keras_io
from fashion_jax.interop.keras_h5 import KerasFileError, KerasLayer, KerasModel
from fashion_jax.model.models import build_model, init_params
from fashion_jax.storage.model_files import load_model, save_model
from fashion_jax.training.evaluate import predict_logits

# Keras and its layers, imported by the fixture below when this file's first test runs, not at
# collection, where every worker of the suite would pay its 1.6 s.
keras: Any = None
L: Any = None


@pytest.fixture(scope="module", autouse=True)
def _keras() -> None:
    global keras, L
    keras = keras_io.load_keras()
    L = keras.layers


TOL = 1e-5
IMAGES = np.random.default_rng(7).integers(0, 256, (128, 28, 28), dtype=np.uint8)

# The chapter's models: Dense(10) on 784 pixels; model_fn(Dropout(0.3)) with relu; the section-7.2
# sigmoid MLP on flat rows; the CNN. `z` sets zero initial kernels, replaced by NumPy draws below:
# Keras's own random initialisers compile one JAX program per shape, 16 s on a loaded 2-core box.
ARCHS = {
    "dense": lambda z: [keras.Input((784,)), L.Dense(10, activation="softmax", **z)],
    "mlp": lambda z: [
        keras.Input((28, 28)),
        L.Flatten(),
        L.Dense(100, activation="relu", **z),
        L.Dropout(0.3),
        L.Dense(10, activation="softmax", **z),
    ],
    "mlp_sigmoid": lambda z: [
        keras.Input((784,)),
        L.Dense(100, activation="sigmoid", **z),
        L.Dense(10, activation="softmax", **z),
    ],
    "cnn": lambda z: [
        keras.Input((28, 28, 1)),
        L.Conv2D(32, kernel_size=3, activation="relu", padding="same", **z),
        L.MaxPooling2D(2),
        L.Conv2D(64, kernel_size=(3, 3), activation="relu", padding="same", **z),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(100, activation="relu", **z),
        L.Dropout(0.4),
        L.Dense(10, activation="softmax", **z),
    ],
}
# What each imports as, and the flags that say so for a weights-only file.
FLAGS = {
    "dense": ["--model", "dense"],
    "mlp": ["--model", "mlp", "--activation", "relu", "--dropout", "0.3"],
    "mlp_sigmoid": ["--model", "mlp"],
    "cnn": ["--model", "cnn"],
}
EXPECTED = {
    "dense": config_lib.model_config("dense"),
    "mlp": config_lib.model_config("mlp", activation="relu", dropout=0.3),
    "mlp_sigmoid": config_lib.model_config("mlp"),
    "cnn": config_lib.model_config("cnn"),
}


def chapter_model(arch: str, seed: int = 0, compiled: bool = True):
    model = keras.Sequential(ARCHS[arch]({"kernel_initializer": "zeros"}))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            scale = np.sqrt(2.0 / np.prod(kernel.shape[:-1]))  # He: relu layers stay lively
            draws = [rng.normal(0, scale, kernel.shape), rng.normal(0, 0.2, bias.shape)]
            layer.set_weights([d.astype(np.float32) for d in draws])
    if compiled:
        model.compile(
            optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
    return model


def keras_probs(model, images: np.ndarray = IMAGES) -> np.ndarray:
    x = images.reshape((-1, *model.input_shape[1:])).astype(np.float32) / 255.0
    return np.asarray(model(x, training=False))  # eager: no per-model compile, as predict has


def our_probs(cfg: config_lib.ModelConfig, params, images: np.ndarray = IMAGES) -> np.ndarray:
    logits = predict_logits(build_model(cfg), params, images, 64)
    return np.asarray(jax.nn.softmax(logits, axis=-1))


@pytest.fixture(scope="module")
def chapter():
    """arch -> (Keras model, its probabilities on IMAGES)."""
    models = {arch: chapter_model(arch) for arch in ARCHS}
    return {arch: (model, keras_probs(model)) for arch, model in models.items()}


def keras2_layers(model, with_input: bool) -> list[dict]:
    """Keras 2 configs of `model`'s layers, named as a Keras 2 session numbers them."""
    shape = list(model.input_shape[1:])
    out = [k2.input_layer("input_1", shape)] if with_input else []
    for i, layer in enumerate(model.layers):
        name = f"{layer.__class__.__name__.lower()}_{i + 3}"
        first = {} if with_input or i else {"batch_input_shape": [None, *shape]}
        if isinstance(layer, L.Dense):
            out.append(k2.dense(name, layer.units, layer.activation.__name__, **first))
        elif isinstance(layer, L.Conv2D):
            out.append(k2.conv(name, layer.filters, **first))
        elif isinstance(layer, L.MaxPooling2D):
            out.append(k2.pool(name))
        elif isinstance(layer, L.Flatten):
            out.append(k2.layer("Flatten", name, data_format="channels_last", **first))
        else:
            out.append(k2.layer("Dropout", name, rate=layer.rate, noise_shape=None, seed=None))
    return out


def write(model, fmt: str, folder: Path) -> Path:
    """`model` in one of the layouts a reader may hold."""
    if fmt in ("keras", "h5", "weights.h5"):
        path = folder / f"model.{fmt}"
        (model.save_weights if fmt == "weights.h5" else model.save)(path)
        return path
    configs = keras2_layers(model, with_input=fmt == "keras2-input.h5")
    names = [c["config"]["name"] for c in configs if c["class_name"] != "InputLayer"]
    weights = {name: layer.get_weights() for name, layer in zip(names, model.layers)}
    if fmt == "keras2-weights.h5":
        return k2.write_weights(folder / "weights.h5", names, weights)
    return k2.write_model(folder / "model.h5", configs, weights)


FORMATS = ["keras", "h5", "weights.h5", "keras2.h5", "keras2-input.h5", "keras2-weights.h5"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_import_reproduces_keras_probabilities(arch, fmt, chapter, tmp_path):
    model, expected = chapter[arch]
    path = write(model, fmt, tmp_path)
    if keras_h5.file_kind(path) == "weights":
        flags = dict(zip(FLAGS[arch][::2], FLAGS[arch][1::2]))
        typed = {k[2:]: (float(v) if k == "--dropout" else v) for k, v in flags.items()}
        cfg = config_lib.preset(None, **typed).model
        weighted = keras_h5.read_weights(path)
    else:
        read = keras_h5.read_model(path)
        cfg = config_lib.preset(None, **keras_io.model_fields(read)).model
        weighted = [(layer.name, layer.weights) for layer in read.layers if layer.weights]
        assert keras_io.optimizer_fields(read.optimizer) == {"optimizer": "adam"}
    assert cfg == EXPECTED[arch]
    params = keras_io.params_from_keras(cfg, weighted)
    assert np.abs(our_probs(cfg, params) - expected).max() < TOL


@pytest.mark.parametrize("arch", ["dense", "cnn"])  # mlp: the tests above and below
def test_cli_import_then_export_round_trip(arch, chapter, tmp_path):
    model, expected = chapter[arch]
    work = tmp_path / "work"
    code, out, err = run_main(["import", write(model, "keras", tmp_path), "--workdir", work])
    assert code == 0, err
    config, _, params = load_model(work)  # what evaluate, predict and plot restore
    ours = our_probs(config.model, params)
    assert np.abs(ours - expected).max() < TOL
    for name in ("back.keras", "back.h5", "back.weights.h5"):
        code, _, err = run_main(["export", work, tmp_path / name])
        assert code == 0, err
        if name.endswith(".weights.h5"):  # the chapter rebuilds its Sequential and loads weights
            back = chapter_model(arch, seed=1, compiled=False)
            assert np.abs(keras_probs(back) - ours).max() > 1e-3  # other weights before loading
            back.load_weights(tmp_path / name)
        else:
            back = keras.models.load_model(tmp_path / name)
        assert np.abs(keras_probs(back) - ours).max() < TOL


@pytest.mark.parametrize("name", ["logreg", "mlp"])  # transposed kernel; no Dropout
def test_export_of_our_own_model_predicts_the_same_in_keras(name, tmp_path):
    config = config_lib.preset(None, model=name, optimizer="sgd", learning_rate=0.05)
    params = init_params(build_model(config.model), seed=3)
    shift = lambda p: p + 0.1 if p.ndim == 1 else p  # nonzero biases
    params = jax.tree.map(shift, params)
    save_model(tmp_path / "m", config, params)
    code, _, err = run_main(["export", tmp_path / "m", tmp_path / "m.keras", "--json"])
    assert code == 0, err
    back = keras.models.load_model(tmp_path / "m.keras")
    assert type(back.optimizer).__name__ == "SGD"
    assert np.abs(keras_probs(back) - our_probs(config.model, params)).max() < TOL


def keras_with(layer, tmp_path: Path) -> Path:
    model = keras.Sequential([keras.Input((28, 28)), L.Flatten(), layer, L.Dense(10, "softmax")])
    model.save(tmp_path / "odd.keras")
    return tmp_path / "odd.keras"


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, list[str], str]]:
    """name -> (file, extra flags, what the one error line says)."""
    junk = tmp_path / "junk.h5"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as z:
        z.writestr("readme.txt", "not a model")
    norm = keras_with(L.BatchNormalization(), tmp_path)
    chapter_cnn = chapter_model("cnn")
    k2_norm = k2.write_model(
        tmp_path / "k2norm.h5",
        [k2.layer("Flatten", "flatten", batch_input_shape=[None, 28, 28]),
         k2.layer("BatchNormalization", "batch_normalization_4", axis=[1]),
         k2.dense("dense", 10, "softmax")],
        {},
    )  # fmt: skip
    weights = write(chapter_cnn, "weights.h5", tmp_path)
    return {
        "random bytes": (junk, [], "neither a .keras zip nor HDF5"),
        "h5 without model_config": (tmp_path / "plain.h5", [], "HDF5 without model_config"),
        "zip that is not .keras": (tmp_path / "other.keras", [], "zip without config.json"),
        "BatchNormalization": (
            norm,
            [],
            "layer 'batch_normalization' (BatchNormalization) has no counterpart in fashion_jax",
        ),
        "Keras 2 BatchNormalization": (k2_norm, [], "'batch_normalization_4' (BatchNormalization)"),
        "weights without --model": (weights, [], "holds weights only; say the architecture"),
        "weights of another model": (weights, ["--model", "mlp"], "4 layers with weights; f"),
        "weights of another size": (weights, ["--model", "cnn", "--hidden", "50"], "(3136, 50)"),
        "model flag against the file": (
            write(chapter_cnn, "keras", tmp_path),
            ["--hidden", "7"],
            "--hidden 7 disagrees",
        ),
    }


def test_bad_files_are_one_line_and_exit_2(tmp_path):
    for name, (path, flags, says) in bad_files(tmp_path).items():
        work = tmp_path / f"w-{name.replace(' ', '-')}"
        code, out, err = run_main(["import", path, "--workdir", work, *flags])
        assert code == 2, name
        assert err.count("\n") == 1 and err.startswith("error: ") and says in err, (name, err)
        assert str(path) in err, name
        assert not (work / "config.json").exists(), name


def test_import_keeps_an_existing_run_unless_overwrite(chapter, tmp_path):
    path, work = write(chapter["dense"][0], "h5", tmp_path), tmp_path / "work"
    assert run_main(["import", path, "--workdir", work])[0] == 0
    code, _, err = run_main(["import", path, "--workdir", work])
    assert code == 2 and "already holds a run" in err
    assert run_main(["import", path, "--workdir", work, "--overwrite"])[0] == 0
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["0"]


def test_export_refuses_to_overwrite_and_names_its_formats(tmp_path):
    config = config_lib.preset(None, model="dense")
    save_model(tmp_path / "m", config, init_params(build_model(config.model), seed=0))
    out = tmp_path / "out.h5"
    out.write_bytes(b"keep me")
    code, _, err = run_main(["export", tmp_path / "m", out])
    assert (code, out.read_bytes()) == (2, b"keep me") and "--overwrite" in err
    code, _, err = run_main(["export", tmp_path / "m", tmp_path / "out.pkl"])
    assert code == 2 and ".weights.h5" in err
    assert run_main(["export", tmp_path / "m", out, "--overwrite"])[0] == 0
    assert keras_h5.file_kind(out) == "h5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "out.h5"]  # no temporary left


def layers_of(*specs: tuple[str, str, dict]) -> KerasModel:
    return KerasModel(
        [KerasLayer(kind, name, cfg) for kind, name, cfg in specs], (28, 28, 1), None, "3"
    )


CONV = {
    "filters": 8,
    "kernel_size": [3, 3],
    "strides": [1, 1],
    "padding": "same",
    "activation": "relu",
}
FLAT = ("Flatten", "f", {})
OUT = ("Dense", "o", {"units": 10, "activation": "softmax"})
MISFITS = {
    "AveragePooling2D": (
        [("Conv2D", "c", CONV), ("AveragePooling2D", "avg", {"pool_size": [2, 2]})],
        "layer 'avg' (AveragePooling2D) has no counterpart",
    ),
    "dropout after flatten": (
        [FLAT, ("Dropout", "drop", {"rate": 0.2}), OUT],
        "layer 'drop' (Dropout): is out of place",
    ),
    "conv activation differs": (
        [("Conv2D", "c", {**CONV, "activation": "tanh"}), FLAT,
         ("Dense", "h", {"units": 5, "activation": "relu"}), OUT],
        "layer 'c' (Conv2D): activation 'tanh' differs",
    ),
    "logits output": (
        [FLAT, ("Dense", "o", {"units": 10, "activation": "linear"})],
        "layer 'o' (Dense): activation 'linear' has no counterpart",
    ),
    "elu hidden": (
        [FLAT, ("Dense", "h", {"units": 5, "activation": "elu"}), OUT],
        "layer 'h' (Dense): activation 'elu' has no counterpart",
    ),
    "dilated conv": (
        [("Conv2D", "c", {**CONV, "dilation_rate": [2, 2]})],
        "layer 'c' (Conv2D): dilation_rate=[2, 2] has no counterpart",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", MISFITS)
def test_layers_without_a_counterpart_are_named(case):
    specs, says = MISFITS[case]
    with pytest.raises(KerasFileError, match=None) as err:
        keras_io.model_fields(layers_of(*specs))
    assert says in str(err.value)


@pytest.mark.realdata
def test_train_resume_fine_tunes_from_the_imported_weights(chapter, tmp_path):
    """The printed resume command continues from the Keras weights (here at a rate so small that
    they stay put), not from a fresh initialisation."""
    require_real_data()
    model, expected = chapter["dense"]
    path = write(model, "keras2.h5", tmp_path)
    work = tmp_path / "work"
    flags = ["--subset", "256", "--learning-rate", "1e-9", "--json"]
    code, out, err = run_main(["import", path, "--workdir", work, *flags])
    assert code == 0, err
    resume = json.loads(out.splitlines()[-1])["resume"]
    assert "--learning-rate 1e-09" in resume and "--optimizer adam" in resume
    code, _, err = run_main([*shlex.split(resume)[1:], "--epochs", "1", "--quiet"])
    assert code == 0, err
    history = [json.loads(line) for line in (work / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1]
    config, _, params = load_model(work)
    assert np.abs(our_probs(config.model, params) - expected).max() < TOL

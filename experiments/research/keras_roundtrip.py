"""Keras import and export on the 10,000 test images: max |dp| per architecture and direction.

    python -m experiments.research.keras_roundtrip [--out DIR]

For each of the chapter's models (the Dense softmax, model_fn's MLP with relu and Dropout(0.3),
the CNN):
1. fashion_jax trains it for one epoch (`fashion-jax train ... --epochs 1`);
2. export: `fashion-jax export W model.keras`, then Keras's `load_model`; Keras's softmax
   probabilities against ours;
3. import: Keras trains that model one more epoch on 2,000 training images (so the weights are
   Keras's own), saves it with `model.save('keras.h5')` (Keras's HDF5 writer), and
   `fashion-jax import keras.h5` brings it back; our probabilities against Keras's.
The figure is max |p_keras - p_ours| over the 10,000 x 10 probabilities.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from fashion_jax.data.dataset import load_dataset
from fashion_jax.interop.keras_io import load_keras
from fashion_jax.storage.model_files import load_model
from fashion_jax.training.evaluate import predict_logits

TRAIN = {
    "dense": ["--model", "dense"],
    "mlp": ["--model", "mlp", "--activation", "relu", "--dropout", "0.3", "--optimizer", "adam"],
    "cnn": ["--preset", "chapter"],
}


def cli(*args: str | Path) -> None:
    subprocess.run([sys.executable, "-m", "fashion_jax.cli", *map(str, args)], check=True)


def ours(workdir: Path, images: np.ndarray) -> np.ndarray:
    config, model, params = load_model(workdir)
    return np.asarray(jax.nn.softmax(predict_logits(model, params, images, 500), axis=-1))


def theirs(model, images: np.ndarray) -> np.ndarray:
    x = images.reshape((-1, *model.input_shape[1:])).astype(np.float32) / 255.0
    return np.asarray(model.predict(x, batch_size=500, verbose=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="working folder (default: a temporary one)")
    out = parser.parse_args().out or Path(tempfile.mkdtemp(prefix="keras-roundtrip-"))
    keras = load_keras()
    data = load_dataset()
    rows = []
    for arch, flags in TRAIN.items():
        trained, imported = out / f"{arch}-trained", out / f"{arch}-imported"
        cli("train", *flags, "--epochs", "1", "--workdir", trained, "--overwrite", "--quiet")
        cli("export", trained, out / f"{arch}.keras", "--overwrite")
        model = keras.models.load_model(out / f"{arch}.keras")
        export_gap = np.abs(theirs(model, data.test_x) - ours(trained, data.test_x)).max()

        x = data.train_x[:2000].reshape((-1, *model.input_shape[1:])).astype(np.float32) / 255.0
        keras.utils.set_random_seed(0)  # Keras's shuffle: the import figure repeats run to run
        model.fit(x, data.train_y[:2000], epochs=1, batch_size=32, verbose=0)
        model.save(out / f"{arch}-keras.h5")
        cli("import", out / f"{arch}-keras.h5", "--workdir", imported, "--overwrite")
        import_gap = np.abs(theirs(model, data.test_x) - ours(imported, data.test_x)).max()
        rows.append((arch, export_gap, import_gap))
    print(f"keras {keras.__version__} ({keras.backend.backend()} backend), 10,000 test images")
    print(f"{'model':6s} {'export max|dp|':>15s} {'import max|dp|':>15s}")
    for arch, export_gap, import_gap in rows:
        print(f"{arch:6s} {export_gap:15.3g} {import_gap:15.3g}")


if __name__ == "__main__":
    main()

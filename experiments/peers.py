"""Peer implementations of the chapter's workloads, for the side-by-side benchmark.

The CNN peers do per epoch what the chapter's CNN fit does (and ours does): train, validate on the
12,000 held-out images, save the best weights. The dense peer fits as the chapter's section 6 does:
train only.

Each workload runs alone in its own process (bench.py starts one per run), so it pays its own import
and compile cost and reports its own peak RSS:

    python experiments/peers.py {torch_cnn,keras_cnn,keras_dense,sklearn_cv,ours_dense_fit}
                                [--subset N] [--epochs N] [--channels-last] [--torch-compile]

ours_dense_fit is fashion_jax's `fit` timed the way Keras's is: Python-level timing around the one
call, in this process, its compile included (with the persistent compilation cache when
FASHION_JAX_NO_COMPILE_CACHE is unset, as the CLI runs it).

The last stdout line is one JSON object:
    {"workload", "peer", "seconds", "compile_seconds", "val_accuracy", "peak_rss_mb", ...}
"seconds" is the steady time when the peer's compile cost can be separated ("compile_seconds" is
then a float, and "total_seconds" holds the whole fit), and the whole timed region otherwise
("compile_seconds" is null).
A peer whose package is missing prints {"skipped": "<pkg> not installed", ...} and exits 0.

All peers train on the same data: the chapter's 48,000/12,000 split of the 60,000 training images
(sklearn train_test_split(test_size=0.2, random_state=42)), pixels / 255 as float32.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Make `fashion_jax` importable when run as a script from anywhere (the harness runs it from the
# repo root).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # appended: a PYTHONPATH export (bench --baseline) comes first
    sys.path.append(str(ROOT))

SEED = 42
CNN_EVAL_BATCH = (
    1000  # evaluation batch size: large, since it is not timed and only has to be quick
)
Result = dict[str, Any]


# ----------------------------------------------------------------------------------------- data ---


def chapter_split(subset: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, val_x, val_y) as float32 in [0, 1] and int64 labels.

    --subset keeps the first N training images and the whole validation part, as our CLI does.
    """
    # the split is bit for bit sklearn's train_test_split(0.2, 42)
    from fashion_jax.data import load_dataset

    ds = load_dataset(subset=subset)
    return (
        _scale(ds.train_x),
        ds.train_y.astype(np.int64),
        _scale(ds.val_x),
        ds.val_y.astype(np.int64),
    )


def full_train(subset: int | None) -> tuple[np.ndarray, np.ndarray]:
    """All 60,000 training images in file order: cross_validate's unshuffled folds depend on that
    order."""
    from fashion_jax.data import load_split

    x, y = load_split("train")
    if subset:
        x, y = x[:subset], y[:subset]
    return _scale(x), y.astype(np.int64)


def _scale(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32) / np.float32(255.0)


# -------------------------------------------------------------------------------------- helpers ---


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def skipped(workload: str, package: str) -> Result:
    return {
        "workload": workload,
        "peer": package,
        "skipped": f"{package} not installed",
        "seconds": None,
        "compile_seconds": None,
        "val_accuracy": None,
        "peak_rss_mb": peak_rss_mb(),
    }


def _try_import(module: str) -> Any | None:
    """The module, or None when it is not installed. One that is installed but fails to import (a
    missing dependency, a wrong Keras backend) raises: that is an error to see, not a peer to
    skip."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise


def _import_keras() -> Any | None:
    # The backend is fixed at import time, and ~/.keras/keras.json may say "tensorflow" (not
    # installed here).
    os.environ["KERAS_BACKEND"] = "jax"
    return _try_import("keras")


class _BatchClock:
    """Keras callback that stamps the start of every training batch.

    Only on_train_batch_begin is used: a batch-*end* hook would turn off Keras's async dispatch and
    force a host sync per step, slowing down the very thing being timed. The first step traces and
    compiles synchronously, so the gap between batch 0 and batch 1, less one steady step, estimates
    the compile cost.
    """

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def make(self, keras: Any) -> Any:
        clock = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
                clock.stamps.append(time.perf_counter())

        return Callback()

    def compile_seconds(self) -> float | None:
        gaps = np.diff(self.stamps)
        if len(gaps) < 3:
            return None
        return max(0.0, float(gaps[0] - statistics.median(gaps[1:])))


def _keras_model(
    args: argparse.Namespace, layers: Callable[[Any], list]
) -> tuple[Any, Any, tuple] | None:
    """(keras, Sequential(layers(keras.layers)), chapter split) with the seed set; None without
    Keras."""
    keras = _import_keras()
    if keras is None:
        return None
    keras.utils.set_random_seed(SEED)
    split = chapter_split(args.subset)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # Keras 3 warns about input_shape=; the chapter's code is kept as written
        model = keras.Sequential(layers(keras.layers))
    return keras, model, split


def _keras_fit(
    keras: Any,
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    validation_data: tuple | None = None,
    callbacks: tuple = (),
) -> tuple[float, float | None]:
    """Fit and return (whole fit seconds, estimated compile seconds or None)."""
    clock = _BatchClock()
    t0 = time.perf_counter()
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        validation_data=validation_data,
        callbacks=[clock.make(keras), *callbacks],
    )
    return time.perf_counter() - t0, clock.compile_seconds()


def _keras_result(
    workload: str, keras: Any, total: float, compile_s: float | None, val_acc: float
) -> Result:
    steady = total - compile_s if compile_s is not None else total
    return {
        "workload": workload,
        "peer": f"keras {keras.__version__} ({keras.backend.backend()})",
        "seconds": steady,
        "compile_seconds": compile_s,
        "total_seconds": total,
        "val_accuracy": val_acc,
        "peak_rss_mb": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------------ workloads ---


def torch_cnn(args: argparse.Namespace) -> Result:
    torch = _try_import("torch")
    if torch is None:
        return skipped("torch_cnn", "torch")
    nn = torch.nn
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.manual_seed(SEED)
    tx, ty, vx, vy = chapter_split(args.subset)
    x, y = torch.from_numpy(tx[:, None]), torch.from_numpy(ty)  # NCHW, as torch's conv expects
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3136, 100),
        nn.ReLU(),
        nn.Dropout(0.4),
        nn.Linear(100, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    epochs = args.epochs or 1
    val_x, val_y = torch.from_numpy(vx[:, None]), torch.from_numpy(vy)
    if args.channels_last:  # NHWC in memory: oneDNN's preferred conv layout on CPU
        model = model.to(memory_format=torch.channels_last)
        x, val_x = (t.contiguous(memory_format=torch.channels_last) for t in (x, val_x))
    if args.torch_compile:  # compiled on the first batch, inside the timed region
        model = torch.compile(model)
    best_acc = -1.0
    with tempfile.TemporaryDirectory(prefix="torch-cnn-") as tmp:
        t0 = time.perf_counter()
        for _ in range(
            epochs
        ):  # each epoch as the chapter's fit: train, validate, keep the best weights on disk
            _torch_epoch(torch, model, opt, loss_fn, x, y, args.batch_size)
            val_acc = _torch_accuracy(torch, model, val_x, val_y)
            if val_acc > best_acc:
                best_acc = val_acc
                torch.save(model.state_dict(), os.path.join(tmp, "best-cnn-model.pt"))
        seconds = (time.perf_counter() - t0) / epochs  # per epoch, like ours
    settings = [
        name
        for name, on in (
            ("channels_last", args.channels_last),
            ("torch.compile", args.torch_compile),
        )
        if on
    ]
    return {
        "workload": "torch_cnn",
        "peer": f"torch {torch.__version__}" + (f" ({', '.join(settings)})" if settings else ""),
        "settings": settings,
        "seconds": seconds,
        "compile_seconds": None,
        "epochs": epochs,
        "threads": torch.get_num_threads(),
        "val_accuracy": val_acc,
        "peak_rss_mb": peak_rss_mb(),
    }


def _torch_epoch(
    torch: Any, model: Any, opt: Any, loss_fn: Callable, x: Any, y: Any, batch_size: int
) -> None:
    # Plain tensor indexing instead of a DataLoader: the data already sits in memory, and a
    # DataLoader's per-batch Python overhead would be charged to torch for nothing.
    model.train()
    perm = torch.randperm(len(x))
    for start in range(0, len(x), batch_size):
        idx = perm[start : start + batch_size]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()


def _torch_accuracy(torch: Any, model: Any, x: Any, y: Any) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat(
            [model(x[i : i + CNN_EVAL_BATCH]).argmax(1) for i in range(0, len(x), CNN_EVAL_BATCH)]
        )
    return float((pred == y).float().mean())


def keras_cnn(args: argparse.Namespace) -> Result:
    setup = _keras_model(
        args,
        lambda layers: [
            layers.Conv2D(
                32, kernel_size=3, activation="relu", padding="same", input_shape=(28, 28, 1)
            ),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, kernel_size=3, activation="relu", padding="same"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(100, activation="relu"),
            layers.Dropout(0.4),
            layers.Dense(10, activation="softmax"),
        ],
    )
    if setup is None:
        return skipped("keras_cnn", "keras")
    keras, model, (tx, ty, vx, vy) = setup
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # The chapter's fit for this CNN: validation every epoch and
    # ModelCheckpoint(save_best_only=True), the same work our fit does each epoch (it validates,
    # then checkpoints).
    with tempfile.TemporaryDirectory(prefix="keras-cnn-") as tmp:
        best = keras.callbacks.ModelCheckpoint(
            os.path.join(tmp, "best-cnn-model.keras"), save_best_only=True
        )
        total, compile_s = _keras_fit(
            keras,
            model,
            tx[..., None],
            ty,
            args.epochs or 1,
            args.batch_size,
            validation_data=(vx[..., None], vy),
            callbacks=(best,),
        )
    _, val_acc = model.evaluate(vx[..., None], vy, verbose=0)
    return _keras_result("keras_cnn", keras, total, compile_s, float(val_acc))


def keras_dense(args: argparse.Namespace) -> Result:
    setup = _keras_model(
        args, lambda layers: [layers.Dense(10, activation="softmax", input_shape=(784,))]
    )
    if setup is None:
        return skipped("keras_dense", "keras")
    keras, model, (tx, ty, vx, vy) = setup
    model.compile(
        loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )  # default optimizer: RMSprop
    total, compile_s = _keras_fit(
        keras, model, tx.reshape(-1, 784), ty, args.epochs or 5, args.batch_size
    )
    _, val_acc = model.evaluate(vx.reshape(-1, 784), vy, verbose=0)
    return _keras_result("keras_dense", keras, total, compile_s, float(val_acc))


def ours_dense_fit(args: argparse.Namespace) -> Result:
    """fashion_jax's whole `fit` for keras_dense's workload: compile, 5 epochs, validation and the
    per-epoch checkpoints (on by default) included; `seconds` is the whole call."""
    from fashion_jax import config as config_lib
    from fashion_jax.config import RunOptions
    from fashion_jax.data import load_dataset
    from fashion_jax.train import fit

    try:  # what the CLI does; off with FASHION_JAX_NO_COMPILE_CACHE
        from fashion_jax.compile import enable_persistent_cache

        cache = enable_persistent_cache()
    except ImportError:  # a --baseline export from before the cache existed
        cache = None
    data = load_dataset(subset=args.subset)
    config = config_lib.preset(
        None, model="dense", epochs=args.epochs or 5, batch_size=args.batch_size, patience=0
    )
    with tempfile.TemporaryDirectory(prefix="ours-dense-") as tmp:
        t0 = time.perf_counter()
        result = fit(config, data, Path(tmp) / "run", RunOptions(quiet=True))
        seconds = time.perf_counter() - t0
    return {
        "workload": "ours_dense_fit",
        "peer": "fashion_jax fit" + (" (compilation cache on)" if cache else ""),
        "seconds": seconds,
        "compile_seconds": result.compile_seconds,
        "epoch_seconds": result.epoch_seconds,
        "val_accuracy": result.val_accuracy,
        "peak_rss_mb": peak_rss_mb(),
    }


def sklearn_cv(args: argparse.Namespace) -> Result:
    sklearn = _try_import("sklearn")
    if sklearn is None:
        return skipped("sklearn_cv", "scikit-learn")
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import cross_validate

    warnings.filterwarnings(
        "ignore", category=ConvergenceWarning
    )  # max_iter=5 is the chapter's choice
    x, y = full_train(args.subset)  # the chapter cross-validates on all 60,000 training images
    clf = SGDClassifier(loss="log_loss", max_iter=5, random_state=SEED)
    t0 = time.perf_counter()
    scores = cross_validate(clf, x.reshape(len(x), -1), y, n_jobs=-1)
    seconds = time.perf_counter() - t0
    folds = [float(s) for s in scores["test_score"]]
    return {
        "workload": "sklearn_cv",
        "peer": f"scikit-learn {sklearn.__version__}",
        "seconds": seconds,
        "compile_seconds": None,
        "val_accuracy": statistics.fmean(folds),
        "fold_accuracies": folds,
        "peak_rss_mb": peak_rss_mb(),
        "workers_peak_rss_mb": _workers_peak_rss_mb(),
    }


def _workers_peak_rss_mb() -> float | None:
    """Summed peak RSS (VmHWM) of this process's live children: the joblib workers that did the
    fitting, which RUSAGE_SELF does not see (and RUSAGE_CHILDREN neither: they are still alive,
    waiting for more work)."""
    psutil = _try_import("psutil")
    if psutil is None:
        return None
    total_kib = 0
    for child in psutil.Process().children(recursive=True):
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
        except OSError:  # the worker exited meanwhile
            continue
        total_kib += next(
            (int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM:")), 0
        )
    return total_kib / 1024


WORKLOADS: dict[str, Callable[[argparse.Namespace], Result]] = {
    "torch_cnn": torch_cnn,
    "keras_cnn": keras_cnn,
    "keras_dense": keras_dense,
    "sklearn_cv": sklearn_cv,
    "ours_dense_fit": ours_dense_fit,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workload", choices=sorted(WORKLOADS))
    p.add_argument(
        "--subset",
        type=int,
        default=None,
        help=(
            "train on the first N training images (val unchanged);"
            " sklearn_cv: the first N of 60,000"
        ),
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="default: the chapter's (CNN 1, dense 5); ignored by sklearn_cv",
    )
    p.add_argument("--batch-size", type=int, default=32)
    # torch's OpenMP threads spin at barriers: on a busy machine all-cores can be several times
    # slower than one.
    p.add_argument(
        "--threads", type=int, default=None, help="torch_cnn only (default: os.cpu_count())"
    )
    p.add_argument(
        "--channels-last", action="store_true", help="torch_cnn only: NHWC memory format"
    )
    p.add_argument(
        "--torch-compile", action="store_true", help="torch_cnn only: torch.compile the model"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = WORKLOADS[args.workload](args)
    if args.subset:
        result["subset"] = args.subset
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

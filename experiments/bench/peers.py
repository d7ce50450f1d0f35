"""Peer implementations of the chapter's workloads, for the side-by-side benchmark.

The CNN peers do per epoch what the chapter's CNN fit does (and ours does): train, validate on the
12,000 held-out images, save the best weights. The dense peer fits as the chapter's section 6 does:
train only.

Each workload runs alone in its own process (bench.py starts one per run), so it pays its own import
and compile cost and reports its own peak RSS:

    python -m experiments.bench.peers {torch_cnn,keras_cnn,keras_dense,sklearn_cv,ours_dense_fit}
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
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from experiments.bench.peers_common import (
    SEED,
    Result,
    full_train,
    peak_rss_mb,
    skipped,
    try_import,
)
from experiments.bench.peers_keras import keras_cnn, keras_dense
from experiments.bench.peers_torch import torch_cnn


def ours_dense_fit(args: argparse.Namespace) -> Result:
    """fashion_jax's whole `fit` for keras_dense's workload: compile, 5 epochs, validation and the
    per-epoch checkpoints (on by default) included; `seconds` is the whole call."""
    from fashion_jax import config as config_lib
    from fashion_jax.config import RunOptions
    from fashion_jax.data.dataset import load_dataset
    from fashion_jax.training.loop import fit

    try:  # what the CLI does; off with FASHION_JAX_NO_COMPILE_CACHE
        from fashion_jax.runtime.compile import enable_persistent_cache

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
    sklearn = try_import("sklearn")
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
    psutil = try_import("psutil")
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

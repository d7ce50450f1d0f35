"""The benchmark's workloads: how each one's command line is built and its last JSON line read."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.bench.spec import CLI_STATS, EXPLAIN_CHECKS, PEERS, Options, Workload


def _ours(*args: str, train: bool = True) -> Callable[[Options, Path], list[str]]:
    def argv(opts: Options, tmp: Path) -> list[str]:
        cmd = [sys.executable, "-m", "fashion_jax.cli", *args, "--json"]
        # train: a private --workdir so runs never resume each other's checkpoints, and --quiet
        # because the peers run with verbose=0 too. cv takes neither.
        cmd += ["--workdir", str(tmp), "--quiet"] if train else []
        return cmd + (["--subset", str(opts.subset)] if opts.subset else [])

    return argv


def _peer(name: str, *extra: str) -> Callable[[Options, Path], list[str]]:
    def argv(opts: Options, tmp: Path) -> list[str]:
        return [sys.executable, "-m", PEERS, name, *extra] + (
            ["--subset", str(opts.subset)] if opts.subset else []
        )

    return argv


def _cli(
    *args: str, stats: bool = True, subset: bool = False, json_out: bool = True
) -> Callable[[Options, Path], list[str]]:
    """A whole `fashion-jax` process. In `args`, {tmp} is the run's private folder and {run},
    {image} the trained run and the test image of `fixture`. With `stats` it runs through
    cli_stats.py, which records the compile time of any command."""

    def argv(opts: Options, tmp: Path) -> list[str]:
        head = ["-m", CLI_STATS if stats else "fashion_jax.cli"]
        cmd = [sys.executable, *head, *(a.replace("{tmp}", str(tmp)) for a in args)]
        cmd += ["--json"] if json_out else []
        return cmd + (["--subset", str(opts.subset)] if subset and opts.subset else [])

    return argv


def _parse_ours_train(epochs: int) -> Callable[[dict, float], dict]:
    # Steady time = the epochs' wall time (train, validate, checkpoint). fit() compiles every
    # program it runs before the first epoch starts, and reports that apart as compile_seconds.
    def parse(res: dict, wall: float) -> dict:
        epoch_s = [float(s) for s in res["epoch_seconds"]]
        note = f"ran {len(epoch_s)} of {epochs} epochs" if len(epoch_s) != epochs else None
        return {
            "seconds": sum(epoch_s),
            "compile_seconds": _float_or_none(res.get("compile_seconds")),
            "accuracy": float(res["val_accuracy"]),
            "note": note,
        }

    return parse


def _parse_ours_cv(res: dict, wall: float) -> dict:
    # The CV time includes compiles, as sklearn's wall time includes its process-pool start-up.
    return {
        "seconds": float(res["seconds"]),
        "compile_seconds": _float_or_none(res.get("compile_seconds")),
        "accuracy": float(res["mean_accuracy"]),
    }


def _parse_ours_fast(res: dict, wall: float) -> dict:
    # "Time to 92%" is what a user waits for: interpreter start, imports, data, compile, training,
    # evaluation.
    return {
        "seconds": wall,
        "compile_seconds": _float_or_none(res.get("compile_seconds")),
        "accuracy": float(res["test_accuracy"]),
    }


def _parse_peer(res: dict, wall: float) -> dict:
    return {
        "seconds": float(res["seconds"]),
        "compile_seconds": _float_or_none(res.get("compile_seconds")),
        "accuracy": float(res["val_accuracy"]),
        # sklearn fits in joblib worker processes, whose memory its own RSS does not include
        "workers_rss_mb": _float_or_none(res.get("workers_peak_rss_mb")),
    }


def _parse_peer_whole(res: dict, wall: float) -> dict:
    # Keras's whole fit call, its compile included: what `ours_dense_fit` times around our fit.
    return {**_parse_peer(res, wall), "seconds": float(res["total_seconds"])}


def _parse_process(res: dict, wall: float) -> dict:
    # Launch to exit, as a user waits for it; the compile time is what cli_stats.py recorded.
    stats = res.get("bench_stats") or {}
    accuracy = next(
        (res[k] for k in ("val_accuracy", "mean_accuracy", "accuracy") if k in res), None
    )
    hits, misses = stats.get("cache_hits"), stats.get("cache_misses")
    note = None if hits is None else f"JAX cache: {hits} hits, {misses} misses"
    traced = _float_or_none(stats.get("trace_seconds"))
    if note and traced is not None:  # a start pays this on top, whatever the caches hold
        note += f"; tracing and lowering {traced:.2f} s"
    return {
        "seconds": wall,
        "compile_seconds": _float_or_none(stats.get("compile_seconds")),
        "accuracy": _float_or_none(accuracy),
        "note": note,
    }


def _cold_and_warm(command: str, *args: str, subset: bool = False) -> tuple[Workload, Workload]:
    """`command` in a fresh compilation cache, then again in the cache the first run filled."""
    task, argv = f"{command}_process", _cli(command, *args, subset=subset)
    return (
        Workload(
            f"cold_{command}",
            task,
            "ours",
            argv,
            _parse_process,
            label="fashion_jax, empty compilation cache",
            cache="cold",
            cache_key=command,
        ),
        Workload(
            f"warm_{command}",
            task,
            "ours",
            argv,
            _parse_process,
            label="fashion_jax, cache filled by the run before",
            cache="warm",
            cache_key=command,
        ),
    )


def _help(*args: str) -> Workload:
    name = "_".join(["ours_help", *(a for a in args if not a.startswith("-"))])
    return Workload(
        name,
        "help",
        "ours",
        _cli(*args, "--help", stats=False, json_out=False),
        lambda res, wall: {"seconds": wall},
        label=f"fashion-jax {' '.join((*args, '--help'))}",
        json_out=False,
    )


# Listed in the interleaving order: ours first, then its peers, task by task.
# The chapter's section 6 dense fit: 5 epochs at batch 32; --patience 0 as for the CNN, so early
# stopping cannot shorten the 5 epochs the peer runs.
DENSE_5_EPOCHS = ("--model", "dense", "--epochs", "5", "--batch-size", "32", "--patience", "0")

WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "ours_cnn",
        "cnn",
        "ours",
        _ours(
            "train",
            "--model",
            "cnn",
            "--optimizer",
            "adam",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--patience",
            "0",
        ),
        _parse_ours_train(1),
    ),
    Workload("torch_cnn", "cnn", "torch", _peer("torch_cnn"), _parse_peer),
    # The other settings tried; the ours/torch ratio is taken against the fastest torch row.
    Workload(
        "torch_cnn_channels_last",
        "cnn",
        "torch",
        _peer("torch_cnn", "--channels-last"),
        _parse_peer,
    ),
    Workload(
        "torch_cnn_compile", "cnn", "torch", _peer("torch_cnn", "--torch-compile"), _parse_peer
    ),
    Workload("keras_cnn", "cnn", "keras", _peer("keras_cnn"), _parse_peer),
    Workload(
        "ours_dense",
        "dense",
        "ours",
        _ours("train", *DENSE_5_EPOCHS),
        _parse_ours_train(5),
    ),
    # The same fit writing only its final params (--checkpoints end): what Keras's fit does, which
    # saves nothing.
    Workload(
        "ours_dense_end",
        "dense",
        "ours",
        _ours("train", *DENSE_5_EPOCHS, "--checkpoints", "end"),
        _parse_ours_train(5),
    ),
    Workload("keras_dense", "dense", "keras", _peer("keras_dense"), _parse_peer),
    # The whole fit call on both sides, timed in Python around it, compile included. Keras fits as
    # the chapter's section 6 does: no validation_data (its val accuracy is measured after the
    # timed call). Ours does more inside its call: a validation pass every epoch, the per-epoch
    # checkpoints (its default) and the test evaluation (curves.png is the CLI's: fit, like
    # Keras's, draws no figures). Ours with the compilation cache (filled by an untimed warm-up
    # run, as by any earlier run on this machine) and with an empty one.
    Workload(
        "ours_dense_fit",
        "dense_fit",
        "ours",
        _peer("ours_dense_fit"),
        _parse_peer,
        label="fashion_jax fit, compilation cache filled",
        cache="warm",
        cache_key="dense_fit",
        warmup=1,
    ),
    Workload(
        "ours_dense_fit_cold",
        "dense_fit",
        "ours",
        _peer("ours_dense_fit"),
        _parse_peer,
        label="fashion_jax fit, empty compilation cache",
        cache="cold",
        cache_key="dense_fit_cold",
    ),
    Workload("keras_dense_fit", "dense_fit", "keras", _peer("keras_dense"), _parse_peer_whole),
    Workload(
        "ours_cv",
        "cv",
        "ours",
        _ours("cv", "--model", "logreg", "--folds", "5", train=False),
        _parse_ours_cv,
    ),
    Workload("sklearn_cv", "cv", "sklearn", _peer("sklearn_cv"), _parse_peer),
    Workload("ours_fast", "fast", "ours", _ours("train", "--preset", "fast"), _parse_ours_fast),
    # Whole processes, each command twice: first with an empty compilation cache, then with it.
    *_cold_and_warm(
        "train",
        *DENSE_5_EPOCHS,
        "--workdir",
        "{tmp}/run",
        "--quiet",
        subset=True,
    ),
    *_cold_and_warm("cv", "--model", "logreg", "--folds", "5", subset=True),
    *_cold_and_warm("evaluate", "--workdir", "{run}", "--split", "test"),
    *_cold_and_warm("predict", "--workdir", "{run}", "{image}"),
    # One image, process start to answer, caches warm (an untimed run first); its twin runs the
    # package at BEFORE_FAST_START on a run that package trained.
    Workload(
        "ours_predict",
        "predict",
        "ours",
        _cli("predict", "--workdir", "{run}", "{image}", stats=False),
        _parse_process,
        cache="warm",
        cache_key="predict",
        warmup=1,
    ),
    # issue 25: the maps of one image by all four methods, timed in process after a warm-up call
    Workload(
        "ours_explain",
        "explain",
        "ours",
        lambda opts, tmp: [sys.executable, "-m", EXPLAIN_CHECKS, "--bench"],
        lambda res, wall: {"seconds": float(res["seconds"])},
        label="fashion_jax Explainer, median of 20",
    ),
    _help(),
    _help("train"),
    _help("predict"),
)


def _float_or_none(x: Any) -> float | None:
    return None if x is None else float(x)

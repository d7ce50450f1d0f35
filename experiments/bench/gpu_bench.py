"""One short, prepared accelerator benchmark: CNN epoch (step dispatch vs scan, batch 32 and 256),
the vmapped 5-fold CV, and whole `train`/`predict` processes with an empty and then a filled
compilation cache (compile time from experiments/bench/cli_stats.py). Run it where JAX sees a
GPU/TPU, from the repository root:

    python -m experiments.bench.gpu_bench --out experiments/bench/out/gpu_bench.json

It prints one JSON line per measurement and writes them all to --out; experiments/bench/bench.py
folds that file into the benchmark table. Timings are steady state; compile is reported apart.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from experiments.bench.runner import child_env
from experiments.bench.spec import CLI_STATS, ROOT
from fashion_jax.config import TrainConfig, model_config
from fashion_jax.data.batching import epoch_order, padded_order
from fashion_jax.data.dataset import load_dataset
from fashion_jax.model.models import build_model, init_params
from fashion_jax.model.optim import make_optimizer
from fashion_jax.model.state import create_train_state, epoch_sums
from fashion_jax.training import steps
from fashion_jax.training.evaluate import evaluate_arrays


def cnn_epoch(data, batch_size: int, steps_per_call: int | None, epochs: int = 2) -> dict:
    """Seconds for one CNN epoch after compile; steps_per_call None = a whole epoch per call."""
    config = TrainConfig(model=model_config("cnn"), optimizer="adam", batch_size=batch_size)
    model = build_model(config.model)
    n = len(data.train_y)
    per_epoch = -(-n // batch_size)
    k = per_epoch if steps_per_call is None else steps_per_call
    tx = make_optimizer(config, per_epoch * epochs)
    state = create_train_state(init_params(model, 0), tx)
    sums = epoch_sums(n)
    x, y = jax.device_put(data.train_x), jax.device_put(data.train_y.astype(np.int32))
    order0 = jax.device_put(padded_order(np.arange(n), batch_size))
    stepper = steps.Stepper(model, tx, 0, batch_size, per_epoch, k, (state, sums, order0, x, y))
    t0 = time.perf_counter()
    stepper.warm()
    compile_s = time.perf_counter() - t0
    times = []
    for epoch in range(epochs):
        sums = epoch_sums(n)
        order = jax.device_put(padded_order(epoch_order(n, 0, epoch), batch_size))
        t0 = time.perf_counter()
        for chunk in stepper.plan(0):
            state, sums, _ = stepper.compiled(chunk)(state, sums, order, x, y)
        jax.block_until_ready(sums)
        times.append(time.perf_counter() - t0)
    val = evaluate_arrays(model, state.params, data.val_x, data.val_y, 1000)
    return {
        "workload": "cnn_epoch",
        "batch_size": batch_size,
        "dispatch": "scan_epoch" if steps_per_call is None else f"{k}_steps_per_call",
        "epoch_seconds": min(times),
        "all_epoch_seconds": times,
        "compile_seconds": compile_s,
        "val_accuracy_after": val["accuracy"],
        "epochs": epochs,
    }


def cv_run() -> dict:
    from fashion_jax.data.dataset import load_split
    from fashion_jax.training.cv import cross_validate, cv_config

    images, labels = load_split("train")
    config = cv_config("logreg")  # the "cv" preset, as `fashion-jax cv` runs it
    t0 = time.perf_counter()
    result = cross_validate(config, images, labels, 5)
    return {"workload": "cv_logreg_5fold", "seconds": time.perf_counter() - t0, **result.summary()}


def process_runs(subset: int | None) -> list[dict]:
    """`train` (CNN, 1 epoch) and `predict` (one image) as whole processes: each once with an empty
    compilation cache, then again with the cache the first run filled."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        image = Path(tmp) / "image.npy"
        np.save(image, load_dataset(subset=subset or 1).test_x[0])
        train = ["train", "--model", "cnn", "--epochs", "1", "--workdir", f"{tmp}/run"]
        train += ["--quiet", "--overwrite"] + (["--subset", str(subset)] if subset else [])
        for command, argv in (
            ("train", train),
            ("predict", ["predict", "--workdir", f"{tmp}/run"]),
        ):
            argv = argv + ([str(image)] if command == "predict" else [])
            for cache in ("cold", "warm"):
                stats = Path(tmp) / f"{command}-{cache}.json"
                env = {**child_env(), "XDG_CACHE_HOME": f"{tmp}/cache-{command}"}
                env.pop("FASHION_JAX_NO_COMPILE_CACHE", None)
                env["FASHION_JAX_BENCH_STATS"] = str(stats)
                t0 = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", CLI_STATS, *argv, "--json"],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                )
                row = {"workload": f"{command}_process", "cache": cache}
                row["seconds"] = time.perf_counter() - t0
                row["returncode"] = done.returncode
                row.update(json.loads(stats.read_text()) if stats.exists() else {})
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/bench/out/gpu_bench.json")
    parser.add_argument("--subset", type=int, help="first N training images (smoke test)")
    args = parser.parse_args()
    data = load_dataset(subset=args.subset)
    rows = [{"devices": [str(d) for d in jax.devices()], "backend": jax.default_backend()}]
    print(json.dumps(rows[0]), flush=True)
    for batch_size in (32, 256):
        for k in (1, None):
            rows.append(cnn_epoch(data, batch_size, k))
            print(json.dumps(rows[-1]), flush=True)
    rows.append(cv_run())
    print(json.dumps(rows[-1]), flush=True)
    for row in process_runs(args.subset):
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

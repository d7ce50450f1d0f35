"""Files made to hurt, as a hostile user would make them, and a probe of what one costs.

Each maker writes a small file (a few KB to a few MB) that declares far more than it holds, or
nests, links or points where a reader must not go. `cost` runs one `fashion-jax` command on it in
a fresh process and measures the command alone: seconds, and the peak memory above what the
process held before the command (VmHWM, reset through /proc/self/clear_refs after the imports).
Shared by tests/test_hostile_files.py and experiments/soak/hostile_cost.py.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np

# A Keras 3 Dense(10) on 784 inputs: the smallest .keras the chapter writes.
DENSE_CONFIG = {
    "class_name": "Sequential",
    "config": {
        "name": "dense",
        "layers": [
            {"class_name": "InputLayer", "config": {"batch_shape": [None, 784], "name": "in"}},
            {
                "class_name": "Dense",
                "config": {"name": "dense", "units": 10, "activation": "softmax"},
            },
        ],
    },
}


def weights_h5(kernel_shape: tuple[int, ...] = (784, 10), **dataset: object) -> bytes:
    """Keras 3's model.weights.h5 for DENSE_CONFIG; `dataset` options (chunks, compression) for
    the kernel let it declare far more than it stores."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        group = f.create_group("layers/dense/vars")
        if dataset:
            group.create_dataset("0", shape=kernel_shape, dtype="f4", **dataset)
        else:
            group.create_dataset("0", data=np.zeros(kernel_shape, np.float32))
        group.create_dataset("1", data=np.zeros(10, np.float32))
    return buffer.getvalue()


def keras_zip(path: Path, config: bytes | None = None, weights: bytes | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", json.dumps(DENSE_CONFIG) if config is None else config)
        zf.writestr("model.weights.h5", weights_h5() if weights is None else weights)
    return path


def keras_bomb(path: Path, inflated: int) -> Path:
    """A .keras whose config.json inflates to `inflated` bytes of spaces (1000:1 deflated)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("config.json", "w", force_zip64=True) as member:
            block = b" " * (1 << 20)
            for _ in range(inflated >> 20):
                member.write(block)
        zf.writestr("model.weights.h5", weights_h5())
    return path


def keras_deep(path: Path, depth: int = 100_000) -> Path:
    """A .keras whose config.json nests `depth` arrays."""
    return keras_zip(path, config=b"[" * depth + b"]" * depth)


def keras_huge_kernel(path: Path, inputs: int = 100_000_000) -> Path:
    """A .keras whose Dense kernel declares (inputs, 10) float32 in never-written gzip chunks."""
    weights = weights_h5((inputs, 10), chunks=(1024, 10), compression="gzip")
    return keras_zip(path, weights=weights)


def npy_declaring(path: Path, shape: tuple[int, ...], dtype: str = "<f8") -> Path:
    """A .npy header declaring `shape` of `dtype`, followed by no data at all."""
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)  # the magic string included
    path.write_bytes(buffer.getvalue())
    return path


def h5_model(path: Path, model_config: bytes, **attrs: object) -> h5py.File:
    """An open Keras 2 whole-model .h5 with this model_config and no weights yet."""
    f = h5py.File(path, "w", libver="latest")  # latest: attributes over 64 KB are allowed
    f.attrs["keras_version"] = b"2.13.1"
    f.attrs["model_config"] = model_config
    for key, value in attrs.items():
        f.attrs[key] = value
    group = f.create_group("model_weights")
    group.attrs["layer_names"] = np.array([b"dense"])
    return f


def _dense_group(f: h5py.File) -> h5py.Group:
    group = f["model_weights"].create_group("dense")
    group.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
    return group


def h5_big_attr(path: Path, size: int = 20 << 20) -> Path:
    """A whole-model .h5 whose model_config attr is `size` bytes of JSON spaces."""
    text = json.dumps(DENSE_CONFIG).encode()
    h5_model(path, text + b" " * size).close()
    return path


def h5_heap_loop(path: Path, seed: bytes) -> Path:
    """A Keras 2 .h5 (`seed`) with one string's size in its global heap set to 139: libhdf5 2.0
    then spins forever reading the attributes (found by the fuzz campaign)."""
    at = seed.index(b"tensorflow") - 8  # the heap object's 8-byte size, just before its bytes
    path.write_bytes(seed[:at] + (139).to_bytes(8, "little") + seed[at + 8 :])
    return path


def h5_external_link(path: Path, target: str = "/etc/passwd") -> Path:
    with h5_model(path, json.dumps(DENSE_CONFIG).encode()) as f:
        f["model_weights"]["dense"] = h5py.ExternalLink(target, "/")
    return path


def h5_external_storage(path: Path, target: str = "/etc/hostname") -> Path:
    """A kernel whose bytes are read from another file of this host (HDF5 external storage)."""
    with h5_model(path, json.dumps(DENSE_CONFIG).encode()) as f:
        group = _dense_group(f)
        group.create_dataset("dense/kernel:0", (784, 10), "f4", external=[(target, 0, 784 * 40)])
        group.create_dataset("dense/bias:0", data=np.zeros(10, np.float32))
    return path


def h5_virtual(path: Path, source: str = "/etc/other.h5") -> Path:
    """A kernel that is a virtual dataset mapping another file's array."""
    with h5_model(path, json.dumps(DENSE_CONFIG).encode()) as f:
        group = _dense_group(f)
        layout = h5py.VirtualLayout((784, 10), "f4")
        layout[:] = h5py.VirtualSource(source, "x", shape=(784, 10))
        group.create_virtual_dataset("dense/kernel:0", layout)
        group.create_dataset("dense/bias:0", data=np.zeros(10, np.float32))
    return path


def idx_bomb(folder: Path, images: int = 1_300_000) -> Path:
    """A --data-dir whose gzipped train images declare and hold `images` blank 28x28 pictures
    (1 GB inflated from about 1 MB); the other three files are small and well formed."""
    folder.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (images, 28, 28))
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=9) as f:
        f.write(header)
        block = bytes(784 * 1000)
        for _ in range(images // 1000):
            f.write(block)
    for name, n, shape in (
        ("train-labels-idx1-ubyte", images, ()),
        ("t10k-images-idx3-ubyte", 10, (28, 28)),
        ("t10k-labels-idx1-ubyte", 10, ()),
    ):
        dims = (n, *shape)
        head = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
        with gzip.open(folder / f"{name}.gz", "wb") as f:
            f.write(head + bytes(int(np.prod(dims))))
    return folder


# Runs in the probed process: imports each command first, so only the command's own work counts.
_PROBE = """
import json, sys, time
from fashion_jax.cli import dispatch, main
import jax, numpy  # what every command imports before reading a file
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
for argv in json.loads(sys.argv[1]):
    dispatch.load_handler(argv[0])
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
    before, start = status("VmRSS:"), time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - start
    out = {"code": code, "seconds": seconds, "extra": status("VmHWM:") - before}
    print(json.dumps(out), flush=True)
    print("--end--", file=sys.stderr, flush=True)
"""


def costs(commands: list[list], cwd: Path, timeout: float = 600) -> list[dict]:
    """{"code", "seconds", "extra" (peak bytes above the start), "stderr"} of each `fashion-jax
    argv`, run one after the other in one fresh process (its peak reset before each)."""
    env = {k: v for k, v in os.environ.items() if k != "FASHION_JAX_DEBUG"}
    argvs = [[str(a) for a in argv] for argv in commands]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argvs)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    errs = done.stderr.split("--end--\n")
    if len(rows) != len(argvs):
        raise AssertionError(
            f"the probe stopped (exit {done.returncode}) after {len(rows)} commands: "
            f"{done.stderr[-3000:]}"
        )
    return [{**row, "stderr": err} for row, err in zip(rows, errs)]

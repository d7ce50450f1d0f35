"""Shared fixtures: small synthetic data for unit tests,
and the real Fashion-MNIST for `realdata` tests.

A test that uses `real_data` (directly or through another fixture) is marked `realdata` here, so
`pytest -m "not realdata"` runs everything that needs no data files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fashion_jax.data.dataset import (
    FILES,
    SYSTEM_DIR,
    FashionMNIST,
    find_file,
    load_dataset,
    resolve_source,
)
from fashion_jax.data.idx import DataError
from fashion_jax.files import make_writable_folder

# The suite's persistent compilation cache. Many tests, and the subprocesses they start (which
# inherit these variables), compile the same programs (one model at one batch shape); and a later
# run compiles what an earlier one did, so the folder is kept between runs, as pytest keeps its own
# cache. JAX's keys cover the program, the compiler options and XLA_FLAGS, the devices and the
# library versions, so an entry is served only where a compile would give the same program: results
# are bit for bit the same; only compile time is saved. FASHION_JAX_TEST_XLA_CACHE names another
# folder, or "fresh": a new one, removed at the end (what a clean clone runs).
REPO = Path(__file__).resolve().parents[1]
CACHE_SETTING = os.environ.get("FASHION_JAX_TEST_XLA_CACHE", str(REPO / ".xla-cache"))
CACHE_LIMIT_BYTES = 512 << 20  # a whole suite's programs take ~16 MB


def usable_cache(setting: str) -> tuple[str, bool]:
    """The folder to use and whether it is fresh (removed at the end)."""
    if setting != "fresh":
        try:
            return str(make_writable_folder(setting)), False
        except OSError:  # a read-only checkout: compile afresh rather than warn in every process
            pass
    return tempfile.mkdtemp(prefix="fashion-jax-test-xla-cache-"), True


def trim_cache(folder: Path, limit: int = CACHE_LIMIT_BYTES) -> None:
    """Delete the oldest entries while the folder holds more than `limit` bytes."""
    entries = []
    for path in folder.iterdir():
        with contextlib.suppress(OSError):  # gone meanwhile: another run's cache at work
            stat = path.stat()
            entries.append((stat.st_mtime, stat.st_size, path))
    entries.sort()
    total = sum(size for _, size, _ in entries)
    for _, size, path in entries:
        if total <= limit:
            break
        path.unlink(missing_ok=True)
        total -= size


if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the xdist workers inherit the controller's
    TEST_CACHE, FRESH_CACHE = usable_cache(CACHE_SETTING)
    if not FRESH_CACHE:
        trim_cache(Path(TEST_CACHE))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = TEST_CACHE
else:
    TEST_CACHE, FRESH_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"], False
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def pytest_unconfigure(config: pytest.Config) -> None:
    if FRESH_CACHE:  # only the process that made it
        shutil.rmtree(TEST_CACHE, ignore_errors=True)


def require_real_data(system_dir_only: bool = False) -> None:
    """Skip a real-data test on a machine without the files,
    but fail in CI, which must have them."""
    try:
        if system_dir_only and not all(
            find_file(SYSTEM_DIR, n) for pair in FILES.values() for n in pair
        ):
            raise DataError(SYSTEM_DIR, "the four IDX files are not there")
        resolve_source()
    except DataError as err:
        message = (
            f"real Fashion-MNIST not available ({err}); apt-get install -y dataset-fashion-mnist"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# Fixtures that read the real files: a test that uses one (directly or through another fixture)
# is marked `realdata`.
REAL_DATA_FIXTURES = {"real_data", "real_small", "real", "real_train", "tiny_dir"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.realdata)


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 (28, 28) images of 10 learnable classes: a fixed blocky pattern per class (7x7 random
    cells of 4x4 pixels), shifted by up to one pixel, dimmed, plus noise. Labels balanced,
    shuffled."""
    rng = np.random.default_rng(seed)
    cells = np.random.default_rng(1234).random((10, 7, 7))  # the same classes in every split
    patterns = np.kron(cells, np.ones((4, 4)))
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    shifts = rng.integers(-1, 2, (n, 2))
    images = np.stack([np.roll(patterns[y], tuple(s), axis=(0, 1)) for y, s in zip(labels, shifts)])
    images = images * rng.uniform(0.6, 1.0, (n, 1, 1)) + rng.normal(0, 0.15, images.shape)
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels


@pytest.fixture(scope="session")
def small_data() -> FashionMNIST:
    """512 train / 256 val / 256 test synthetic images (synthetic_images), no files needed."""
    parts = [synthetic_images(n, seed) for n, seed in ((512, 0), (256, 1), (256, 2))]
    return FashionMNIST(*parts[0], *parts[1], *parts[2], "synthetic")


@pytest.fixture(scope="session")
def real_data() -> FashionMNIST:
    """load_dataset() on the real files (48,000 train / 12,000 val / 10,000 test)."""
    require_real_data()
    return load_dataset()


@pytest.fixture(scope="session")
def real_small(real_data: FashionMNIST) -> FashionMNIST:
    """512 train / 256 val / 256 test real images: slices of the real splits."""
    d = real_data
    return FashionMNIST(
        d.train_x[:512],
        d.train_y[:512],
        d.val_x[:256],
        d.val_y[:256],
        d.test_x[:256],
        d.test_y[:256],
        d.source,
    )


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file (the Fashion-MNIST format) holding a uint8 array."""
    magic = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(magic + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def synthetic_idx_dir(tmp_path_factory):
    """A --data-dir of synthetic IDX files (1,000 train, 200 test; load with verify off)."""
    folder = tmp_path_factory.mktemp("synthetic-idx")
    for (images_name, labels_name), (n, seed) in zip(FILES.values(), ((1000, 10), (200, 11))):
        images, labels = synthetic_images(n, seed)
        write_idx(folder / images_name, images)
        write_idx(folder / labels_name, labels)
    return folder

"""Shared fixtures: the real Fashion-MNIST, loaded once per session, and a small real subset."""
from __future__ import annotations

import os

import pytest

from fashion_jax.data import FILES, SYSTEM_DIR, FashionMNIST, find_file, load_dataset, resolve_source
from fashion_jax.idx import DataError


def require_real_data(system_dir_only: bool = False) -> None:
    """Skip a real-data test on a machine without the files, but fail in CI, which must have them."""
    try:
        if system_dir_only and not all(find_file(SYSTEM_DIR, n) for pair in FILES.values() for n in pair):
            raise DataError(SYSTEM_DIR, "the four IDX files are not there")
        resolve_source()
    except DataError as err:
        message = f"real Fashion-MNIST not available ({err}); apt-get install -y dataset-fashion-mnist"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def real_data() -> FashionMNIST:
    """load_dataset() on the real files (48,000 train / 12,000 val / 10,000 test)."""
    require_real_data()
    return load_dataset()


@pytest.fixture(scope="session")
def small_data(real_data: FashionMNIST) -> FashionMNIST:
    """512 train / 256 val / 256 test real images: slices of the real splits."""
    d = real_data
    return FashionMNIST(d.train_x[:512], d.train_y[:512], d.val_x[:256], d.val_y[:256],
                        d.test_x[:256], d.test_y[:256], d.source)

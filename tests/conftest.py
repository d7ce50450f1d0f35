"""Shared fixtures: the real Fashion-MNIST, loaded once per session, and a small real subset."""
from __future__ import annotations

import pytest

from fashion_jax.data import FashionMNIST, load_dataset, resolve_source
from fashion_jax.idx import DataError


@pytest.fixture(scope="session")
def real_data() -> FashionMNIST:
    """load_dataset() on the real files (48,000 train / 12,000 val / 10,000 test)."""
    try:
        resolve_source()
    except DataError as err:
        pytest.skip(f"real Fashion-MNIST not available (looked in $FASHION_JAX_DATA, "
                    f"/usr/share/datasets/fashion-mnist and TFDS): {err}")
    return load_dataset()


@pytest.fixture(scope="session")
def small_data(real_data: FashionMNIST) -> FashionMNIST:
    """512 train / 256 val / 256 test real images: slices of the real splits."""
    d = real_data
    return FashionMNIST(d.train_x[:512], d.train_y[:512], d.val_x[:256], d.val_y[:256],
                        d.test_x[:256], d.test_y[:256], d.source)

"""data: source resolution, loading checks and the train/validation split,
on crafted folders and the real data."""

from __future__ import annotations

import gzip
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import require_real_data
from helpers import one_line
from test_splits import SKLEARN_TRAIN_HEAD, check_folds

from fashion_jax.data import dataset as data
from fashion_jax.data import download
from fashion_jax.data.dataset import (
    CLASS_NAMES,
    FILES,
    NUM_CLASSES,
    FashionMNIST,
    describe,
    load_dataset,
    load_split,
    resolve_source,
)
from fashion_jax.data.idx import OFFICIAL_SHA256, DataError, load_idx
from fashion_jax.data.splits import kfold_indices, split_indices

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    magic = bytes([0, 0, 0x08, array.ndim])
    return (
        magic
        + b"".join(d.to_bytes(4, "big") for d in array.shape)
        + array.astype(np.uint8).tobytes()
    )


def fake_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(
        n, dtype=np.uint8
    ) % NUM_CLASSES


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    data = idx_bytes(array)
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_folder(folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> Path:
    """A folder with the four Fashion-MNIST file names holding small synthetic data."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = fake_split(n, seed=n)
        write_idx(folder / FILES[split][0], images, gz)
        write_idx(folder / FILES[split][1], labels, gz)
    return folder


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """No env var, no system folder, no cache folder, no TFDS folder, no downloads."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "no-system")
    monkeypatch.setattr(download, "cache_dir", lambda: tmp_path / "no-cache")
    monkeypatch.setenv(download.OFFLINE_ENV, "1")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no-tfds"))


@pytest.fixture(scope="module")
def real() -> FashionMNIST:
    require_real_data(system_dir_only=True)
    return load_dataset(REAL_DIR)


@pytest.fixture(scope="module")
def real_train(real) -> tuple[np.ndarray, np.ndarray]:
    return load_split("train", REAL_DIR)


# ---------------------------------------------------------------- crafted folders


@pytest.mark.parametrize("gz", [True, False])
def test_crafted_folder_loads_with_verify_off(tmp_path, gz):
    folder = make_folder(tmp_path / "d", gz=gz)
    images, labels = load_split("train", folder, verify=False)
    want_x, want_y = fake_split(50, seed=50)
    np.testing.assert_array_equal(images, want_x)
    np.testing.assert_array_equal(labels, want_y)
    assert images.dtype == labels.dtype == np.uint8


def test_crafted_folder_fails_checksum_with_verify_on(tmp_path):
    folder = make_folder(tmp_path / "d")
    with pytest.raises(DataError, match="checksum mismatch") as err:
        load_split("test", folder)
    msg = one_line(err, "t10k-images-idx3-ubyte.gz")
    assert "verify=False" in msg and "--no-verify" in msg


def test_missing_folder_is_an_error_not_a_fallthrough(tmp_path):
    with pytest.raises(DataError, match="not a folder") as err:
        load_split("test", tmp_path / "nowhere")
    one_line(err, "nowhere")
    with pytest.raises(DataError):
        resolve_source(tmp_path / "nowhere")


def test_missing_file(tmp_path):
    folder = make_folder(tmp_path / "d")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing file") as err:
        load_split("train", folder, verify=False)
    one_line(err, "train-labels-idx1-ubyte")
    load_split("test", folder, verify=False)  # the other split is still readable


def test_truncated_gzip_in_folder(tmp_path):
    folder = make_folder(tmp_path / "d")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError) as err:
        load_split("train", folder, verify=False)
    one_line(err, "train-images-idx3-ubyte.gz")


def test_labels_file_in_place_of_images_is_wrong_magic(tmp_path):
    folder = make_folder(tmp_path / "d")
    images = folder / "t10k-images-idx3-ubyte.gz"
    images.write_bytes((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match="wrong magic") as err:
        load_split("test", folder, verify=False)
    one_line(err, images.name)


def test_count_mismatch_names_both_files(tmp_path):
    folder = make_folder(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte", fake_split(49, 0)[1])
    with pytest.raises(DataError, match="50 images") as err:
        load_split("train", folder, verify=False)
    one_line(err, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


def test_label_out_of_range(tmp_path):
    folder = make_folder(tmp_path / "d")
    labels = fake_split(50, 0)[1]
    labels[5], labels[7] = 12, 200
    write_idx(folder / "train-labels-idx1-ubyte", labels)
    with pytest.raises(DataError) as err:
        load_split("train", folder, verify=False)
    msg = one_line(err, "train-labels-idx1-ubyte.gz")
    assert msg.endswith("label 12 out of range 0..9 at index 5")


def test_images_must_be_28x28(tmp_path):
    folder = make_folder(tmp_path / "d")
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((50, 27, 28), np.uint8))
    with pytest.raises(DataError, match=r"shape \(50, 27, 28\)") as err:
        load_split("train", folder, verify=False)
    one_line(err, "train-images-idx3-ubyte.gz")


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_split("validation", make_folder(tmp_path / "d"), verify=False)


def test_subset_and_split_on_crafted_data(tmp_path):
    folder = make_folder(tmp_path / "d", n_train=100)
    full = load_dataset(folder, verify=False)
    small = load_dataset(folder, verify=False, subset=7)
    assert full.sizes() == {"train": 80, "val": 20, "test": 20}
    np.testing.assert_array_equal(small.train_x, full.train_x[:7])
    np.testing.assert_array_equal(small.val_y, full.val_y)
    assert small.source == f"data_dir:{folder}"
    with pytest.raises(ValueError):
        load_dataset(folder, verify=False, subset=0)


# ---------------------------------------------------------------- resolution


def test_env_var_is_used(monkeypatch, tmp_path, real):
    linked = tmp_path / "linked"
    linked.mkdir()
    for pair in FILES.values():
        for name in pair:
            (linked / f"{name}.gz").symlink_to(REAL_DIR / f"{name}.gz")
    monkeypatch.setenv(data.ENV_VAR, str(linked))
    assert resolve_source() == ("env", linked)
    images, labels = load_split("test")
    np.testing.assert_array_equal(labels, real.test_y)


def test_env_var_pointing_nowhere_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(DataError, match="FASHION_JAX_DATA") as err:
        resolve_source()
    one_line(err, "gone")


def test_explicit_dir_wins_over_env(monkeypatch, tmp_path):
    folder = make_folder(tmp_path / "d")
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "gone"))
    assert resolve_source(folder) == ("data_dir", folder)


def test_system_folder_is_the_default(monkeypatch, real):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert resolve_source() == ("system", REAL_DIR)


def test_nothing_found_says_how_to_get_data(no_data):
    with pytest.raises(DataError) as err:
        resolve_source()
    msg = one_line(
        err, "apt-get install -y dataset-fashion-mnist", "fashion_mnist", "FASHION_JAX_DATA"
    )
    assert "--data-dir" in msg


def fake_tfds(monkeypatch, tmp_path, source) -> None:
    (tmp_path / "no-tfds" / "fashion_mnist").mkdir(parents=True)
    module = types.SimpleNamespace(data_source=source)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)


def test_tfds_used_when_it_really_loads(monkeypatch, tmp_path, no_data):
    def examples(n):
        x, y = fake_split(n, n)
        return [{"image": x[i][..., None], "label": np.int64(y[i])} for i in range(n)]

    fake_tfds(monkeypatch, tmp_path, lambda *a, **k: {"train": examples(30), "test": examples(10)})
    assert resolve_source()[0] == "tfds"
    ds = load_dataset()
    assert ds.sizes() == {"train": 24, "val": 6, "test": 10}
    np.testing.assert_array_equal(ds.test_x, fake_split(10, 10)[0])


def test_tfds_that_fails_without_tensorflow_is_skipped(monkeypatch, tmp_path, no_data):
    def broken(*a, **k):
        raise ModuleNotFoundError("No module named 'tensorflow'")

    fake_tfds(monkeypatch, tmp_path, broken)
    with pytest.raises(DataError, match="apt-get"):
        resolve_source()


# ---------------------------------------------------------------- the real data


def test_real_shapes_and_sizes(real):
    assert real.sizes() == {"train": 48000, "val": 12000, "test": 10000}
    for x, y in (
        (real.train_x, real.train_y),
        (real.val_x, real.val_y),
        (real.test_x, real.test_y),
    ):
        assert x.dtype == y.dtype == np.uint8
        assert x.shape == (len(y), 28, 28) and y.shape == (len(y),)
    assert real.source == f"data_dir:{REAL_DIR}"


def test_real_class_balance(real, real_train):
    counts = describe(real)["class_counts"]
    assert list(counts["test"]) == list(CLASS_NAMES)
    assert set(counts["test"].values()) == {1000}
    assert np.bincount(real_train[1]).tolist() == [6000] * 10
    assert {k: counts["train"][k] + counts["val"][k] for k in CLASS_NAMES} == dict.fromkeys(
        CLASS_NAMES, 6000
    )


def test_real_checksums():
    for pair in FILES.values():
        for name in pair:
            got = load_idx(REAL_DIR / f"{name}.gz")
            assert (got.nbytes, got.sha256) == OFFICIAL_SHA256[name]


def test_real_split_is_sklearns_and_reproducible(real, real_train):
    x, y = real_train
    train, val = split_indices(60000)
    np.testing.assert_array_equal(real.train_x, x[train])
    np.testing.assert_array_equal(real.val_y, y[val])
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(60000))
    assert real.train_y[:8].tolist() == y[SKLEARN_TRAIN_HEAD].tolist()
    again = load_dataset(REAL_DIR)
    np.testing.assert_array_equal(again.train_x, real.train_x)
    np.testing.assert_array_equal(again.val_x, real.val_x)


def test_real_split_equals_sklearn_live(real, real_train):
    sk = pytest.importorskip("sklearn.model_selection")
    x, y = real_train
    x_tr, x_va, y_tr, y_va = sk.train_test_split(x, y, test_size=0.2, random_state=42)
    np.testing.assert_array_equal(real.train_x, x_tr)
    np.testing.assert_array_equal(real.train_y, y_tr)
    np.testing.assert_array_equal(real.val_x, x_va)
    np.testing.assert_array_equal(real.val_y, y_va)


def test_real_stratified_split(real_train):
    y = real_train[1]
    train, val = split_indices(len(y), 0.2, 42, labels=y)
    assert np.bincount(y[train]).tolist() == [4800] * 10
    assert np.bincount(y[val]).tolist() == [1200] * 10


def test_real_stratified_kfold(real_train):
    y = real_train[1]
    folds = kfold_indices(len(y), 5, seed=0, labels=y)
    check_folds(folds, len(y), 5)
    for _, val in folds:
        assert np.bincount(y[val]).tolist() == [1200] * 10


def test_describe(real):
    d = describe(real)
    assert (d["train"], d["val"], d["test"]) == (48000, 12000, 10000)
    assert d["source"] == real.source
    assert sum(d["class_counts"]["val"].values()) == 12000

"""Fashion-MNIST: find the files (--data-dir, $FASHION_JAX_DATA, the system folder, the user cache
folder, TFDS; else download them into the cache folder, download.py), load them,
verify them against the official SHA-256 values (idx.OFFICIAL_SHA256), check
shapes and labels, and split train/validation as the chapter does. NumPy only, on the host."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_jax.config import NUM_CLASSES, ConfigError
from fashion_jax.data import official
from fashion_jax.data.idx import DataError
from fashion_jax.data.splits import split_indices

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
IMAGE_SHAPE = (28, 28)
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ENV_VAR = "FASHION_JAX_DATA"
# $FASHION_JAX_SYSTEM_DATA moves the system folder: a path with no files in it hides the apt copy
# (tests of the download path; a machine that keeps the package elsewhere).
SYSTEM_DIR = Path(os.environ.get("FASHION_JAX_SYSTEM_DATA") or "/usr/share/datasets/fashion-mnist")
TFDS_NAME = "fashion_mnist"
HOW_TO_GET = (
    "no Fashion-MNIST data found; download it with `fashion-jax data --download` (needs the "
    "network: not with --offline or FASHION_JAX_OFFLINE=1), get it with "
    "`apt-get update && apt-get install -y dataset-fashion-mnist` "
    f"(files in {SYSTEM_DIR}), or prepare the TFDS dataset `{TFDS_NAME}` online, "
    f"or point --data-dir / ${ENV_VAR} at a folder holding the four IDX files (gzipped or not)"
)


def tfds_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def resolve_source(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    progress: bool | None = None,
) -> tuple[str, Path | None]:
    """Return (kind, folder): kind is 'data_dir', 'env', 'system', 'cache' or 'tfds' (folder =
    TFDS data dir). With download=True, a machine with none of them fetches the official files
    into the cache folder (download.fetch; progress=None: a bar only on a terminal).

    An explicit data_dir or $FASHION_JAX_DATA that is not a folder is an error, not a reason to
    silently read some other copy of the data.
    """
    from fashion_jax.data import download as downloads  # pooch only when the system folder is empty

    if data_dir is not None:
        return "data_dir", _require_dir(data_dir, "data_dir / --data-dir")
    if os.environ.get(ENV_VAR):
        return "env", _require_dir(os.environ[ENV_VAR], f"${ENV_VAR}")
    if all(find_file(SYSTEM_DIR, name) for pair in FILES.values() for name in pair):
        return "system", SYSTEM_DIR
    cache = downloads.cache_dir()
    if downloads.complete(cache):
        return "cache", cache
    if _tfds_usable(tfds_dir()):
        return "tfds", tfds_dir()
    if download and not downloads.offline():
        downloads.fetch(cache, progress=progress)
        return "cache", cache
    raise DataError("fashion-mnist", f"{HOW_TO_GET}; downloads go to {cache}")


def _require_dir(folder: str | os.PathLike, origin: str) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError(
            path, f"not a folder (given as {origin}); it must hold the four Fashion-MNIST IDX files"
        )
    return path


def find_file(folder: Path, name: str) -> Path | None:
    """The file `name` or `name.gz` in folder, if either exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _tfds_usable(root: Path) -> bool:
    # Importing TFDS is slow and data_source can fail without TensorFlow
    # (tensorflow/datasets#11058),
    # so look for the prepared folder first and treat any failure as "not available".
    if not (root / TFDS_NAME).is_dir():
        return False
    try:
        _tfds_source(root)["test"][0]
        return True
    except Exception:
        return False


def _tfds_source(root: Path):
    import tensorflow_datasets as tfds

    return tfds.data_source(TFDS_NAME, data_dir=str(root), download=False)


def load_split(
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    download: bool = True,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels uint8 (N,) of 'train' or 'test'; download and progress
    as resolve_source's."""
    kind, folder = resolve_source(data_dir, download=download, progress=progress)
    return _load_from(kind, folder, split, verify)


def _load_from(
    kind: str, folder: Path | None, split: str, verify: bool
) -> tuple[np.ndarray, np.ndarray]:
    if split not in FILES:
        raise ConfigError(f"split must be one of {sorted(FILES)}, got {split!r}")
    if kind == "tfds":
        return _load_tfds(folder, split)
    paths = [_require_file(folder, name) for name in FILES[split]]
    (images, images_copy), (labels, labels_copy) = (
        official.load_file(path, magic, name, verify)
        for path, magic, name in zip(paths, (IMAGES_MAGIC, LABELS_MAGIC), FILES[split])
    )
    check_pair(images.array, labels.array, *paths)
    if verify:
        for path, name, idx, copy in zip(
            paths, FILES[split], (images, labels), (images_copy, labels_copy)
        ):
            official.check(path, name, idx)
            official.keep_copy(copy, idx)
    return images.array, labels.array


def _require_file(folder: Path, name: str) -> Path:
    found = find_file(folder, name)
    if found is None:
        raise DataError(
            folder / name, f"missing file (neither {name} nor {name}.gz is in {folder})"
        )
    return found


def check_pair(
    images: np.ndarray, labels: np.ndarray, images_name: object, labels_name: object
) -> None:
    """Raise DataError unless images are (N, 28, 28) uint8 and labels are N values in 0..9."""
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(images_name, f"images have shape {images.shape}, expected (N, 28, 28)")
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(
            images_name, f"expected uint8 images and labels, got {images.dtype} and {labels.dtype}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            images_name, f"has {len(images)} images but {labels_name} has {labels.size} labels"
        )
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            labels_name, f"label {labels[i]} out of range 0..{NUM_CLASSES - 1} at index {i}"
        )


def _load_tfds(root: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    where = f"tfds:{TFDS_NAME}/{split}"
    try:
        source = _tfds_source(root)[split]
        examples = [source[i] for i in range(len(source))]
        images = np.stack(
            [np.asarray(ex["image"], dtype=np.uint8).reshape(IMAGE_SHAPE) for ex in examples]
        )
        labels = np.asarray([ex["label"] for ex in examples]).astype(np.uint8)
    except Exception as e:  # TFDS failures come in many types; the caller needs one
        raise DataError(where, f"cannot read TFDS dataset ({type(e).__name__}: {e})") from None
    check_pair(images, labels, where, where)
    return images, labels


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; identity is what makes sense
class FashionMNIST:
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def check_dataset(ds: FashionMNIST) -> None:
    """Shapes, dtypes and label range of arrays handed to fit, which may not come from load_dataset.

    Checked on the host because a label >= 10 makes the loss silently NaN inside jit.
    """
    parts = [("train", ds.train_x, ds.train_y), ("val", ds.val_x, ds.val_y)]
    if ds.test_x is not None:
        parts.append(("test", ds.test_x, ds.test_y))
    for name, x, y in parts:
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{name} images", f"expected shape (N, 28, 28), got {x.shape}")
        if x.dtype != np.uint8:
            raise DataError(f"{name} images", f"expected uint8 pixels 0..255, got {x.dtype}")
        if y.shape != (x.shape[0],):
            raise DataError(f"{name} labels", f"expected {x.shape[0]} labels, got shape {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
            bad = int(np.flatnonzero((y < 0) | (y >= NUM_CLASSES))[0])
            raise DataError(
                f"{name} labels", f"label {int(y[bad])} out of range 0..9 at index {bad}"
            )
    for name, x, _ in parts[:2]:
        if len(x) == 0:
            raise DataError(f"{name} split", "is empty")


def load_dataset(
    data_dir: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    val_fraction: float = 0.2,
    seed: int = 42,
    stratify: bool = False,
    subset: int | None = None,
    download: bool = True,
    progress: bool | None = None,
) -> FashionMNIST:
    """Train/val split of the 60,000 training images (48,000/12,000 by default), test set apart.

    subset=N keeps the first N rows of the training part, after the split, so val is unchanged.
    With no local copy, download=True fetches the official files (resolve_source).
    """
    if subset is not None and subset < 1:
        raise ConfigError(f"subset must be a positive number of rows, got {subset}")
    kind, folder = resolve_source(data_dir, download=download, progress=progress)
    x, y = _load_from(kind, folder, "train", verify)
    test_x, test_y = _load_from(kind, folder, "test", verify)
    train_idx, val_idx = split_indices(len(y), val_fraction, seed, labels=y if stratify else None)
    train_idx = train_idx[:subset]
    return FashionMNIST(
        x[train_idx], y[train_idx], x[val_idx], y[val_idx], test_x, test_y, f"{kind}:{folder}"
    )


def describe(ds: FashionMNIST) -> dict:
    parts = {"train": ds.train_y, "val": ds.val_y, "test": ds.test_y}
    return {
        **{name: int(len(y)) for name, y in parts.items()},
        "class_counts": {name: class_counts(y) for name, y in parts.items()},
        "source": ds.source,
    }


def class_counts(labels: np.ndarray) -> dict[str, int]:
    counts = dict.fromkeys(CLASS_NAMES, 0)  # absent classes show as 0, not missing
    values, n = np.unique(labels, return_counts=True)
    counts.update({CLASS_NAMES[int(v)]: int(c) for v, c in zip(values, n, strict=True)})
    return counts

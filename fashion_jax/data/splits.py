"""Which rows go where: the train/validation split and k-fold assignments, equal to sklearn's.

They use np.random.RandomState(seed) locally because they must equal sklearn's bit for bit; every
other random choice in the project comes from jax.random.fold_in keys.
"""

from __future__ import annotations

from math import ceil

import numpy as np

from fashion_jax.config import ConfigError


def split_indices(
    n: int, val_fraction: float = 0.2, seed: int = 42, *, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx), identical to sklearn's train_test_split(test_size=val_fraction,
    random_state=seed) when labels is None; stratified by labels otherwise."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = ceil(val_fraction * n)  # sklearn's _validate_shuffle_split rounds the test side up
    if labels is not None:
        return _stratified_split(np.asarray(labels), n_val, seed)
    perm = np.random.RandomState(seed).permutation(n)  # sklearn's ShuffleSplit, bit for bit
    return perm[n_val:], perm[:n_val]


def _stratified_split(labels: np.ndarray, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    _, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse)
    quota = _largest_remainder(counts, n_val)
    train, val = [], []
    for c, k in enumerate(quota):
        members = rng.permutation(np.flatnonzero(inverse == c))
        val.append(members[:k])
        train.append(members[k:])
    # Shuffle again so neither part is grouped by class.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _largest_remainder(counts: np.ndarray, total: int) -> np.ndarray:
    """Split `total` across classes in proportion to counts, in integers that sum to total."""
    n = int(counts.sum())
    quota, rest = np.divmod(counts.astype(np.int64) * total, n)
    short = total - int(quota.sum())
    quota[np.argsort(-rest, kind="stable")[:short]] += 1
    return quota


def kfold_indices(
    n: int, k: int, *, seed: int = 0, shuffle: bool = True, labels: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, val_idx) per fold, both sorted. Without labels this equals sklearn's
    KFold(k, shuffle=shuffle, random_state=seed); with labels every class is spread evenly."""
    if not 2 <= k <= n:
        raise ConfigError(f"need 2 <= k <= n, got k={k}, n={n}")
    if labels is not None and len(labels) != n:
        raise ConfigError(f"labels has {len(labels)} entries, expected {n}")
    fold_of = _fold_assignment(n, k, seed, shuffle, labels)
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def _fold_assignment(
    n: int, k: int, seed: int, shuffle: bool, labels: np.ndarray | None
) -> np.ndarray:
    order = np.arange(n)
    rng = np.random.RandomState(seed)
    if labels is None:
        if shuffle:
            rng.shuffle(order)
        sizes = np.full(k, n // k)
        sizes[: n % k] += 1
        fold_of_position = np.repeat(np.arange(k), sizes)  # KFold's contiguous chunks
    else:
        # Group by class, shuffled within each class, then deal positions round-robin: fold sizes
        # and per-class counts per fold both differ by at most one.
        by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        order = np.concatenate([rng.permutation(m) if shuffle else m for m in by_class])
        fold_of_position = np.arange(n) % k
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[order] = fold_of_position
    return fold_of

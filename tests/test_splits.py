"""splits: the train/validation split and k-fold assignments, equal to sklearn's."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_jax.data.splits import kfold_indices, split_indices

# From sklearn 1.9.1: train_test_split(np.arange(60000), test_size=0.2, random_state=42).
SKLEARN_TRAIN_HEAD = [48572, 38696, 13611, 35213, 31766, 57477, 9165, 21399]
SKLEARN_VAL_HEAD = [12628, 37730, 39991, 8525, 8279, 51012, 14871, 15127]


def test_split_matches_sklearn_recorded_values():
    train, val = split_indices(60000, 0.2, 42)
    assert train[:8].tolist() == SKLEARN_TRAIN_HEAD
    assert val[:8].tolist() == SKLEARN_VAL_HEAD


@pytest.mark.parametrize("n", [1, 5, 101, 60000])
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.33])
def test_split_matches_sklearn_live(n, fraction):
    sk = pytest.importorskip("sklearn.model_selection")
    if n == 1:  # sklearn refuses a split that leaves the training side empty; ours returns it empty
        with pytest.raises(ValueError):
            sk.train_test_split(np.arange(n), test_size=fraction, random_state=7)
        train, val = split_indices(n, fraction, 7)
        assert train.tolist() == [] and val.tolist() == [0]
        return
    want_train, want_val = sk.train_test_split(np.arange(n), test_size=fraction, random_state=7)
    train, val = split_indices(n, fraction, 7)
    np.testing.assert_array_equal(train, want_train)
    np.testing.assert_array_equal(val, want_val)


def test_split_rejects_bad_fraction():
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            split_indices(10, bad)


def test_stratified_split_is_deterministic_and_proportional():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    train, val = split_indices(100, 0.25, 3, labels=labels)
    again = split_indices(100, 0.25, 3, labels=labels)
    np.testing.assert_array_equal(train, again[0])
    assert len(val) == 25 and np.bincount(labels[val]).tolist() == [13, 7, 5]  # 12.5 rounded up
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert not np.array_equal(val, split_indices(100, 0.25, 4, labels=labels)[1])


def check_folds(folds, n: int, k: int) -> None:
    assert len(folds) == k
    vals = [v for _, v in folds]
    np.testing.assert_array_equal(np.sort(np.concatenate(vals)), np.arange(n))
    assert max(map(len, vals)) - min(map(len, vals)) <= 1
    for train, val in folds:
        assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == n


@pytest.mark.parametrize(("n", "k"), [(10, 3), (11, 5), (100, 10), (7, 7)])
def test_kfold_disjoint_covering(n, k):
    check_folds(kfold_indices(n, k, seed=1), n, k)
    check_folds(kfold_indices(n, k, shuffle=False), n, k)


def test_kfold_matches_sklearn_recorded_values():
    folds = kfold_indices(10, 3, seed=0)
    assert [v.tolist() for _, v in folds] == [[2, 4, 8, 9], [1, 6, 7], [0, 3, 5]]
    assert folds[0][0].tolist() == [0, 1, 3, 5, 6, 7]


@pytest.mark.parametrize("shuffle", [True, False])
def test_kfold_matches_sklearn_live(shuffle):
    sk = pytest.importorskip("sklearn.model_selection")
    kf = sk.KFold(4, shuffle=shuffle, random_state=3 if shuffle else None)
    ours = kfold_indices(103, 4, seed=3, shuffle=shuffle)
    for (tr, va), (want_tr, want_va) in zip(ours, kf.split(np.zeros(103)), strict=True):
        np.testing.assert_array_equal(tr, want_tr)
        np.testing.assert_array_equal(va, want_va)


def test_stratified_kfold_spreads_classes():
    labels = np.repeat(np.arange(4), [40, 25, 13, 7])
    folds = kfold_indices(85, 5, seed=2, labels=labels)
    check_folds(folds, 85, 5)
    per_fold = np.array([np.bincount(labels[v], minlength=4) for _, v in folds])
    assert (per_fold.max(0) - per_fold.min(0) <= 1).all()


def test_kfold_rejects_bad_arguments():
    with pytest.raises(ValueError):
        kfold_indices(10, 1)
    with pytest.raises(ValueError):
        kfold_indices(3, 4)
    with pytest.raises(ValueError):
        kfold_indices(10, 2, labels=np.zeros(9))

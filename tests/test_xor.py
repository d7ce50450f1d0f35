"""The chapter's XOR claims: perceptron fails, MLP and hand-set weights succeed."""

import json

import numpy as np
import pytest

from fashion_jax.chapter.xor import (
    XOR_X,
    XOR_Y,
    hand_accuracy,
    hand_predict,
    hand_weights,
    mlp_predict,
    perceptron_best_accuracy,
    train_mlp,
    xor_report,
)


def test_data():
    assert XOR_X.shape == (4, 2) and XOR_X.dtype == np.float32
    assert XOR_Y.tolist() == [0, 1, 1, 0]
    assert ((XOR_X[:, 0] != XOR_X[:, 1]) == XOR_Y).all()


def test_single_layer_perceptron_cannot_solve_xor():
    acc = perceptron_best_accuracy()
    assert acc <= 0.75
    assert acc == pytest.approx(0.75)  # 3 of 4 is reachable, 4 of 4 never


@pytest.mark.parametrize("seed", [0, 1, 2, 42])
def test_mlp_solves_xor(seed):
    params, acc = train_mlp(seed=seed)
    assert acc == 1.0
    assert np.asarray(mlp_predict(params)).tolist() == XOR_Y.tolist()


def test_mlp_is_deterministic_per_seed():
    (p1, _), (p2, _) = train_mlp(seed=3), train_mlp(seed=3)
    for key in p1:
        np.testing.assert_array_equal(p1[key], p2[key])


def test_hand_weights_solve_xor():
    w = hand_weights()
    assert w["w1"].shape == (2, 2) and w["b1"].shape == (2,)
    assert hand_accuracy() == 1.0
    assert np.asarray(hand_predict()).tolist() == [0, 1, 1, 0]


def test_report():
    report = xor_report()
    assert set(report) == {
        "perceptron_accuracy",
        "mlp_accuracy",
        "mlp_hidden",
        "hand_accuracy",
        "mlp_predictions",
        "hand_predictions",
    }
    assert report["perceptron_accuracy"] <= 0.75
    assert report["mlp_accuracy"] == report["hand_accuracy"] == 1.0
    assert report["mlp_predictions"] == report["hand_predictions"] == [0, 1, 1, 0]
    json.dumps(report)  # must be serialisable as-is

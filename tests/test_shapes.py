"""Conv/pool size formulas against the chapter's examples and against real lax shapes."""

import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from fashion_jax.chapter.shapes import (
    LayerSpec,
    check_grid,
    cnn_layers,
    conv_output_size,
    format_walk,
    measured_conv_sizes,
    measured_pool_size,
    pool_output_size,
    same_padding,
    shape_walk,
)
from fashion_jax.config import model_config

PROPS = settings(max_examples=60, deadline=None)
paddings = st.one_of(st.sampled_from(["same", "valid"]), st.integers(0, 3))


# --- the chapter's worked examples -------------------------------------------


def test_chapter_valid_4x4_with_3x3_is_2x2():
    assert conv_output_size(4, 3) == 2
    assert measured_conv_sizes([4], 3, 1, "valid").tolist() == [2]


def test_chapter_same_padding_keeps_4x4_by_padding_to_6x6():
    assert conv_output_size(4, 3, padding="same") == 4
    lo, hi = same_padding(4, 3, 1)
    assert (lo, hi) == (1, 1) and 4 + lo + hi == 6
    assert conv_output_size(4, 3, padding=(lo, hi)) == 4


def test_chapter_stride_2_shrinks_feature_map():
    assert conv_output_size(4, 3, stride=2, padding="same") == 2
    assert measured_conv_sizes([4], 3, 2, "same").tolist() == [2]


def test_chapter_2x2_pooling():
    assert pool_output_size(28, 2) == 14
    assert pool_output_size(7, 2) == 3  # floor: the odd last row is dropped
    assert measured_pool_size(28, 2) == 14
    assert measured_pool_size(7, 2) == 3


def test_cnn_walk_matches_chapter():
    rows = shape_walk((28, 28, 1), cnn_layers())
    shapes = [shape for _, shape in rows]
    assert shapes == [
        (28, 28, 1),
        (28, 28, 32),
        (14, 14, 32),
        (14, 14, 64),
        (7, 7, 64),
        (3136,),
        (100,),
        (10,),
    ]
    assert rows[0][0] == "input"
    table = format_walk(rows)
    assert "(3136,)" in table and len(table.splitlines()) == len(rows) + 2


def test_walk_valid_padding_and_dense_on_last_axis():
    rows = shape_walk((28, 28, 1), cnn_layers(model_config("cnn", padding="valid")))
    assert [s for _, s in rows][1:5] == [(26, 26, 32), (13, 13, 32), (11, 11, 64), (5, 5, 64)]
    assert shape_walk((4, 4, 3), [LayerSpec("dense", features=7)])[-1][1] == (4, 4, 7)


# --- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        (0, 3),
        (4, 0),
        (4, 3, 0),
        (-1, 3),
        (4, 3, 1, "full"),
        (4, 3, 1, -1),
        (2, 3),
        (3, 3, 1, "valid", 2),
    ],
)
def test_bad_arguments_raise(args):
    with pytest.raises(ValueError):
        conv_output_size(*args)


def test_walk_rejects_unknown_kind_and_conv_after_flatten():
    with pytest.raises(ValueError):
        shape_walk((4, 4, 1), [LayerSpec("softmax")])
    with pytest.raises(ValueError):
        shape_walk((4, 4, 1), [LayerSpec("flatten"), LayerSpec("conv", features=2, kernel=1)])


# --- formula vs XLA ---------------------------------------------------------


@PROPS
@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 4), p=paddings)
def test_conv_formula_matches_lax(n, k, s, p):
    (measured,) = measured_conv_sizes([n], k, s, p)
    if (isinstance(p, int) and n + 2 * p < k) or (p == "valid" and n < k):
        with pytest.raises(ValueError):
            conv_output_size(n, k, s, p)
        assert measured == 0  # lax quietly returns an empty axis
    else:
        assert conv_output_size(n, k, s, p) == measured


@PROPS
@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 4), p=paddings)
def test_pool_formula_matches_flax_and_reduce_window(n, k, s, p):
    measured = measured_pool_size(n, k, s, p)
    try:
        expected = pool_output_size(n, k, s, p)
    except ValueError:
        expected = 0
    assert expected == measured


@PROPS
@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 4), d=st.integers(1, 3))
def test_same_padding_matches_lax_padtype_to_pads(n, k, s, d):
    k_eff = (k - 1) * d + 1
    (lax_pads,) = lax.padtype_to_pads((n,), (k_eff,), (s,), "SAME")
    assert same_padding(n, k, s, d) == tuple(lax_pads)
    # Padding explicitly by those amounts reproduces SAME's size.
    assert conv_output_size(n, k, s, same_padding(n, k, s, d), d) == conv_output_size(
        n, k, s, "same", d
    )


@PROPS
@given(
    n=st.integers(1, 30),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    d=st.integers(1, 3),
    p=st.sampled_from(["same", "valid", 1, (0, 2)]),
)
def test_dilated_conv_matches_lax(n, k, s, d, p):
    (measured,) = measured_conv_sizes([n], k, s, p, dilation=d)
    try:
        expected = conv_output_size(n, k, s, p, dilation=d)
    except ValueError:
        expected = 0
    assert expected == measured


def test_pool_stride_defaults_to_window():
    assert pool_output_size(9, 3) == 3
    assert pool_output_size(9, 3, stride=1) == 7


def test_check_grid_finds_no_mismatch():
    assert check_grid(range(1, 10), [1, 2, 3, 5], [1, 2, 3], ["same", "valid", 0, 2, (0, 1)]) == []


def test_measured_sizes_are_int_array():
    out = measured_conv_sizes([5, 6, 7], 3, 1, "valid")
    assert out.dtype.kind == "i" and out.tolist() == [3, 4, 5]
    assert jnp.asarray(out).shape == (3,)

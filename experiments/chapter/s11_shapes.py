"""Section 11: padding, stride and pooling arithmetic, and the CNN's shape walk.

The chapter's pictures: a 4x4 input and a 3x3 kernel give a 2x2 feature map ('valid'); padding the
input to 6x6 keeps it 4x4 ('same'); stride 2 shrinks the map; 2x2 max pooling halves 28 -> 14 -> 7.
fashion_jax.chapter.shapes writes the arithmetic down once; check_grid compares it with the shapes
XLA really produces (lax.conv_general_dilated, flax max_pool and lax.reduce_window) over a grid of
sizes.
"""

from __future__ import annotations

from pathlib import Path

from experiments.chapter import common as C

SECTION = "s11"
TITLE = "Section 11: padding, stride, pooling and the CNN shape walk"
GRID = {
    "ns": range(1, 31),
    "kernels": range(1, 6),
    "strides": range(1, 4),
    "paddings": ("same", "valid", 0, 1, 2),
}
QUICK_GRID = {
    "ns": range(1, 13),
    "kernels": range(1, 4),
    "strides": range(1, 3),
    "paddings": ("same", "valid", 1),
}


def run(out_dir: Path, quick: bool) -> dict:
    import math

    import jax
    import jax.numpy as jnp

    from fashion_jax.chapter.shapes import (
        check_grid,
        cnn_layers,
        conv_output_size,
        format_walk,
        pool_output_size,
        same_padding,
        shape_walk,
    )
    from fashion_jax.config import model_config
    from fashion_jax.model.models import build_model

    rows = []
    with C.timer() as t:
        valid = conv_output_size(4, 3, 1, "valid")
        same = conv_output_size(4, 3, 1, "same")
        pads = same_padding(4, 3, 1)
        stride2 = conv_output_size(4, 3, 2, "same")
        stride2_explicit = conv_output_size(4, 3, 2, 1)
        pooled = [28, pool_output_size(28, 2), pool_output_size(pool_output_size(28, 2), 2)]
    examples = [
        ("4×4 input, 3×3 kernel, valid: feature map", f"{valid}×{valid}", "2×2", valid == 2),
        ("4×4 input, 3×3 kernel, same: feature map", f"{same}×{same}", "4×4", same == 4),
        (
            "… same padding per side (lo, hi) and padded input",
            f"{pads}, {4 + sum(pads)}×{4 + sum(pads)}",
            "(1, 1), 6×6",
            pads == (1, 1),
        ),
        (
            "4×4 input, 3×3 kernel, stride 2, same (and padding 1)",
            f"{stride2}×{stride2} ({stride2_explicit}×{stride2_explicit})",
            "2×2: smaller map",
            stride2 == stride2_explicit == 2,
        ),
        (
            "2×2 max pooling, stride 2, twice",
            " → ".join(map(str, pooled)),
            "28 → 14 → 7",
            pooled == [28, 14, 7],
        ),
    ]
    for what, ours, ref, ok in examples:
        rows.append(C.row(SECTION, what, ours, ref, t() / len(examples), ok=ok))

    cfg = model_config("cnn")
    with C.timer() as t:
        walk = shape_walk(
            (28, 28, 1),
            cnn_layers(cfg),
        )
        flat = next(shape for name, shape in walk if name == "flatten")
        # The real model agrees: the first Dense layer's kernel has one row per flattened element.
        # (eval_shape: the parameter shapes without compiling or running the initialisers)
        model = build_model(cfg)
        params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28))))[
            "params"
        ]
        dense_in = params["hidden"]["kernel"].shape[0]
    rows.append(
        C.row(
            SECTION,
            "CNN walk: flattened size = the model's Dense(100) input rows",
            f"{math.prod(flat):,} = {dense_in:,}",
            "7×7×64 = 3,136",
            t(),
            ok=math.prod(flat) == dense_in == 3136,
        )
    )

    grid = QUICK_GRID if quick else GRID
    points = math.prod(len(list(v)) for v in grid.values())
    with C.timer() as t:
        mismatches = check_grid(**grid)
    rows.append(
        C.row(
            SECTION,
            "check_grid: formulas vs XLA (conv and max pool)",
            f"{points:,} grid points, {len(mismatches)} mismatches",
            "0 mismatches",
            t(),
            ok=not mismatches,
        )
    )
    describe = lambda v: f"{min(v)}..{max(v)}" if isinstance(v, range) else "/".join(map(str, v))
    notes = [
        "The chapter CNN's shape walk (fashion_jax.chapter.shapes.format_walk):\n"
        + format_walk(walk),
        "Grid: n "
        + describe(grid["ns"])
        + ", kernel "
        + describe(grid["kernels"])
        + ", stride "
        + describe(grid["strides"])
        + ", padding "
        + describe(grid["paddings"])
        + "; each point checks the conv size (lax.conv_general_dilated, vmapped) "
        "and the max-pool size "
        "(flax max_pool = lax.reduce_window) against the formula.",
    ]
    if mismatches:
        notes.append("First mismatches: " + "; ".join(str(m) for m in mismatches[:5]))
    return {"rows": rows, "figures": [], "notes": notes}


if __name__ == "__main__":
    C.main(run, __doc__)

"""`fashion-jax data`: where the files are, their class counts, and a grid of samples."""

from __future__ import annotations

import argparse
from pathlib import Path

from fashion_jax.cli.inputs import load_data
from fashion_jax.data.dataset import CLASS_NAMES, describe
from fashion_jax.viz.plots import plot_samples


def cmd_data(args: argparse.Namespace) -> dict:
    ds = load_data(args)
    info = describe(ds)
    png = plot_samples(ds.train_x, ds.train_y, Path(args.out))
    if not args.json:
        print(f"source: {info['source']}")
        for split in ("train", "val", "test"):
            counts = "  ".join(f"{k}={v}" for k, v in info["class_counts"][split].items())
            print(f"{split:5s} {info[split]:6d}  {counts}")
        print(
            "first 10 training labels:",
            [f"{int(y)} {CLASS_NAMES[int(y)]}" for y in ds.train_y[:10]],
        )
        print(f"wrote {png}")
    return {**info, "samples_png": str(png)}

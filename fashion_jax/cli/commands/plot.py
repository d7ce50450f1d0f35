"""`fashion-jax plot`: every figure of a trained workdir."""

from __future__ import annotations

import argparse
from pathlib import Path

from fashion_jax.cli.inputs import load_data
from fashion_jax.viz.plots import plot_all


def cmd_plot(args: argparse.Namespace) -> dict:
    written = plot_all(
        Path(args.workdir), load_data(args), image_index=args.image, out_dir=args.out_dir
    )
    if not args.json:
        for name, path in written.items():
            print(f"{name}: {path}")
    return written

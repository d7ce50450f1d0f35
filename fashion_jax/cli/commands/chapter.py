"""`fashion-jax shapes` and `fashion-jax xor`: the chapter's teaching modules as commands."""

from __future__ import annotations

import argparse

from fashion_jax.chapter import shapes
from fashion_jax.chapter.xor import xor_report
from fashion_jax.cli.parser import CliError


def cmd_shapes(args: argparse.Namespace) -> dict:
    # chapter/ imports nothing of ours, so its arithmetic says "impossible layer" as ValueError;
    # here every such value came from a flag.
    try:
        rows = shapes.shape_walk((args.input, args.input, args.channels), _layers(args))
    except ValueError as err:
        raise CliError(str(err)) from None
    if not args.json:
        print(shapes.format_walk(rows))
    return {
        "walk": [{"layer": name, "shape": list(shape)} for name, shape in rows],
        "output": list(rows[-1][1]),
    }


def _layers(args: argparse.Namespace) -> list[shapes.LayerSpec]:
    if args.model == "cnn":
        layers = shapes.cnn_layers()
    else:
        padding = int(args.padding) if args.padding.lstrip("-").isdigit() else args.padding
        layers = [
            shapes.LayerSpec(
                "conv",
                features=args.filters,
                kernel=args.kernel,
                stride=args.stride,
                padding=padding,
            )
        ]
        if args.pool:
            layers.append(shapes.LayerSpec("pool", window=args.pool))
    return layers


def cmd_xor(args: argparse.Namespace) -> dict:
    report = xor_report(seed=args.seed)
    if not args.json:
        print(
            f"single-layer perceptron: best accuracy {report['perceptron_accuracy']:.2f} "
            "(XOR is not linearly separable)"
        )
        hidden, accuracy = report["mlp_hidden"], report["mlp_accuracy"]
        print(f"2-{hidden}-1 MLP trained by jax.grad: accuracy {accuracy:.2f}")
        print(f"hand-set 2-2-1 weights (NAND, OR -> AND): accuracy {report['hand_accuracy']:.2f}")
    return report

"""The chapter's side commands: cv, shapes, xor and plot."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def add_parsers(sub, add_common: Callable) -> None:
    p = sub.add_parser("cv", help="k-fold cross-validation, all folds in one vmapped program")
    p.add_argument("--model", default="logreg")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shuffle", action="store_true", help="shuffle before folding (sklearn KFold default: no)")
    p.add_argument("--subset", type=int, help="use the first N of the 60,000 training images")
    add_common(p)

    p = sub.add_parser("shapes", help="walk a shape through conv/pool layers")
    p.add_argument("--input", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--padding", default="same", help="same, valid, or an integer")
    p.add_argument("--filters", type=int, default=32)
    p.add_argument("--pool", type=int, default=0, help="pooling window after the conv (0: none)")
    p.add_argument("--model", choices=["cnn"], help="walk the whole chapter CNN instead")
    add_common(p, data=False)

    p = sub.add_parser("xor", help="perceptron vs MLP vs hand-set weights on XOR")
    p.add_argument("--seed", type=int, default=0)
    add_common(p, data=False)

    p = sub.add_parser("plot", help="filters, feature maps, confusion matrix and curves of a trained model")
    p.add_argument("--workdir", required=True)
    p.add_argument("--image", type=int, default=0, help="index of the test image for the feature maps")
    p.add_argument("--out-dir")
    add_common(p)


def cmd_cv(args: argparse.Namespace) -> dict:
    from fashion_jax.cli import CliError
    from fashion_jax.config import TrainConfig, model_config, validate
    from fashion_jax.cv import CV_DEFAULTS, cross_validate
    from fashion_jax.data import load_split

    if args.folds < 2:
        raise CliError(f"--folds must be at least 2, got {args.folds}")
    overrides = {**CV_DEFAULTS, **{k: v for k, v in {
        "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer,
        "learning_rate": args.learning_rate}.items() if v is not None}}
    if args.optimizer is not None and args.learning_rate is None:
        overrides.pop("learning_rate", None)  # another optimizer gets its own default rate
    config = validate(TrainConfig(model=model_config(args.model), seed=args.seed, **overrides))
    images, labels = load_split("train", args.data_dir, verify=not args.no_verify)
    if args.subset is not None:
        if args.subset < args.folds:
            raise CliError(f"--subset must be at least --folds, got {args.subset}")
        images, labels = images[: args.subset], labels[: args.subset]
    result = cross_validate(config, images, labels, args.folds, shuffle=args.shuffle, seed=args.seed)
    out = result.summary()
    if not args.json:
        accs = ", ".join(f"{a:.4f}" for a in out["fold_accuracies"])
        print(f"{args.model} {args.folds}-fold CV: mean accuracy {out['mean_accuracy']:.4f} "
              f"(folds: {accs}) in {out['seconds']:.2f}s")
    return out


def cmd_shapes(args: argparse.Namespace) -> dict:
    from fashion_jax import shapes

    if args.model == "cnn":
        layers = shapes.cnn_layers()
    else:
        padding = int(args.padding) if args.padding.lstrip("-").isdigit() else args.padding
        layers = [shapes.LayerSpec("conv", features=args.filters, kernel=args.kernel, stride=args.stride,
                                   padding=padding)]
        if args.pool:
            layers.append(shapes.LayerSpec("pool", window=args.pool))
    rows = shapes.shape_walk((args.input, args.input, args.channels), layers)
    if not args.json:
        print(shapes.format_walk(rows))
    return {"walk": [{"layer": name, "shape": list(shape)} for name, shape in rows],
            "output": list(rows[-1][1])}


def cmd_xor(args: argparse.Namespace) -> dict:
    from fashion_jax.xor import xor_report

    report = xor_report(seed=args.seed)
    if not args.json:
        print(f"single-layer perceptron: best accuracy {report['perceptron_accuracy']:.2f} (XOR is not linearly separable)")
        print(f"2-{report['mlp_hidden']}-1 MLP trained by jax.grad: accuracy {report['mlp_accuracy']:.2f}")
        print(f"hand-set 2-2-1 weights (NAND, OR -> AND): accuracy {report['hand_accuracy']:.2f}")
    return report


def cmd_plot(args: argparse.Namespace) -> dict:
    from fashion_jax.cli import load_data
    from fashion_jax.viz import plot_all

    data = load_data(args)
    written = plot_all(Path(args.workdir), data, image_index=args.image, out_dir=args.out_dir)
    if not args.json:
        for name, path in written.items():
            print(f"{name}: {path}")
    return written


COMMANDS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "cv": cmd_cv, "shapes": cmd_shapes, "xor": cmd_xor, "plot": cmd_plot}

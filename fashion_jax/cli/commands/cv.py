"""`fashion-jax cv`: k-fold cross-validation of a preset on the training split."""

from __future__ import annotations

import argparse
import dataclasses

from fashion_jax.cli.config_flags import given
from fashion_jax.cli.inputs import fetching, train_config
from fashion_jax.cli.parser import CliError
from fashion_jax.config import CVOptions
from fashion_jax.data.dataset import load_split
from fashion_jax.training.cv import cross_validate


def cmd_cv(args: argparse.Namespace) -> dict:
    config = train_config(args)
    options = dataclasses.replace(CVOptions(), **given(args, CVOptions))
    if options.folds < 2:
        raise CliError(f"--folds must be at least 2, got {options.folds}")
    images, labels = load_split("train", args.data_dir, verify=not args.no_verify, **fetching(args))
    if args.subset is not None:
        if args.subset < options.folds:
            raise CliError(f"--subset must be at least --folds, got {args.subset}")
        images, labels = images[: args.subset], labels[: args.subset]
    result = cross_validate(
        config, images, labels, options.folds, shuffle=options.shuffle, seed=config.seed
    )
    out = result.summary()
    if not args.json:
        accs = ", ".join(f"{a:.4f}" for a in out["fold_accuracies"])
        print(
            f"{config.model.name} {options.folds}-fold CV: "
            f"mean accuracy {out['mean_accuracy']:.4f} (folds: {accs}) in {out['seconds']:.2f}s"
        )
    return out

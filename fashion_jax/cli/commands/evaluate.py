"""`fashion-jax evaluate`: a workdir's model on the validation or test split."""

from __future__ import annotations

import argparse

from fashion_jax.cli.inputs import load_data
from fashion_jax.storage.model_files import load_model
from fashion_jax.training.evaluate import evaluate_arrays


def cmd_evaluate(args: argparse.Namespace) -> dict:
    config, model, params = load_model(args.workdir)
    data = load_data(args)
    x, y = (data.val_x, data.val_y) if args.split == "val" else (data.test_x, data.test_y)
    out = evaluate_arrays(model, params, x, y, config.eval_batch_size)
    if not args.json:
        print(
            f"{config.model.name} on {args.split}: accuracy {out['accuracy']:.4f}, "
            f"loss {out['loss']:.4f}, n {out['n']}"
        )
    return {"split": args.split, "model": config.model.name, **out}

"""`fashion-jax predict`: the class of each image file; a bad file is one error line, the others
are still classified, and the exit status says whether any failed."""

from __future__ import annotations

import argparse

from fashion_jax.cli.dispatch import per_file_result
from fashion_jax.inference.predictor import predict_files


def describe_row(row: dict) -> str:
    """One line of text output: the file, its class and probability, and how it was read."""
    how = ["converted from a photo"] if row["preprocessing"] == "fashion-mnist" else []
    how += [note.replace("-", " ") for note in row["notes"]]
    return f"{row['file']}: {row['class']} ({row['probability']:.3f})" + (
        f"  [{'; '.join(how)}]" if how else ""
    )


def cmd_predict(args: argparse.Namespace) -> dict:
    rows = predict_files(
        args.workdir, args.files, mode=args.preprocess, save_inputs=args.save_inputs
    )
    return per_file_result("predictions", rows, describe_row, args.json)

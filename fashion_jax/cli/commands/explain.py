"""`fashion-jax explain`: the attribution maps of each image file, for its predicted class or the
one asked for; a bad file is one error line, the others are still explained (as in predict)."""

from __future__ import annotations

import argparse
import sys

from fashion_jax.cli.dispatch import per_file_result
from fashion_jax.inference.explain_files import explain_files
from fashion_jax.inference.predictor import input_names


def describe_row(row: dict) -> str:
    """One line of text output: the file, the explained class and probability, and where each map
    is the largest (row, column), or the PNG written."""
    parts = []
    for method, m in row["maps"].items():
        flat = [v for line in m for v in line]
        top = max(range(len(flat)), key=flat.__getitem__)
        where = row.get("saved", {}).get(method) or f"peak at row {top // 28}, col {top % 28}"
        parts.append(f"{method}: {where}")
    return f"{row['file']}: {row['class']} ({row['probability']:.3f})  " + "; ".join(parts)


def cmd_explain(args: argparse.Namespace) -> dict:
    on_image = None
    if args.save:
        from fashion_jax.viz.explain import save_explanations  # matplotlib only when saving

        stems = {str(f): p.stem for f, p in zip(args.files, input_names(args.files, args.save))}
        on_image = save_explanations(args.save, stems)
    rows = explain_files(
        args.workdir,
        args.files,
        method=args.method,
        target=args.target,
        mode=args.preprocess,
        gradcam_layer=args.gradcam_layer,
        on_image=on_image,
    )
    done = [row for row in rows if "error" not in row]
    if args.method == "all" and done and "gradcam" not in done[0]["maps"]:
        print(
            "note: gradcam skipped: it needs a conv layer and this model has none", file=sys.stderr
        )
    return per_file_result("explanations", rows, describe_row, args.json)

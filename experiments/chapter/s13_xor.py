"""Section 13: the perceptron, XOR, the multi-layer perceptron and backpropagation.

Chapter: a single perceptron cannot compute XOR (it is not linearly separable); a multi-layer
perceptron can; the book first plugs in known-correct weights, and backpropagation finds such
weights by gradient descent. fashion_jax.chapter.xor.xor_report checks all three.
"""

from __future__ import annotations

from pathlib import Path

from experiments.chapter import common as C

SECTION = "s13"
TITLE = "Section 13: XOR: perceptron vs MLP vs hand-set weights"


def run(out_dir: Path, quick: bool) -> dict:
    from fashion_jax.chapter.xor import XOR_Y, xor_report

    with C.timer() as t:
        report = xor_report()
    share = t() / 3
    rows = [
        C.row(
            SECTION,
            "best single perceptron on XOR: accuracy",
            report["perceptron_accuracy"],
            "≤ 0.75 (not linearly separable)",
            share,
            ok=report["perceptron_accuracy"] <= 0.75,
        ),
        C.row(
            SECTION,
            f"MLP 2-{report['mlp_hidden']}-1 trained by backpropagation: accuracy",
            report["mlp_accuracy"],
            1.0,
            share,
            ok=report["mlp_accuracy"] == 1.0,
        ),
        C.row(
            SECTION,
            "hand-set weights (NAND, OR → AND): accuracy",
            report["hand_accuracy"],
            1.0,
            share,
            ok=report["hand_accuracy"] == 1.0,
        ),
    ]
    notes = [
        f"Targets {list(map(int, XOR_Y))}; "
        f"the trained MLP predicts {report['mlp_predictions']}, the hand-set "
        f"network {report['hand_predictions']}.",
        "The perceptron figure is the best over a grid of (w1, w2, b) "
        "and a gradient-trained single layer.",
    ]
    return {"rows": rows, "figures": [], "notes": notes}


if __name__ == "__main__":
    C.main(run, __doc__)

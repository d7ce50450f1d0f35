"""Section 8: dropout against overfitting.

Chapter: the relu MLP with Adam for 20 epochs overfits (validation loss turns up while training loss
keeps falling); Dropout(0.3) after the hidden layer keeps the two curves together. We train both,
plot train and validation loss in one figure and report the train-val loss gap at the last epoch.
"""

from __future__ import annotations

from pathlib import Path

from experiments.chapter import common as C

SECTION = "s08"
TITLE = "Section 8: dropout 0.3 on the relu MLP, 20 epochs, Adam"


def _config(quick: bool, dropout: float):
    from fashion_jax.config import TrainConfig, model_config

    return TrainConfig(
        model=model_config("mlp", hidden=100, activation="relu", dropout=dropout),
        optimizer="adam",
        epochs=3 if quick else 20,
        restore_best=False,
    )


def _plot(histories: dict[str, list[dict]], path: Path) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from fashion_jax.viz.figures import save_figure

    fig = Figure(figsize=(7.5, 4.5), layout="tight")  # tight: axis labels and titles do not overlap
    ax = fig.subplots()
    for (label, history), colour in zip(histories.items(), ("tab:red", "tab:blue")):
        epochs = [r["epoch"] for r in history]
        ax.plot(
            epochs, [r["loss"] for r in history], "o--", ms=3, color=colour, label=f"{label}: train"
        )
        ax.plot(
            epochs,
            [r["val_loss"] for r in history],
            "o-",
            ms=3,
            color=colour,
            label=f"{label}: val",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (sparse cross-entropy)")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    ax.set_title("relu MLP, Adam: train and validation loss with and without dropout")
    return save_figure(fig, path, dpi=C.FIGURE_DPI)


def run(out_dir: Path, quick: bool) -> dict:
    data = C.dataset(quick)
    histories, gaps, rows, notes = {}, {}, [], []
    for dropout in (0.0, 0.3):
        label = f"dropout {dropout:g}" if dropout else "no dropout"
        cfg = _config(quick, dropout)
        r = C.fit(cfg, data, C.work_dir(out_dir, f"mlp_dropout{dropout:g}"))
        last = r.history[-1]
        gap = last["val_loss"] - last["loss"]
        histories[label], gaps[dropout] = r.history, gap
        best = min(r.history, key=lambda h: h["val_loss"])
        rows.append(
            C.row(
                SECTION,
                f"relu MLP {label}, {cfg.epochs} epochs: val − train loss at the last epoch",
                f"{gap:.4f} ({last['val_loss']:.4f} − {last['loss']:.4f})",
                "shrinks with dropout" if dropout else "grows: overfitting",
                r.seconds,
            )
        )
        notes.append(
            f"{label}: last val accuracy {last['val_accuracy']:.4f}; "
            f"lowest val loss {best['val_loss']:.4f} "
            f"at epoch {best['epoch']} of {len(r.history)}."
        )
    closes = gaps[0.3] < gaps[0.0]
    rows.append(
        C.row(
            SECTION,
            "the gap closes with dropout 0.3",
            closes,
            True,
            0.0,
            ok=None if quick else closes,
        )
    )
    notes.append(
        "The training loss is measured with dropout active (as Keras reports it), "
        "so with dropout the "
        "training curve sits higher, which is part of why the two curves meet."
    )
    png = _plot(histories, C.figure_dir(out_dir, SECTION) / "dropout_loss.png")
    return {"rows": rows, "figures": [C.rel(out_dir, png)], "notes": notes}


if __name__ == "__main__":
    C.main(run, __doc__)

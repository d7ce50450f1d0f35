"""Section 7: a hidden layer (MLP, 100 units), sigmoid vs relu, and the six optimizers.

Chapter: Dense(100, sigmoid) -> Dense(10, softmax), then relu with a Flatten layer, 5 epochs each
with the default compile (RMSprop); then the optimizers Keras offers. Here each of sgd, momentum,
nesterov, adagrad, rmsprop and adam (Keras's default learning rates) trains the relu MLP for 10
epochs, and their validation curves share one figure.
"""

from __future__ import annotations

from pathlib import Path

from experiments.chapter import common as C

SECTION = "s07"
TITLE = "Section 7: MLP (100 hidden), sigmoid vs relu, six optimizers"
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
DENSE_KERAS = 0.8447  # the single-layer network of section 6: a hidden layer should beat it


def _config(quick: bool, activation: str, optimizer: str = "rmsprop", epochs: int = 5):
    from fashion_jax.config import TrainConfig, model_config

    return TrainConfig(
        model=model_config("mlp", hidden=100, activation=activation, dropout=0.0),
        optimizer=optimizer,
        epochs=(2 if epochs > 5 else 1) if quick else epochs,
        restore_best=False,
    )  # the chapter's plain fit(): the last epoch's model


def _plot(histories: dict[str, list[dict]], lrs: dict[str, float], path: Path) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from fashion_jax.viz.figures import save_figure

    fig = Figure(figsize=(11, 4.2), layout="tight")  # tight: axis labels and titles do not overlap
    loss_ax, acc_ax = fig.subplots(1, 2)
    for name, history in histories.items():
        epochs = [r["epoch"] for r in history]
        label = f"{name} (lr {lrs[name]:g})"
        loss_ax.plot(epochs, [r["val_loss"] for r in history], "o-", ms=3, label=label)
        acc_ax.plot(epochs, [r["val_accuracy"] for r in history], "o-", ms=3, label=label)
    for ax, what in ((loss_ax, "validation loss"), (acc_ax, "validation accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.legend(fontsize=8)
    fig.suptitle("relu MLP (100 hidden): the six optimizers, Keras default learning rates")
    return save_figure(fig, path, dpi=C.FIGURE_DPI)


def run(out_dir: Path, quick: bool) -> dict:
    from fashion_jax.model.optim import learning_rate

    data = C.dataset(quick)
    rows, notes = [], []
    for activation in ("sigmoid", "relu"):
        cfg = _config(quick, activation)
        r = C.fit(cfg, data, C.work_dir(out_dir, f"mlp_{activation}"))
        rows.append(
            C.row(
                SECTION,
                f"MLP 100 {activation}, {cfg.epochs} epochs rmsprop: val accuracy",
                r.val_accuracy,
                f"> {DENSE_KERAS} (the Dense(10) model, s06)",
                r.seconds,
                ok=None if quick else r.val_accuracy > DENSE_KERAS,
            )
        )

    histories, lrs = {}, {}
    for opt in OPTIMIZERS:
        cfg = _config(quick, "relu", opt, epochs=10)
        lrs[opt] = learning_rate(cfg)
        r = C.fit(cfg, data, C.work_dir(out_dir, f"mlp_{opt}"))
        histories[opt] = r.history
        best = min(r.history, key=lambda h: h["val_loss"])
        rows.append(
            C.row(
                SECTION,
                f"relu MLP, {opt} (lr {lrs[opt]:g}), {cfg.epochs} epochs: val accuracy",
                r.val_accuracy,
                "—",
                r.seconds,
                val_loss=r.val_loss,
            )
        )
        notes.append(
            f"{opt}: last val loss {r.val_loss:.4f}; "
            f"lowest {best['val_loss']:.4f} at epoch {best['epoch']}"
            f" (val accuracy {best['val_accuracy']:.4f}); {sum(r.epoch_seconds):.1f} s of epochs."
        )
    png = _plot(histories, lrs, C.figure_dir(out_dir, SECTION) / "optimizers.png")
    ranked = sorted(OPTIMIZERS, key=lambda o: histories[o][-1]["val_loss"])
    notes.insert(0, "Ranked by last-epoch validation loss: " + " < ".join(ranked) + ".")
    return {"rows": rows, "figures": [C.rel(out_dir, png)], "notes": notes}


if __name__ == "__main__":
    C.main(run, __doc__)

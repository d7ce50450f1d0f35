"""Section 9 (and "saving and restoring"): early stopping with a best-model checkpoint.

Chapter: model_fn(Dropout(0.3)), Adam, fit up to 20 epochs with ModelCheckpoint('best-model.h5') and
EarlyStopping(patience=2, restore_best_weights=True); save_weights / save and load them back.
Here fit(patience=2, restore_best=True) keeps the best params in workdir/best (the checkpoint
callback) and returns them; we check that what comes back evaluates to the best epoch's validation
numbers, and that a weights-only and a whole-model save/restore give the same evaluation again.
"""

from __future__ import annotations

from pathlib import Path

from experiments.chapter import common as C

SECTION = "s09"
TITLE = "Section 9: early stopping (patience 2, restore best), save and restore"
TOLERANCE = 1e-6  # the same params through the same eval step: expected bit-identical


def _config(quick: bool):
    from fashion_jax.config import TrainConfig, model_config

    return TrainConfig(
        model=model_config("mlp", hidden=100, activation="relu", dropout=0.3),
        optimizer="adam",
        epochs=4 if quick else 20,
        patience=2,
        restore_best=True,
    )


def _same(a: dict, b: dict) -> tuple[bool, float]:
    diff = max(abs(a["loss"] - b["loss"]), abs(a["accuracy"] - b["accuracy"]))
    return diff <= TOLERANCE, diff


def run(out_dir: Path, quick: bool) -> dict:
    from fashion_jax.model.models import build_model, init_params
    from fashion_jax.storage.model_files import load_model, save_model
    from fashion_jax.storage.weights import load_weights, save_weights

    data = C.dataset(quick)
    cfg = _config(quick)
    workdir = C.work_dir(out_dir, "mlp_early_stopping")
    r = C.fit(cfg, data, workdir)
    best = r.history[r.best_epoch - 1]
    at_best = {"loss": best["val_loss"], "accuracy": best["val_accuracy"]}
    model = build_model(cfg.model)
    rows = [
        C.row(
            SECTION,
            f"epochs run (of {cfg.epochs}), patience {cfg.patience}",
            r.epochs_run,
            "stops once val loss fails to improve 2 epochs running",
            r.seconds,
        ),
        C.row(
            SECTION,
            "best epoch (lowest val loss)",
            r.best_epoch,
            f"= epochs run − {cfg.patience} when it stops early",
            0.0,
            ok=(r.best_epoch == r.epochs_run - cfg.patience) if r.stopped_early else None,
        ),
        C.row(
            SECTION,
            "val loss / accuracy at the best epoch",
            f"{best['val_loss']:.4f} / {best['val_accuracy']:.4f}",
            "—",
            0.0,
        ),
    ]

    checks = []
    with C.timer() as t:
        returned = C.evaluate(model, r.params, data.val_x, data.val_y)
    checks.append(("params fit returns (restore_best_weights) re-evaluated", returned, t()))
    with C.timer() as t:
        _, m, p = load_model(
            workdir
        )  # ModelCheckpoint('best-model.h5'): the workdir's best/ params
        from_workdir = C.evaluate(m, p, data.val_x, data.val_y)
    checks.append(("best checkpoint restored from the workdir (load_model)", from_workdir, t()))
    with C.timer() as t:
        path = save_weights(C.work_dir(out_dir, "s09_weights"), r.params)  # Keras save_weights
        like = init_params(model, cfg.seed)  # weights only: the caller supplies the architecture
        weights = C.evaluate(model, load_weights(path, like), data.val_x, data.val_y)
    checks.append(("weights-only round trip (save_weights → load_weights)", weights, t()))
    with C.timer() as t:
        path = save_model(
            C.work_dir(out_dir, "s09_model"), cfg, r.params
        )  # Keras save: config + params
        _, m, p = load_model(path)
        whole = C.evaluate(m, p, data.val_x, data.val_y)
    checks.append(("whole-model round trip (save_model → load_model)", whole, t()))

    fit_says = {"loss": r.val_loss, "accuracy": r.val_accuracy}
    for what, got, seconds in [
        ("fit's own evaluation of the restored params", fit_says, 0.0),
        *checks,
    ]:
        ok, diff = _same(got, at_best)
        rows.append(
            C.row(
                SECTION,
                f"{what}: val loss / accuracy",
                f"{got['loss']:.4f} / {got['accuracy']:.4f} (|Δ| {diff:.1e})",
                "= the best epoch's",
                seconds,
                ok=ok,
            )
        )
    notes = [
        "Per epoch (val loss / val accuracy): "
        + "; ".join(
            f"{h['epoch']}: {h['val_loss']:.4f} / {h['val_accuracy']:.4f}" for h in r.history
        )
        + ".",
        f"Stopped early: {r.stopped_early}. "
        "The checks compare with the best epoch's row of history.jsonl, "
        f"to within {TOLERANCE:g}.",
    ]
    return {"rows": rows, "figures": [], "notes": notes}


if __name__ == "__main__":
    C.main(run, __doc__)

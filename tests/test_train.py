"""fit(): artifacts, resume (at an epoch boundary and mid-epoch),
early stopping, NaN, workdir rules, determinism."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fashion_jax.config import RunOptions, TrainConfig, model_config
from fashion_jax.data.dataset import FashionMNIST
from fashion_jax.model.models import build_model
from fashion_jax.storage import model_files, run_files
from fashion_jax.storage.run_files import load_json
from fashion_jax.training import evaluate
from fashion_jax.training import run as run_lib
from fashion_jax.training.loop import NonFiniteLossError, TrainingInterrupted, WorkdirError, fit

CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax.monitoring's name
HISTORY_KEYS = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
# An MLP with dropout, so resume must also replay the dropout keys.
MLP = model_config("mlp", dropout=0.2)


def mlp_config(epochs: int, seed: int = 0) -> TrainConfig:
    return TrainConfig(model=MLP, optimizer="adam", epochs=epochs, seed=seed)


def leaves_equal(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def step_numbers(folder: Path) -> list[int]:
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    )


def val_metrics(config: TrainConfig, params, data: FashionMNIST) -> dict:
    model = build_model(config.model)
    eval_step = evaluate.make_eval_step(model, config.eval_batch_size)
    return evaluate.evaluate(
        eval_step,
        params,
        jax.device_put(data.val_x),
        jax.device_put(data.val_y.astype(np.int32)),
    )


class StopAfter:
    """A should_stop() that asks to stop from its n-th call on
    (the CLI's signal flag stays set too)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def resumed_run(small_data, workdirs):
    """One workdir, three fits: stopped at the first chance (an epoch end for this small MLP),
    resumed to finish its 2 epochs, then resumed again with epochs=4."""
    workdir = workdirs / "resumed"
    out = {"workdir": workdir}
    try:
        fit(mlp_config(2), small_data, workdir, RunOptions(quiet=True), should_stop=StopAfter(1))
    except TrainingInterrupted as err:
        out["interrupted"] = err
    out["saved_at_stop"] = step_numbers(workdir / "checkpoints")
    out["two"] = fit(mlp_config(2), small_data, workdir, RunOptions(resume=True, quiet=True))
    out["history_after_two"] = run_files.read_history(workdir / "history.jsonl")
    out["four"] = fit(mlp_config(4), small_data, workdir, RunOptions(resume=True, quiet=True))
    return out


@pytest.fixture(scope="module")
def four_epochs(small_data, workdirs):
    """An uninterrupted 4-epoch run."""
    workdir = workdirs / "straight"
    return fit(mlp_config(4), small_data, workdir, RunOptions(quiet=True)), workdir


# ------------------------------------------------------------------ artifacts


def test_fit_writes_history_result_and_config_and_draws_nothing(four_epochs):
    result, workdir = four_epochs
    rows = run_files.read_history(workdir / "history.jsonl")
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    assert all(set(row) == HISTORY_KEYS for row in rows)
    assert all(math.isfinite(row[k]) for row in rows for k in HISTORY_KEYS)
    assert all(0.0 <= row[k] <= 1.0 for row in rows for k in ("accuracy", "val_accuracy"))
    assert rows == result.history
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learned something
    assert not (workdir / "curves.png").exists()  # `train` draws it; fit, like Keras's, draws none
    summary = json.loads((workdir / "result.json").read_text())
    assert (
        summary["model"] == "mlp"
        and summary["epochs_run"] == 4
        and summary["workdir"] == str(workdir)
    )
    assert summary["best_epoch"] == result.best_epoch
    assert (
        summary["val_accuracy"] == result.val_accuracy
        and summary["test_accuracy"] == result.test_accuracy
    )
    assert load_json(workdir / "config.json") == mlp_config(4)
    assert step_numbers(workdir / "best") == [result.best_epoch]
    assert step_numbers(workdir / "checkpoints")[-1] == 4 * 16  # 512 rows in batches of 32


def test_result_metrics_are_those_of_the_returned_params(four_epochs, small_data):
    result, _ = four_epochs
    val = val_metrics(mlp_config(4), result.params, small_data)
    assert val["loss"] == pytest.approx(result.val_loss, rel=1e-6)
    assert val["accuracy"] == result.val_accuracy
    assert val["loss"] == pytest.approx(result.history[result.best_epoch - 1]["val_loss"], rel=1e-6)


# ------------------------------------------------------------------ resume


def test_a_requested_stop_saves_the_state_and_raises(resumed_run):
    err = resumed_run.get("interrupted")
    assert isinstance(err, TrainingInterrupted), "should_stop() did not stop the run"
    assert str(resumed_run["workdir"]) in str(err)
    assert resumed_run["saved_at_stop"] and resumed_run["saved_at_stop"][-1] < 2 * 16


def test_resume_continues_at_the_next_epoch_and_keeps_the_first_rows(resumed_run):
    two, four, workdir = resumed_run["two"], resumed_run["four"], resumed_run["workdir"]
    assert [row["epoch"] for row in resumed_run["history_after_two"]] == [1, 2]
    assert two.history == resumed_run["history_after_two"]
    rows = run_files.read_history(workdir / "history.jsonl")
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    assert rows[:2] == resumed_run["history_after_two"]
    assert four.epochs_run == 4 and four.history == rows


def test_resumed_run_equals_an_uninterrupted_run_bitwise(resumed_run, four_epochs):
    resumed, resumed_dir = resumed_run["four"], resumed_run["workdir"]
    straight, _ = four_epochs
    assert resumed.history == straight.history
    assert resumed.best_epoch == straight.best_epoch
    assert leaves_equal(resumed.params, straight.params)
    _, _, resumed_best = model_files.load_model(resumed_dir)
    assert leaves_equal(resumed_best, straight.params)


def test_mid_epoch_interrupt_and_resume_equal_a_run_with_mid_epoch_checkpoints(
    small_data, workdirs
):
    # 404 rows in batches of 4: 101 steps, more than one compiled call, so the loop can stop inside
    # the epoch.
    data = FashionMNIST(
        small_data.train_x[:404],
        small_data.train_y[:404],
        small_data.val_x,
        small_data.val_y,
        small_data.test_x,
        small_data.test_y,
        small_data.source,
    )
    config = TrainConfig(model=model_config("logreg"), optimizer="momentum", epochs=1, batch_size=4)
    stopped_dir = workdirs / "stopped-mid-epoch"
    with pytest.raises(TrainingInterrupted):
        fit(config, data, stopped_dir, RunOptions(quiet=True), should_stop=StopAfter(1))
    saved = step_numbers(stopped_dir / "checkpoints")
    assert saved and 0 < saved[-1] < 101, saved
    assert run_files.read_history(stopped_dir / "history.jsonl") == []
    resumed = fit(config, data, stopped_dir, RunOptions(resume=True, quiet=True))
    # The reference checkpoints mid-epoch too; a save due at the epoch's last step (101) must not
    # collide with the epoch-end save of the same step.
    straight = fit(
        dataclasses.replace(config, checkpoint_every=101),
        data,
        workdirs / "every-101",
        RunOptions(quiet=True),
    )
    assert resumed.history == straight.history and len(straight.history) == 1
    assert leaves_equal(resumed.params, straight.params)


# ------------------------------------------------------------------ early stopping


def test_early_stopping_restores_the_best_params(workdirs, small_data):
    # 256 training images, half of them with a random label, and a high learning rate: the MLP
    # learns the noise and val loss turns up.
    noisy = small_data.train_y[:256].copy()
    flip = np.random.default_rng(0).random(256) < 0.5
    noisy[flip] = np.random.default_rng(1).integers(0, 10, int(flip.sum()))
    tiny = FashionMNIST(
        small_data.train_x[:256],
        noisy,
        small_data.val_x,
        small_data.val_y,
        small_data.test_x,
        small_data.test_y,
        small_data.source,
    )
    config = TrainConfig(
        model=model_config("mlp", activation="relu"),
        optimizer="adam",
        learning_rate=0.01,
        epochs=15,
        patience=2,
    )
    workdir = workdirs / "early"
    result = fit(config, tiny, workdir, RunOptions(quiet=True))
    assert result.stopped_early and result.epochs_run < config.epochs
    assert (
        result.best_epoch == result.epochs_run - config.patience
    )  # the scenario really stopped late
    best, last = result.history[result.best_epoch - 1], result.history[-1]
    assert best["val_loss"] == min(row["val_loss"] for row in result.history)
    assert last["val_loss"] > best["val_loss"]
    # The returned params are the best epoch's: its val metrics, and what best/ holds.
    assert result.val_loss == pytest.approx(best["val_loss"], rel=1e-6)
    assert result.val_accuracy == best["val_accuracy"]
    assert step_numbers(workdir / "best") == [result.best_epoch]
    _, _, stored = model_files.load_model(workdir)
    assert leaves_equal(stored, result.params)
    # ...and not the last epoch's, which the latest full state holds.
    no_best = workdirs / "early-without-best"
    shutil.copytree(workdir, no_best)
    shutil.rmtree(no_best / "best")
    _, _, latest = model_files.load_model(no_best)
    assert not leaves_equal(latest, result.params)
    assert val_metrics(config, latest, tiny)["loss"] == pytest.approx(last["val_loss"], rel=1e-6)


# ------------------------------------------------------------------ NaN


def nan_after(n_updates: int) -> optax.GradientTransformation:
    """Passes updates through, then poisons every update from the n-th on with NaN."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(updates, count, params=None):
        poison = jnp.where(count >= n_updates, jnp.nan, 0.0)
        return jax.tree.map(lambda u: u + poison, updates), count + 1

    return optax.GradientTransformation(init, update)


def test_nan_loss_raises_naming_epoch_and_step_and_never_overwrites_best(
    small_data, tmp_path, monkeypatch
):
    real_make_optimizer = run_lib.make_optimizer
    # Update 21 (global step index 20, in epoch 2) writes NaN params; the loss of step index 21 is
    # NaN.
    monkeypatch.setattr(
        run_lib,
        "make_optimizer",
        lambda config, total: optax.chain(real_make_optimizer(config, total), nan_after(20)),
    )
    config = TrainConfig(model=model_config("logreg"), optimizer="sgd", epochs=3)
    workdir = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError) as info:
        fit(config, small_data, workdir, RunOptions(quiet=True))
    message = str(info.value)
    assert "\n" not in message
    assert re.search(r"epoch 2\b", message), message
    assert re.search(r"step (6|22)\b", message), message  # step 6 of epoch 2 = global step 22
    # Epoch 1 finished and is kept; nothing from epoch 2 was written.
    rows = run_files.read_history(workdir / "history.jsonl")
    assert [row["epoch"] for row in rows] == [1]
    assert step_numbers(workdir / "best") == [1]
    assert step_numbers(workdir / "checkpoints") == [16]
    _, _, best = model_files.load_model(workdir)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(best))
    assert val_metrics(config, best, small_data)["loss"] == pytest.approx(
        rows[0]["val_loss"], rel=1e-6
    )


# ------------------------------------------------------------------ workdir rules


def test_a_workdir_holding_a_run_refuses_a_fresh_fit(four_epochs, small_data):
    result, workdir = four_epochs
    before = (workdir / "history.jsonl").read_bytes(), step_numbers(workdir / "checkpoints")
    with pytest.raises(WorkdirError, match="--resume|--overwrite") as info:
        fit(mlp_config(4), small_data, workdir, RunOptions(quiet=True))
    assert "\n" not in str(info.value)
    assert (
        (workdir / "history.jsonl").read_bytes(),
        step_numbers(workdir / "checkpoints"),
    ) == before


def test_an_empty_training_set_is_a_data_error(small_data, tmp_path):
    from fashion_jax.data.idx import DataError

    empty = FashionMNIST(
        small_data.train_x[:0],
        small_data.train_y[:0],
        small_data.val_x,
        small_data.val_y,
        small_data.test_x,
        small_data.test_y,
        small_data.source,
    )
    with pytest.raises(DataError, match="empty"):
        fit(
            TrainConfig(model=model_config("logreg"), epochs=1),
            empty,
            tmp_path / "empty",
            RunOptions(quiet=True),
        )


# ------------------------------------------------------------------ determinism


def test_same_seed_same_run_other_seed_other_run(resumed_run, four_epochs, small_data, workdirs):
    straight, _ = four_epochs
    # Two independent fresh fits with seed 0 (the resume chain and the straight run) agree bit for
    # bit (see also test_resumed_run_equals_an_uninterrupted_run_bitwise for the params).
    assert resumed_run["two"].history == straight.history[:2]
    other = fit(mlp_config(1, seed=1), small_data, workdirs / "seed1", RunOptions(quiet=True))
    assert other.history[0] != straight.history[0]
    assert not np.array_equal(
        np.asarray(other.params["hidden"]["kernel"]),
        np.asarray(straight.params["hidden"]["kernel"]),
    )


def test_every_program_an_epoch_runs_is_compiled_before_the_first_epoch(small_data, tmp_path):
    # epoch_seconds must be steady time: the benchmark reports compile_seconds apart from it. And
    # the test split, of another length than val here, is evaluated by the program compiled for
    # val: nothing compiles after the first epoch starts.
    events: list[str] = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, _secs, **_: events.append("compile") if name == BACKEND_COMPILE_EVENT else None
    )
    # The suite shares a persistent compilation cache (conftest): a program fetched from it is a
    # compile all the same, as far as when it happens goes.
    jax.monitoring.register_event_listener(
        lambda name, **_: events.append("compile") if name == CACHE_HIT_EVENT else None
    )

    def tick() -> bool:  # fit asks between chunks of steps, i.e. from inside every epoch
        events.append("tick")
        return False

    config = TrainConfig(
        model=model_config("cnn", filters=(4, 8), hidden=16, dropout=0.2),
        optimizer="adam",
        epochs=2,
        batch_size=128,
    )
    data = dataclasses.replace(
        small_data, test_x=small_data.test_x[:200], test_y=small_data.test_y[:200]
    )
    result = fit(config, data, tmp_path / "run", RunOptions(quiet=True), should_stop=tick)
    after = events[events.index("tick") :]
    assert after.count("tick") >= 4 and "compile" not in after
    assert "compile" in events[: events.index("tick")]
    # and the padded test split is evaluated over its own 200 rows
    model = build_model(config.model)
    alone = evaluate.evaluate_arrays(model, result.params, data.test_x, data.test_y)
    assert (result.test_accuracy, result.test_loss) == (alone["accuracy"], alone["loss"])


# ------------------------------------------------------------------ checkpoints="end"


def test_checkpoints_at_end_trains_the_same_and_saves_only_the_returned_params(
    four_epochs, small_data, workdirs
):
    result, _ = four_epochs
    workdir = workdirs / "at_end"
    lean = fit(mlp_config(4), small_data, workdir, RunOptions(quiet=True, checkpoints="end"))
    assert leaves_equal(lean.params, result.params) and lean.history == result.history
    assert (lean.val_accuracy, lean.test_accuracy, lean.best_epoch) == (
        result.val_accuracy,
        result.test_accuracy,
        result.best_epoch,
    )
    assert step_numbers(workdir / "checkpoints") == []  # nothing to resume from
    assert step_numbers(workdir / "best") == [result.best_epoch]
    config, _, params = model_files.load_model(workdir)  # evaluate/predict find the model as usual
    assert config == mlp_config(4) and leaves_equal(params, result.params)


def test_checkpoints_at_end_refuses_resume_and_mid_epoch_saves(small_data, tmp_path):
    with pytest.raises(WorkdirError, match="--resume"):
        fit(
            mlp_config(1),
            small_data,
            tmp_path / "a",
            RunOptions(resume=True, quiet=True, checkpoints="end"),
        )
    with pytest.raises(WorkdirError, match="--checkpoint-every"):
        fit(
            dataclasses.replace(mlp_config(1), checkpoint_every=4),
            small_data,
            tmp_path / "b",
            RunOptions(quiet=True, checkpoints="end"),
        )
    with pytest.raises(WorkdirError, match="epoch, end"):
        fit(mlp_config(1), small_data, tmp_path / "c", RunOptions(quiet=True, checkpoints="never"))


def test_a_stop_with_checkpoints_at_end_saves_nothing_and_says_so(small_data, tmp_path):
    with pytest.raises(TrainingInterrupted, match="nothing was saved") as info:
        fit(
            mlp_config(3),
            small_data,
            tmp_path / "run",
            RunOptions(quiet=True, checkpoints="end"),
            should_stop=StopAfter(1),
        )
    assert info.value.resumable is False
    assert (
        step_numbers(tmp_path / "run" / "checkpoints")
        == step_numbers(tmp_path / "run" / "best")
        == []
    )

"""Weights-only and whole-model checkpoints, training workdirs,
and damaged or foreign checkpoint trees."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import one_line

from fashion_jax.config import ConfigError, RunOptions, TrainConfig, model_config
from fashion_jax.model.models import build_model, init_params
from fashion_jax.model.optim import make_optimizer
from fashion_jax.model.state import create_train_state, epoch_sums
from fashion_jax.storage import checkpoint as ckpt
from fashion_jax.storage import model_files
from fashion_jax.storage import weights as weights_lib
from fashion_jax.storage import workdir as workdir_lib
from fashion_jax.storage.checkpoint import CheckpointError
from fashion_jax.storage.checkpoint_trust import check_tree
from fashion_jax.training import evaluate
from fashion_jax.training.loop import fit


def leaves_equal(a, b) -> bool:
    """Same tree structure and bitwise-equal leaves (dtype and shape included)."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def val_metrics(model, params, data) -> dict:
    return evaluate.evaluate_arrays(model, params, data.val_x, data.val_y, 100)


@pytest.fixture(scope="module")
def run(small_data, tmp_path_factory):
    """A finished 2-epoch logreg run: config.json, checkpoints/ (two steps) and best/."""
    workdir = tmp_path_factory.mktemp("ckpt") / "run"
    config = TrainConfig(
        model=model_config("logreg"), optimizer="adam", learning_rate=1e-2, epochs=2
    )
    result = fit(config, small_data, workdir, RunOptions(quiet=True))
    return config, workdir, result


@pytest.fixture
def run_copy(run, tmp_path):
    config, workdir, result = run
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, symlinks=True)
    return config, copy, result


def damage(folder: Path) -> int:
    """Overwrite every file under folder with junk; returns how many files were damaged."""
    count = 0
    for root, _, files in os.walk(folder):
        for name in files:
            Path(root, name).write_bytes(b"\x00junk, not a checkpoint\xff")
            count += 1
    assert count
    return count


def step_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


# ------------------------------------------------------------------ weights only


def test_weights_round_trip_is_bitwise_and_evaluates_identically(run, tmp_path, small_data):
    config, _, result = run
    model = build_model(config.model)
    path = weights_lib.save_weights(tmp_path / "weights", result.params)
    assert path.is_dir()
    like = init_params(model, seed=123)  # a fresh model: only shapes and dtypes come from it
    loaded = weights_lib.load_weights(path, like)
    assert leaves_equal(loaded, result.params)
    assert not leaves_equal(like, result.params)
    assert val_metrics(model, loaded, small_data) == val_metrics(model, result.params, small_data)


def params_like(cfg, seed: int = 0):
    """Random params with the model's tree, shapes and dtypes, without compiling an init."""
    model = build_model(cfg)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28)))["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


@pytest.mark.parametrize(
    "other",
    [
        {"name": "mlp", "hidden": 50},
        {"name": "logreg"},
        {"name": "mlp", "hidden": 100, "num_classes": 5},
    ],
    ids=["shape", "structure", "classes"],
)
def test_weights_into_a_model_of_another_shape_fail_in_one_line(tmp_path, other):
    path = weights_lib.save_weights(
        tmp_path / "weights", params_like(model_config("mlp", hidden=100))
    )
    like = params_like(model_config(other.pop("name"), **other))
    with pytest.raises(CheckpointError) as info:
        weights_lib.load_weights(path, like)
    one_line(info.value)
    assert str(path) in str(info.value)


def test_missing_or_empty_weights_folder_is_a_checkpoint_error(tmp_path):
    like = params_like(model_config("logreg"))
    with pytest.raises(CheckpointError, match="no such"):
        weights_lib.load_weights(tmp_path / "absent", like)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as info:
        weights_lib.load_weights(tmp_path / "empty", like)
    one_line(info.value)


def test_damaged_weights_are_a_checkpoint_error(run, tmp_path):
    config, _, result = run
    path = weights_lib.save_weights(tmp_path / "weights", result.params)
    damage(path)
    with pytest.raises(CheckpointError) as info:
        weights_lib.load_weights(path, result.params)
    one_line(info.value)


def test_symlink_inside_weights_is_refused(run, tmp_path):
    config, _, result = run
    path = weights_lib.save_weights(tmp_path / "weights", result.params)
    victim = next(Path(root, f) for root, _, files in os.walk(path) for f in files)
    outside = tmp_path / "outside.bin"
    shutil.move(victim, outside)
    victim.symlink_to(outside)
    with pytest.raises(CheckpointError, match="symlink"):
        weights_lib.load_weights(path, result.params)


# ------------------------------------------------------------------ whole model


def test_save_model_load_model_needs_no_architecture(run, tmp_path, small_data):
    _, _, result = run
    config = TrainConfig(model=model_config("mlp", hidden=24, activation="tanh"), seed=5)
    model = build_model(config.model)
    params = init_params(model, seed=5)
    folder = model_files.save_model(tmp_path / "model", config, params)
    assert (folder / "config.json").is_file() and (folder / "params").is_dir()
    loaded_config, loaded_model, loaded_params = model_files.load_model(folder)
    assert loaded_config == config
    assert loaded_model == model
    assert leaves_equal(loaded_params, params)
    assert loaded_params["hidden"]["kernel"].shape == (784, 24)
    assert val_metrics(loaded_model, loaded_params, small_data) == val_metrics(
        model, params, small_data
    )


def test_load_model_of_a_training_workdir_returns_the_best_params(run, small_data):
    config, workdir, result = run
    assert result.best_epoch is not None and step_dirs(workdir / "best")[-1].name == str(
        result.best_epoch
    )
    loaded_config, model, params = model_files.load_model(workdir)
    assert loaded_config == config
    assert leaves_equal(params, result.params)
    val = val_metrics(model, params, small_data)
    assert val["loss"] == pytest.approx(result.history[result.best_epoch - 1]["val_loss"], rel=1e-6)
    assert val["accuracy"] == result.history[result.best_epoch - 1]["val_accuracy"]


def test_load_model_without_best_falls_back_to_the_latest_state(run_copy):
    config, workdir, result = run_copy
    shutil.rmtree(workdir / "best")
    _, _, params = model_files.load_model(workdir)
    # The latest full state holds the last epoch's params; restore them without knowing the
    # optimizer.
    tx = make_optimizer(config, 1)
    target = {
        "train": create_train_state(init_params(build_model(config.model), 0), tx),
        "sums": epoch_sums(512),
    }
    tree, meta = ckpt.RunCheckpoints(workdir, read_only=True).restore_state(target)[:2]
    assert meta["epoch"] == config.epochs
    assert leaves_equal(params, tree["train"].params)


def test_damaged_newest_state_falls_back_to_the_older_one(run_copy):
    config, workdir, result = run_copy
    newest, older = step_dirs(workdir / "checkpoints")[-1], step_dirs(workdir / "checkpoints")[-2]
    damage(newest)
    tx = make_optimizer(config, 1)
    target = {
        "train": create_train_state(init_params(build_model(config.model), 0), tx),
        "sums": epoch_sums(512),
    }
    tree, meta = ckpt.RunCheckpoints(workdir, read_only=True).restore_state(target)[:2]
    assert meta["epoch"] == 1 and int(tree["train"].step) == int(older.name)
    assert meta["history"] == result.history[:1]


def test_damaged_best_is_a_checkpoint_error(run_copy):
    _, workdir, _ = run_copy
    damage(workdir / "best")
    with pytest.raises(CheckpointError) as info:
        model_files.load_model(workdir)
    one_line(info.value)


def test_workdir_with_empty_checkpoint_folders_is_a_checkpoint_error(run_copy):
    _, workdir, _ = run_copy
    for name in ("best", "checkpoints"):
        shutil.rmtree(workdir / name)
        (workdir / name).mkdir()
    with pytest.raises(CheckpointError, match="no saved params"):
        model_files.load_model(workdir)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        model_files.load_model(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    # An empty folder is "not a fashion_jax workdir": a ConfigError today (see report), never a
    # traceback.
    with pytest.raises((CheckpointError, ConfigError), match="config.json|not a fashion_jax"):
        model_files.load_model(tmp_path / "empty")


def test_corrupt_config_json_is_refused(run_copy):
    _, workdir, _ = run_copy
    (workdir / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="unreadable config"):
        model_files.load_model(workdir)
    (workdir / "config.json").write_text('{"model": {"name": "cnn"}, "bogus": 1}')
    with pytest.raises(ConfigError, match="not a fashion_jax config"):
        model_files.load_model(workdir)


def test_symlink_inside_a_workdir_checkpoint_is_refused(run_copy):
    _, workdir, _ = run_copy
    best = step_dirs(workdir / "best")[-1]
    victim = next(
        Path(root, f)
        for root, _, files in os.walk(best)
        for f in files
        if f != "_CHECKPOINT_METADATA"
    )
    outside = workdir.parent / "outside.bin"
    shutil.move(victim, outside)
    victim.symlink_to(outside)
    with pytest.raises(CheckpointError, match="symlink"):
        model_files.load_model(workdir)


def test_symlinked_step_folder_is_refused(run, tmp_path):
    _, workdir, _ = run
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copy(workdir / "config.json", foreign / "config.json")
    (foreign / "best").mkdir()
    best = step_dirs(workdir / "best")[-1]
    (foreign / "best" / best.name).symlink_to(best, target_is_directory=True)
    with pytest.raises(CheckpointError, match="symlink"):
        model_files.load_model(foreign)


# ------------------------------------------------------------------ workdir config


def test_check_workdir_config_refuses_other_training_settings(run):
    config, workdir, _ = run
    # A different learning rate or optimizer would silently make another run than the checkpoint's.
    for change in ({"learning_rate": 0.5}, {"optimizer": "sgd"}, {"seed": 1}, {"batch_size": 16}):
        with pytest.raises(CheckpointError, match="other settings") as info:
            workdir_lib.check_workdir_config(workdir, dataclasses.replace(config, **change))
        one_line(info.value)


def test_check_workdir_config_accepts_a_fresh_folder(tmp_path):
    workdir_lib.check_workdir_config(tmp_path, TrainConfig(model=model_config("cnn")))


def test_a_reader_retries_when_the_step_it_reads_is_replaced_under_it(tmp_path, monkeypatch):
    """A trainer may commit best/2 and delete best/1 while a reader (no lock) is reading best/1."""
    folder = tmp_path / "best"
    (folder / "1").mkdir(parents=True)
    calls = []

    def racing_restore(manager, key, target):
        calls.append(sorted(p.name for p in folder.iterdir()))
        if len(calls) == 1:  # the trainer swaps the step during the first read
            (folder / "1").rmdir()
            (folder / "2").mkdir()
            raise ckpt.CheckpointError(f"{folder}/1: Exception: Encountered error while reading")
        return "params", {}, 2

    monkeypatch.setattr(ckpt, "_restore_newest", racing_restore)
    assert ckpt.restore_newest_readonly(folder, "params", None) == ("params", {}, 2)
    assert calls == [["1"], ["2"]]


def test_a_reader_retries_when_a_step_vanishes_while_the_manager_opens(tmp_path, monkeypatch):
    """The same race one stage earlier: Orbax lists best/'s steps as the manager opens, and the
    trainer deletes best/1 in between (seen as 'No such file or directory' in a full suite run)."""
    folder = tmp_path / "best"
    (folder / "1").mkdir(parents=True)
    real_manager, opened = ckpt._manager, []

    def racing_manager(directory, keep, read_only=False):
        opened.append(sorted(p.name for p in folder.iterdir()))
        if len(opened) == 1:
            (folder / "1").rmdir()
            (folder / "2").mkdir()
            raise ckpt.CheckpointError(
                f"{folder}: cannot open checkpoints (No such file or directory)"
            )
        return real_manager(directory, keep, read_only)

    monkeypatch.setattr(ckpt, "_manager", racing_manager)
    monkeypatch.setattr(ckpt, "_restore_newest", lambda manager, key, target: ("params", {}, 2))
    assert ckpt.restore_newest_readonly(folder, "params", None) == ("params", {}, 2)
    assert opened == [["1"], ["2"]]


def test_a_reader_does_not_retry_real_damage(tmp_path, monkeypatch):
    folder = tmp_path / "best"
    (folder / "1").mkdir(parents=True)
    calls = []

    def damaged(manager, key, target):
        calls.append(1)
        raise ckpt.CheckpointError(f"{folder}/1: damaged")

    monkeypatch.setattr(ckpt, "_restore_newest", damaged)
    with pytest.raises(ckpt.CheckpointError, match="damaged"):
        ckpt.restore_newest_readonly(folder, "params", None)
    assert len(calls) == 1


def test_a_dense_run_saved_in_the_old_transposed_layout_is_refused_saying_why():
    old = {"params": {"dense": {"kernel": np.zeros((10, 784), np.float32)}}}
    new = {"params": {"dense": {"kernel": np.zeros((784, 10), np.float32)}}}
    with pytest.raises(CheckpointError) as info:
        check_tree(old, new, "W/best/3")
    one_line(info, "dense/kernel", "before 2026-12-07", "retrain")
    other = {"params": {"hidden": {"kernel": np.zeros((32, 784), np.float32)}}}
    with pytest.raises(CheckpointError) as info:  # any other transposed leaf: no such story
        check_tree(other, {"params": {"hidden": {"kernel": np.zeros((784, 32), np.float32)}}}, "W")
    assert "2026-12-07" not in str(info.value)

"""`train --tensorboard`: the events, read back with TensorBoard's own reader, hold exactly the
run's history.jsonl rows and learning rates; a resume neither repeats nor loses an epoch."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboardX import SummaryWriter
from test_cli import run_main

from fashion_jax.config import ConfigError, RunOptions, TrainConfig, model_config
from fashion_jax.storage.run_files import read_history
from fashion_jax.training import run as run_lib
from fashion_jax.training import tensorboard
from fashion_jax.training.loop import TrainingInterrupted, fit

ON = RunOptions(quiet=True, tensorboard=True)
TAGS = ("loss", "accuracy", "val_loss", "val_accuracy")


def read_scalars(workdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar as TensorBoard shows it (orphaned steps purged), as (step, value) pairs."""
    events = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def assert_matches_history(scalars: dict, history: list[dict]) -> None:
    assert set(TAGS) | {"learning_rate"} == set(scalars)
    for tag in TAGS:
        # Scalars are stored as float32: equal to the history's value rounded to float32.
        expected = [(row["epoch"], float(np.float32(row[tag]))) for row in history]
        assert scalars[tag] == expected, tag


def test_cli_train_writes_each_epoch_and_the_cosine_rate(tmp_path, synthetic_idx_dir):
    workdir = tmp_path / "run"
    flags = ["--model", "mlp", "--optimizer", "adam", "--learning-rate", "0.01"]
    flags += ["--schedule", "cosine", "--epochs", "3", "--batch-size", "100"]
    code, _, err = run_main(
        ["train", *flags, "--data-dir", synthetic_idx_dir, "--no-verify", "--tensorboard"]
        + ["--workdir", workdir, "--quiet", "--json"]
    )
    assert code == 0, err
    history = read_history(workdir / "history.jsonl")
    assert [row["epoch"] for row in history] == [1, 2, 3]
    scalars = read_scalars(workdir)
    assert_matches_history(scalars, history)
    # The synthetic files' 1,000 training images: 800 train (split 0.2), 8 steps of 100 an epoch.
    # The epoch's last update is update 8 * epoch, which optax counts from 0. Float32 rounding of
    # the cosine: atol.
    total = 3 * 8
    rates = [0.005 * (1 + math.cos(math.pi * (8 * e - 1) / total)) for e in (1, 2, 3)]
    assert [s for s, _ in scalars["learning_rate"]] == [1, 2, 3]
    np.testing.assert_allclose(
        [v for _, v in scalars["learning_rate"]], rates, rtol=1e-6, atol=1e-9
    )


def test_resume_appends_the_new_epochs_and_hides_what_a_killed_run_left(small_data, tmp_path):
    workdir = tmp_path / "resumed"
    config = TrainConfig(model=model_config("mlp"), optimizer="sgd", epochs=3)
    with pytest.raises(TrainingInterrupted):  # stops at the end of epoch 1
        fit(
            config,
            small_data,
            workdir,
            RunOptions(quiet=True, tensorboard=True),
            should_stop=lambda: True,
        )
    assert [s for s, _ in read_scalars(workdir)["loss"]] == [1]
    # A killed run may have written an epoch its checkpoint never saw: epoch 2, a wrong value.
    with SummaryWriter(str(workdir / "tensorboard"), filename_suffix=".orphan") as orphan:
        orphan.add_scalar("loss", 999.0, 2)
    assert (2, 999.0) in read_scalars(workdir)["loss"]

    fit(config, small_data, workdir, dataclasses.replace(ON, resume=True))
    scalars = read_scalars(workdir)
    assert_matches_history(scalars, read_history(workdir / "history.jsonl"))
    assert [v for _, v in scalars["learning_rate"]] == [float(np.float32(0.01))] * 3


def test_no_flag_no_events_and_overwrite_removes_them(small_data, tmp_path):
    config = TrainConfig(model=model_config("logreg"), epochs=1)
    fit(config, small_data, tmp_path / "plain", RunOptions(quiet=True))
    assert not (tmp_path / "plain" / "tensorboard").exists()
    fit(config, small_data, tmp_path / "tb", RunOptions(quiet=True, tensorboard=True))
    assert (tmp_path / "tb" / "tensorboard").is_dir()
    fit(config, small_data, tmp_path / "tb", RunOptions(quiet=True, overwrite=True))
    assert not (tmp_path / "tb" / "tensorboard").exists()


def test_a_missing_writer_is_one_config_error_before_anything_runs(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # find_spec: not installed
    with pytest.raises(ConfigError, match="pip install"):
        tensorboard.check_available()
    code, _, err = run_main(["train", "--model", "dense", "--tensorboard", "--workdir", tmp_path])
    assert code == 2 and err.strip().startswith("error: --tensorboard needs tensorboardX")
    assert not tmp_path.joinpath("config.json").exists()


def test_only_the_leader_opens_a_writer(monkeypatch, tmp_path):
    config = TrainConfig(model=model_config("logreg"), epochs=2)
    run = SimpleNamespace(options=ON, workdir=tmp_path, config=config, steps_per_epoch=4)
    monkeypatch.setattr(run_lib.distributed, "is_leader", lambda: False)
    assert run_lib.open_board(run, 0) is None
    monkeypatch.setattr(run_lib.distributed, "is_leader", lambda: True)
    board = run_lib.open_board(run, 0)
    board.close()
    assert (tmp_path / "tensorboard").is_dir()
    assert run_lib.open_board(SimpleNamespace(**{**vars(run), "options": RunOptions()}), 0) is None


def test_a_resumed_writer_starts_in_a_later_second_than_every_event_file(tmp_path):
    # TensorBoard reads event files in name order and a name starts with its second: a resume
    # within the killed run's last second would otherwise sort first and escape its own purge.
    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now}.host.orphan").write_bytes(b"")
    (tmp_path / "events.out.tfevents.not-a-stamp.host").write_bytes(b"")
    tensorboard._wait_to_be_read_last(tmp_path)
    assert time.time() >= now + 1
    old = tmp_path / "old"
    old.mkdir()
    (old / f"events.out.tfevents.{now - 100}.host").write_bytes(b"")
    start = time.monotonic()
    tensorboard._wait_to_be_read_last(old)
    tensorboard._wait_to_be_read_last(tmp_path / "absent")
    assert time.monotonic() - start < 0.1

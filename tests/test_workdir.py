"""workdir: which setting changes a resume accepts or refuses, and one writer per workdir."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import pytest
from helpers import one_line

from fashion_jax.config import TrainConfig, model_config
from fashion_jax.storage import run_files
from fashion_jax.storage.checkpoint import CheckpointError, CheckpointMismatch
from fashion_jax.storage.workdir import (
    RESUMABLE_CHANGES,
    WorkdirError,
    WorkdirLock,
    check_workdir_config,
)

BASE = TrainConfig(model=model_config("mlp", dropout=0.2), optimizer="adam", epochs=4, patience=2)
# One other valid value for every TrainConfig field (the model is checked apart).
OTHER = {
    "optimizer": "sgd",
    "learning_rate": 0.5,
    "epochs": 6,
    "batch_size": 64,
    "seed": 1,
    "patience": 5,
    "monitor": "val_accuracy",
    "min_delta": 0.01,
    "restore_best": False,
    "checkpoint_every": 10,
    "eval_batch_size": 100,
    "skip_nonfinite": 3,
    "schedule": "cosine",
}


def workdir_of(tmp_path, config: TrainConfig):
    run_files.save_json(config, tmp_path / "config.json")
    return tmp_path


def test_every_field_has_another_value_to_try():
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    assert set(OTHER) == fields


@pytest.mark.parametrize("name", sorted(RESUMABLE_CHANGES))
def test_each_allowed_change_is_accepted(tmp_path, name):
    check_workdir_config(
        workdir_of(tmp_path, BASE), dataclasses.replace(BASE, **{name: OTHER[name]})
    )


@pytest.mark.parametrize("name", sorted(set(OTHER) - set(RESUMABLE_CHANGES)))
def test_each_other_change_is_refused_naming_the_setting(tmp_path, name):
    with pytest.raises(CheckpointMismatch, match=rf"other settings \({name}\)") as err:
        check_workdir_config(
            workdir_of(tmp_path, BASE), dataclasses.replace(BASE, **{name: OTHER[name]})
        )
    assert "\n" not in str(err.value)


def test_a_schedule_change_is_refused(tmp_path):
    with pytest.raises(CheckpointMismatch, match="schedule"):
        check_workdir_config(
            workdir_of(tmp_path, BASE), dataclasses.replace(BASE, schedule="cosine")
        )


def test_epochs_may_change_under_a_constant_rate_but_not_under_cosine(tmp_path):
    cosine = dataclasses.replace(BASE, schedule="cosine")
    check_workdir_config(workdir_of(tmp_path, BASE), dataclasses.replace(BASE, epochs=9))
    with pytest.raises(CheckpointMismatch, match="the cosine schedule spans all epochs"):
        check_workdir_config(workdir_of(tmp_path, cosine), dataclasses.replace(cosine, epochs=9))
    check_workdir_config(workdir_of(tmp_path, cosine), dataclasses.replace(cosine, patience=0))


@pytest.mark.parametrize(
    "other",
    [
        *(dataclasses.replace(BASE.model, **change) for change in
          ({"name": "cnn"}, {"hidden": 50}, {"dropout": 0.3}, {"activation": "relu"})),
        model_config("dense"),
        model_config("logreg", num_classes=5),
    ],
    ids=["cnn", "hidden", "dropout", "activation", "dense", "logreg-5-classes"],
)  # fmt: skip
def test_another_architecture_is_refused(tmp_path, other):
    """The one home of this claim: fit, resume, evaluate and the CLI all ask check_workdir_config
    (test_cli checks the CLI's exit 2 and that config.json is left as it was)."""
    workdir = workdir_of(tmp_path, BASE)
    with pytest.raises(CheckpointMismatch) as info:
        check_workdir_config(workdir, dataclasses.replace(BASE, model=other))
    one_line(info, "another architecture")


def test_a_folder_without_a_run_is_a_fresh_start_and_checkpoints_without_config_are_refused(
    tmp_path,
):
    check_workdir_config(tmp_path, BASE)  # nothing there: nothing to compare
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        check_workdir_config(tmp_path, BASE)


# ------------------------------------------------------------------ one writer per workdir


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with WorkdirLock(tmp_path / "run"), pytest.raises(WorkdirError) as err:
        WorkdirLock(tmp_path / "run").acquire()
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'run'} is in use by process {os.getpid()} (since ")
    assert "\n" not in message
    WorkdirLock(tmp_path / "run").acquire().release()  # released: free again


def test_the_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirError, match=f"in use by process {holder.pid} "):
            WorkdirLock(tmp_path / "run").acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
    with WorkdirLock(tmp_path / "run"):  # no stale lock after kill -9
        pass


HOLD_LOCK = (
    "import sys, time; from pathlib import Path; "
    "from fashion_jax.storage.workdir import WorkdirLock; "
    "WorkdirLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(120)"
)


def test_a_workdir_that_is_a_file_is_refused_by_the_lock(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkdirError, match="is a file, not a folder"):
        WorkdirLock(tmp_path / "file").acquire()

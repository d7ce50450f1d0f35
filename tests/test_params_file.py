"""params.msgpack: the Orbax-free copy readers load, and every way it must not be trusted."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from fashion_jax.config import RunOptions, TrainConfig, model_config
from fashion_jax.storage import model_files, params_file
from fashion_jax.storage.checkpoint import CheckpointError
from fashion_jax.training.loop import fit


def same_leaves(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.fixture(scope="module")
def run(small_data, tmp_path_factory):
    """A finished 2-epoch logreg run, and the params load_model gets from best/ through Orbax."""
    workdir = tmp_path_factory.mktemp("fast") / "run"
    config = TrainConfig(
        model=model_config("logreg"), optimizer="adam", learning_rate=1e-2, epochs=2
    )
    fit(config, small_data, workdir, RunOptions(quiet=True))
    copy = workdir.parent / "no-copy"
    shutil.copytree(workdir, copy)
    (copy / params_file.FILE).unlink()
    return workdir, model_files.load_model(copy)[2]


@pytest.fixture
def workdir(run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run[0], copy)
    return copy


def test_a_finished_run_has_a_copy_equal_to_its_best_params(run):
    workdir, from_orbax = run
    epochs = [p.name for p in (workdir / "best").iterdir() if p.name.isdigit()]
    like = jax.tree.map(np.asarray, from_orbax)
    copied = params_file.read(workdir, f"best/{epochs[0]}", like)
    assert copied is not None and same_leaves(copied, from_orbax)
    assert same_leaves(model_files.load_model(workdir)[2], from_orbax)


def test_load_model_of_a_copy_imports_no_orbax_and_without_it_falls_back(run, tmp_path):
    # A workdir written before the copy existed is the run without params.msgpack.
    code = (
        "import sys; from fashion_jax.storage import model_files; "
        "model_files.load_model(sys.argv[1]); "
        "print('orbax loaded:', 'orbax.checkpoint' in sys.modules)"
    )
    old = tmp_path / "old"
    shutil.copytree(run[0], old)
    (old / params_file.FILE).unlink()
    for folder, expected in ((run[0], "False"), (old, "True")):
        done = subprocess.run(
            [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == f"orbax loaded: {expected}"


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:-40] + bytes(40),  # the tail of the payload zeroed
        lambda b: b"not msgpack at all",
    ],
)
def test_a_damaged_copy_is_one_warning_and_the_orbax_params(run, workdir, damage, caplog):
    path = workdir / params_file.FILE
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="fashion_jax"):
        params = model_files.load_model(workdir)[2]
    assert same_leaves(params, run[1])
    warnings = [r.getMessage() for r in caplog.records if params_file.FILE in r.getMessage()]
    assert len(warnings) == 1 and "damaged" in warnings[0] and "\n" not in warnings[0]


def test_a_copy_of_another_shape_is_refused_as_damage(run, workdir, caplog):
    source = next(p.name for p in (workdir / "best").iterdir() if p.name.isdigit())
    wrong = jax.tree.map(lambda x: np.zeros(np.shape(x)[::-1], np.float32), run[1])
    params_file.write(workdir, f"best/{source}", wrong)
    with caplog.at_level(logging.WARNING, logger="fashion_jax"):
        params = model_files.load_model(workdir)[2]
    assert same_leaves(params, run[1])
    assert any("does not fit this model" in r.getMessage() for r in caplog.records)


def test_a_copy_whose_folder_changed_is_not_used(workdir):
    # best/ damaged after the copy was made: the copy is stale, and Orbax's refusal is the answer.
    step = next(p for p in (workdir / "best").iterdir() if p.name.isdigit())
    for f in (p for p in step.rglob("*") if p.is_file()):
        f.write_bytes(b"\x00junk")
    with pytest.raises(CheckpointError):
        model_files.load_model(workdir)


def test_a_writer_discards_the_copy_and_overwrite_deletes_it(small_data, workdir):
    config = TrainConfig(
        model=model_config("logreg"), optimizer="adam", learning_rate=1e-2, epochs=1
    )
    before = (workdir / params_file.FILE).read_bytes()
    fit(config, small_data, workdir, RunOptions(quiet=True, overwrite=True))
    after = (workdir / params_file.FILE).read_bytes()
    assert after != before  # rewritten for the new best/, not left from the old run
    source = f"best/{next(p.name for p in (workdir / 'best').iterdir() if p.name.isdigit())}"
    assert params_file.read(workdir, source, model_files.load_model(workdir)[2]) is not None


def test_save_model_writes_a_copy_load_model_reads(run, tmp_path):
    config = TrainConfig(model=model_config("logreg"))
    folder = model_files.save_model(tmp_path / "model", config, run[1])
    assert (folder / params_file.FILE).is_file()
    assert params_file.read(folder, "params", run[1]) is not None
    assert same_leaves(model_files.load_model(folder)[2], run[1])

"""The command line: in-process through main() for speed, a few real processes for exit codes and stderr."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from fashion_jax import cli
from fashion_jax.checkpoint import load_model
from fashion_jax.data import CLASS_NAMES

TRAIN_KEYS = {"model", "epochs_run", "best_epoch", "val_accuracy", "val_loss", "test_accuracy", "workdir", "seconds"}
ROOT = Path(__file__).resolve().parents[1]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """main() in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def run_process(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FASHION_JAX_DEBUG"}
    return subprocess.run([sys.executable, "-m", "fashion_jax.cli", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no stdout"
    return json.loads(lines[-1])


def assert_one_error_line(code: int, stderr: str) -> str:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_data):
    """`train --model dense --epochs 1 --subset 512 --json --quiet`, run once for the module."""
    workdir = tmp_path_factory.mktemp("cli") / "dense"
    code, out, err = run_main(["train", "--model", "dense", "--epochs", "1", "--subset", "512",
                               "--workdir", workdir, "--json", "--quiet"])
    assert code == 0, err
    return workdir, out, err


@pytest.fixture(scope="module")
def images(tmp_path_factory, real_data):
    """Real test images as files: a 28x28 PNG, a .npy, a 56x56 PNG and a text file named .png."""
    folder = tmp_path_factory.mktemp("images")
    x = real_data.test_x
    Image.fromarray(x[0]).save(folder / "a.png")
    np.save(folder / "b.npy", x[1])
    Image.fromarray(np.kron(x[2], np.ones((2, 2), np.uint8))).save(folder / "big.png")
    (folder / "x.png").write_text("this is not an image\n")
    return folder


# ------------------------------------------------------------------ train / evaluate / predict


def test_train_json_summary(trained):
    workdir, out, _ = trained
    summary = last_json(out)
    assert TRAIN_KEYS <= set(summary)
    assert summary["model"] == "dense" and summary["epochs_run"] == 1 and summary["best_epoch"] == 1
    assert summary["workdir"] == str(workdir)
    assert 0.1 < summary["val_accuracy"] <= 1.0 and 0.1 < summary["test_accuracy"] <= 1.0
    assert np.isfinite(summary["val_loss"]) and summary["seconds"] > 0
    assert (workdir / "history.jsonl").is_file() and (workdir / "result.json").is_file()


def test_evaluate_val_matches_the_train_summary(trained):
    workdir, out, _ = trained
    code, eval_out, err = run_main(["evaluate", "--workdir", workdir, "--split", "val", "--json"])
    assert code == 0, err
    got = last_json(eval_out)
    assert {"split", "accuracy", "loss", "n"} <= set(got)
    assert got["split"] == "val" and got["n"] == 12000
    summary = last_json(out)
    assert got["accuracy"] == pytest.approx(summary["val_accuracy"], abs=1e-6)
    assert got["loss"] == pytest.approx(summary["val_loss"], rel=1e-6)


def test_checkpoints_at_end_leaves_a_model_that_evaluates_as_trained(tmp_path):
    workdir = tmp_path / "lean"
    code, out, err = run_main(["train", "--model", "dense", "--epochs", "2", "--subset", "512", "--checkpoints", "end",
                               "--workdir", workdir, "--json", "--quiet"])
    assert code == 0, err
    summary = last_json(out)
    assert not any((workdir / "checkpoints").glob("[0-9]*")) and [p.name for p in (workdir / "best").iterdir()
                                                                  if p.name.isdigit()] == ["2"]
    code, eval_out, err = run_main(["evaluate", "--workdir", workdir, "--split", "test", "--json"])
    assert code == 0, err
    assert last_json(eval_out)["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)


def test_evaluate_test_split(trained):
    workdir, out, _ = trained
    code, eval_out, err = run_main(["evaluate", "--workdir", workdir, "--json"])  # test is the default split
    assert code == 0, err
    got = last_json(eval_out)
    assert got["split"] == "test" and got["n"] == 10000
    assert got["accuracy"] == pytest.approx(last_json(out)["test_accuracy"], abs=1e-6)


def test_predict_png_and_npy_agree_with_the_model(trained, images, real_data):
    workdir, _, _ = trained
    code, out, err = run_main(["predict", "--workdir", workdir, images / "a.png", images / "b.npy", "--json"])
    assert code == 0, err
    rows = last_json(out)["predictions"]
    assert [Path(r["file"]).name for r in rows] == ["a.png", "b.npy"]
    _, model, params = load_model(workdir)
    logits = model.apply({"params": params}, real_data.test_x[:2].astype(np.float32) / 255.0)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    for row, p in zip(rows, probs):
        assert row["label"] == int(p.argmax()) and row["class"] == CLASS_NAMES[row["label"]]
        assert row["probability"] == pytest.approx(float(p.max()), rel=1e-5)


def test_predict_resizes_a_56x56_png_with_a_warning_in_a_real_process(trained, images):
    workdir, _, _ = trained
    proc = run_process(["predict", "--workdir", workdir, images / "big.png", "--json"], cwd=images)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "resiz" in line]
    assert len(warnings) == 1 and "56x56" in warnings[0] and "28x28" in warnings[0], proc.stderr
    (row,) = last_json(proc.stdout)["predictions"]
    assert row["class"] == CLASS_NAMES[row["label"]] and 0.0 < row["probability"] <= 1.0


@pytest.mark.parametrize("name", ["x.png", "absent.png", "text.npy"])
def test_predict_a_bad_file_is_one_error_line(trained, images, name):
    workdir, _, _ = trained
    if name == "text.npy":
        (images / name).write_text("not an array")
    code, out, err = run_main(["predict", "--workdir", workdir, images / "a.png", images / name])
    line = assert_one_error_line(code, err)
    assert name in line
    assert out == ""


# ------------------------------------------------------------------ data / shapes / xor


def test_data_json(tmp_path):
    png = tmp_path / "samples.png"
    code, out, err = run_main(["data", "--json", "--out", png])
    assert code == 0, err
    info = last_json(out)
    assert {"train", "val", "test", "class_counts", "source", "samples_png"} <= set(info)
    assert (info["train"], info["val"], info["test"]) == (48000, 12000, 10000)
    for split in ("train", "val", "test"):
        counts = info["class_counts"][split]
        assert set(counts) == set(CLASS_NAMES) and sum(counts.values()) == info[split]
    assert info["class_counts"]["test"] == dict.fromkeys(CLASS_NAMES, 1000)
    assert Path(info["samples_png"]) == png and png.read_bytes().startswith(b"\x89PNG")


def test_shapes_of_the_chapter_cnn():
    code, out, err = run_main(["shapes", "--model", "cnn", "--json"])
    assert code == 0, err
    got = last_json(out)
    assert got["output"] == [10]
    shapes = [row["shape"] for row in got["walk"]]
    assert shapes[0] == [28, 28, 1] and [3136] in shapes


def test_xor_json():
    code, out, err = run_main(["xor", "--json"])
    assert code == 0, err
    got = last_json(out)
    assert {"perceptron_accuracy", "mlp_accuracy", "hand_accuracy", "mlp_hidden",
            "mlp_predictions", "hand_predictions"} <= set(got)
    assert got["hand_accuracy"] == 1.0 and got["hand_predictions"] == [0, 1, 1, 0]
    assert got["mlp_accuracy"] == 1.0 and got["mlp_predictions"] == [0, 1, 1, 0]
    assert got["perceptron_accuracy"] < 1.0  # XOR is not linearly separable


# ------------------------------------------------------------------ bad input: exit 2, one line


BAD_TRAIN = {
    "unknown model": (["--model", "resnet"], "resnet"),
    "unknown optimizer": (["--model", "dense", "--optimizer", "lbfgs"], "lbfgs"),
    "zero epochs": (["--model", "dense", "--epochs", "0"], "--epochs"),
    "negative batch size": (["--model", "dense", "--batch-size", "-1"], "--batch-size"),
    "bogus flag": (["--model", "dense", "--bogus"], "--bogus"),
    "missing data dir": (["--model", "dense", "--data-dir", "/nonexistent/fashion"], "/nonexistent/fashion"),
    "zero subset": (["--model", "dense", "--subset", "0"], "--subset"),
    "non-numeric epochs": (["--model", "dense", "--epochs", "three"], "three"),
    "unknown checkpoint policy": (["--model", "dense", "--checkpoints", "never"], "never"),
    "checkpoints at end with mid-epoch saves": (["--model", "dense", "--checkpoints", "end", "--checkpoint-every", "5"],
                                                "--checkpoint-every"),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN), ids=list(BAD_TRAIN))
def test_bad_train_input_is_exit_2_with_one_error_line(case, tmp_path):
    flags, mentioned = BAD_TRAIN[case]
    workdir = tmp_path / "w"
    code, out, err = run_main(["train", *flags, "--workdir", workdir, "--quiet", "--json"])
    line = assert_one_error_line(code, err)
    assert mentioned in line
    assert out == ""
    assert not (workdir / "checkpoints").exists()


def test_resume_into_a_workdir_of_another_model_is_exit_2(trained):
    workdir, _, _ = trained
    before = (workdir / "config.json").read_text()
    code, out, err = run_main(["train", "--model", "mlp", "--epochs", "1", "--subset", "512", "--workdir", workdir,
                               "--resume", "--quiet"])
    line = assert_one_error_line(code, err)
    assert "dense" in line and "architecture" in line
    assert (workdir / "config.json").read_text() == before


def test_fresh_train_into_a_used_workdir_is_exit_2(trained):
    workdir, _, _ = trained
    code, _, err = run_main(["train", "--model", "dense", "--epochs", "1", "--subset", "512", "--workdir", workdir,
                             "--quiet"])
    assert "--resume" in assert_one_error_line(code, err)


def test_nan_loss_is_exit_2_naming_the_epoch(tmp_path):
    # Plain SGD at 1e9 on a ReLU MLP overflows to NaN in the first epoch (a dense softmax layer or a
    # sigmoid MLP stays finite at this rate: their gradients are bounded).
    code, out, err = run_main(["train", "--model", "mlp", "--activation", "relu", "--optimizer", "sgd",
                               "--learning-rate", "1e9", "--epochs", "1", "--subset", "512",
                               "--workdir", tmp_path / "nan", "--quiet", "--json"])
    line = assert_one_error_line(code, err)
    assert "non-finite" in line and "epoch 1" in line
    assert out == ""


def test_evaluate_an_empty_folder_is_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(["evaluate", "--workdir", tmp_path / "empty"])
    assert "config.json" in assert_one_error_line(code, err)


def test_evaluate_a_corrupt_checkpoint_in_a_real_process_is_exit_2(trained, tmp_path):
    workdir, _, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((workdir / "config.json").read_bytes())
    for name in ("best", "checkpoints"):
        step = broken / name / "1"
        step.mkdir(parents=True)
        (step / "_CHECKPOINT_METADATA").write_text("{ not json")
        (step / "params").mkdir()
        (step / "params" / "junk").write_bytes(b"\x00" * 64)
    proc = run_process(["evaluate", "--workdir", broken, "--split", "val"], cwd=tmp_path)
    line = assert_one_error_line(proc.returncode, proc.stderr)
    assert str(broken) in line
    assert proc.stdout == ""


def test_bogus_flag_in_a_real_process_is_exit_2(tmp_path):
    proc = run_process(["train", "--bogus"], cwd=tmp_path)
    assert "--bogus" in assert_one_error_line(proc.returncode, proc.stderr)
    assert proc.stderr.strip().count("\n") == 0  # no usage block either

"""The command line: in-process through main() for speed,
a few real processes for exit codes and stderr."""

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
from helpers import error_line
from PIL import Image

from fashion_jax import cli
from fashion_jax.config import preset
from fashion_jax.data.dataset import CLASS_NAMES
from fashion_jax.storage.model_files import load_model
from fashion_jax.storage.run_files import load_json
from fashion_jax.storage.run_files import to_dict as config_to_dict
from fashion_jax.viz import plots

TRAIN_KEYS = {
    "model",
    "epochs_run",
    "best_epoch",
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "workdir",
    "seconds",
}
ROOT = Path(__file__).resolve().parents[1]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """main() in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def run_process(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FASHION_JAX_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "fashion_jax.cli", *map(str, argv)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no stdout"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_data):
    """`train --model dense --epochs 1 --subset 512 --json --quiet`, run once for the module."""
    workdir = tmp_path_factory.mktemp("cli") / "dense"
    code, out, err = run_main(
        [
            "train",
            "--model",
            "dense",
            "--epochs",
            "1",
            "--subset",
            "512",
            "--workdir",
            workdir,
            "--json",
            "--quiet",
        ]
    )
    assert code == 0, err
    return workdir, out, err


@pytest.fixture(scope="module")
def images(tmp_path_factory, real_data):
    """Real test images as files: a 28x28 PNG and a .npy (more predict tests: test_predict.py)."""
    folder = tmp_path_factory.mktemp("images")
    x = real_data.test_x
    Image.fromarray(x[0]).save(folder / "a.png")
    np.save(folder / "b.npy", x[1])
    return folder


# ------------------------------------------------------------------ train / evaluate / predict


def test_train_json_summary(trained):
    workdir, out, _ = trained
    summary = last_json(out)
    assert set(summary) >= TRAIN_KEYS
    assert summary["model"] == "dense" and summary["epochs_run"] == 1 and summary["best_epoch"] == 1
    assert summary["workdir"] == str(workdir)
    # 16 RMSprop steps on 512 images reach 0.54 (seed 0): far above chance (0.1), and the test
    # split agrees with the validation split
    assert summary["val_accuracy"] > 0.4
    assert abs(summary["test_accuracy"] - summary["val_accuracy"]) < 0.05
    assert np.isfinite(summary["val_loss"]) and summary["seconds"] > 0
    assert (workdir / "history.jsonl").is_file() and (workdir / "result.json").is_file()
    png = (workdir / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_curves_that_cannot_be_drawn_are_exit_2_and_the_run_stays_saved(
    tmp_path, synthetic_idx_dir, monkeypatch
):
    def refuse(*_args, **_kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(plots, "plot_history", refuse)
    workdir = tmp_path / "run"
    argv = ["train", "--model", "logreg", "--epochs", "1", "--workdir", workdir, "--quiet"]
    code, _, err = run_main([*argv, *synthetic(synthetic_idx_dir)])
    line = error_line(code, err)
    assert "curves.png not written (No space left on device)" in line and "is saved in" in line
    assert json.loads((workdir / "result.json").read_text())["epochs_run"] == 1
    assert not (workdir / "curves.png").exists()


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


@pytest.mark.realdata
def test_checkpoints_at_end_leaves_a_model_that_evaluates_as_trained(tmp_path):
    workdir = tmp_path / "lean"
    code, out, err = run_main(
        [
            "train",
            "--model",
            "dense",
            "--epochs",
            "2",
            "--subset",
            "512",
            "--checkpoints",
            "end",
            "--workdir",
            workdir,
            "--json",
            "--quiet",
        ]
    )
    assert code == 0, err
    summary = last_json(out)
    assert not any((workdir / "checkpoints").glob("[0-9]*")) and [
        p.name for p in (workdir / "best").iterdir() if p.name.isdigit()
    ] == ["2"]
    code, eval_out, err = run_main(["evaluate", "--workdir", workdir, "--split", "test", "--json"])
    assert code == 0, err
    assert last_json(eval_out)["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)


def test_evaluate_test_split(trained):
    workdir, out, _ = trained
    code, eval_out, err = run_main(
        ["evaluate", "--workdir", workdir, "--json"]
    )  # test is the default split
    assert code == 0, err
    got = last_json(eval_out)
    assert got["split"] == "test" and got["n"] == 10000
    assert got["accuracy"] == pytest.approx(last_json(out)["test_accuracy"], abs=1e-6)


def test_predict_png_and_npy_agree_with_the_model(trained, images, real_data):
    workdir, _, _ = trained
    code, out, err = run_main(
        ["predict", "--workdir", workdir, images / "a.png", images / "b.npy", "--json"]
    )
    assert code == 0, err
    rows = last_json(out)["predictions"]
    assert [Path(r["file"]).name for r in rows] == ["a.png", "b.npy"]
    _, model, params = load_model(workdir)
    logits = model.apply({"params": params}, real_data.test_x[:2].astype(np.float32) / 255.0)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    for row, p in zip(rows, probs):
        assert row["label"] == int(p.argmax()) and row["class"] == CLASS_NAMES[row["label"]]
        assert row["probability"] == pytest.approx(float(p.max()), rel=1e-5)


# ------------------------------------------------------------------ data / shapes / xor


@pytest.mark.realdata
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
    assert {
        "perceptron_accuracy",
        "mlp_accuracy",
        "hand_accuracy",
        "mlp_hidden",
        "mlp_predictions",
        "hand_predictions",
    } <= set(got)
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
    "missing data dir": (
        ["--model", "dense", "--data-dir", "/nonexistent/fashion"],
        "/nonexistent/fashion",
    ),
    "zero subset": (["--model", "dense", "--subset", "0"], "--subset"),
    "non-numeric epochs": (["--model", "dense", "--epochs", "three"], "three"),
    "unknown checkpoint policy": (["--model", "dense", "--checkpoints", "never"], "never"),
    "checkpoints at end with mid-epoch saves": (
        ["--model", "dense", "--checkpoints", "end", "--checkpoint-every", "5"],
        "--checkpoint-every",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN), ids=list(BAD_TRAIN))
def test_bad_train_input_is_exit_2_with_one_error_line(case, tmp_path):
    flags, mentioned = BAD_TRAIN[case]
    workdir = tmp_path / "w"
    code, out, err = run_main(["train", *flags, "--workdir", workdir, "--quiet", "--json"])
    line = error_line(code, err)
    assert mentioned in line
    assert out == ""
    assert not (workdir / "checkpoints").exists()


def test_resume_into_a_workdir_of_another_model_is_exit_2(trained):
    workdir, _, _ = trained
    before = (workdir / "config.json").read_text()
    code, out, err = run_main(
        [
            "train",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--subset",
            "512",
            "--workdir",
            workdir,
            "--resume",
            "--quiet",
        ]
    )
    line = error_line(code, err)
    assert "dense" in line and "architecture" in line
    assert (workdir / "config.json").read_text() == before


def test_fresh_train_into_a_used_workdir_is_exit_2(trained):
    workdir, _, _ = trained
    code, _, err = run_main(
        [
            "train",
            "--model",
            "dense",
            "--epochs",
            "1",
            "--subset",
            "512",
            "--workdir",
            workdir,
            "--quiet",
        ]
    )
    assert "--resume" in error_line(code, err)


@pytest.mark.realdata
def test_nan_loss_is_exit_2_naming_the_epoch(tmp_path):
    # Plain SGD at 1e9 on a ReLU MLP overflows to NaN in the first epoch (a dense softmax layer or a
    # sigmoid MLP stays finite at this rate: their gradients are bounded).
    code, out, err = run_main(
        [
            "train",
            "--model",
            "mlp",
            "--activation",
            "relu",
            "--optimizer",
            "sgd",
            "--learning-rate",
            "1e9",
            "--epochs",
            "1",
            "--subset",
            "512",
            "--workdir",
            tmp_path / "nan",
            "--quiet",
            "--json",
        ]
    )
    line = error_line(code, err)
    assert "non-finite" in line and "epoch 1" in line
    assert out == ""


def test_evaluate_an_empty_folder_is_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(["evaluate", "--workdir", tmp_path / "empty"])
    assert "config.json" in error_line(code, err)


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
    line = error_line(proc.returncode, proc.stderr)
    assert str(broken) in line
    assert proc.stdout == ""


def test_bogus_flag_in_a_real_process_is_exit_2(tmp_path):
    proc = run_process(["train", "--bogus"], cwd=tmp_path)
    assert "--bogus" in error_line(proc.returncode, proc.stderr)
    assert proc.stderr.strip().count("\n") == 0  # no usage block either


# ------------------------------------------------------------ on synthetic IDX files (no real data)


def synthetic(folder: Path) -> list[str]:
    return ["--data-dir", str(folder), "--no-verify"]


def steps_in(folder: Path) -> list[int]:
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    )


def test_overwrite_replaces_the_run_and_only_the_runs_files(tmp_path, synthetic_idx_dir):
    workdir = tmp_path / "run"
    first = [
        "train",
        "--model",
        "dense",
        "--epochs",
        "2",
        "--workdir",
        workdir,
        "--quiet",
        "--json",
        *synthetic(synthetic_idx_dir),
    ]
    code, out, err = run_main(first)
    assert code == 0, err
    assert steps_in(workdir / "checkpoints") == [25, 50]  # 800 rows / 32 = 25 steps an epoch
    (workdir / "notes.txt").write_text("mine")
    (workdir / "mine").mkdir()
    (workdir / "mine" / "keep.npy").write_bytes(b"x")
    (workdir / "plots").mkdir()
    code, _, err = run_main(first)
    assert "already holds a run" in error_line(code, err)

    again = [
        "train",
        "--model",
        "dense",
        "--epochs",
        "1",
        "--seed",
        "3",
        "--workdir",
        workdir,
        "--quiet",
        "--json",
        "--overwrite",
        *synthetic(synthetic_idx_dir),
    ]
    code, out, err = run_main(again)
    assert code == 0, err
    assert last_json(out)["epochs_run"] == 1
    assert load_json(workdir / "config.json").seed == 3
    assert steps_in(workdir / "checkpoints") == [25] and steps_in(workdir / "best") == [1]
    assert len((workdir / "history.jsonl").read_text().splitlines()) == 1
    assert json.loads((workdir / "result.json").read_text())["epochs_run"] == 1
    assert (workdir / "notes.txt").read_text() == "mine" and (
        workdir / "mine" / "keep.npy"
    ).is_file()
    assert (workdir / "plots").is_dir()
    assert not [p.name for p in workdir.iterdir() if p.name.endswith(".tmp")]


def test_overwrite_of_a_folder_that_is_not_a_run_deletes_nothing(tmp_path, synthetic_idx_dir):
    workdir = tmp_path / "foreign"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "checkpoints" / "precious.txt").write_text("keep")
    code, _, err = run_main(
        [
            "train",
            "--model",
            "dense",
            "--epochs",
            "1",
            "--workdir",
            workdir,
            "--quiet",
            "--overwrite",
            *synthetic(synthetic_idx_dir),
        ]
    )
    assert "refusing to delete anything" in error_line(code, err)
    assert (workdir / "checkpoints" / "precious.txt").read_text() == "keep"


def test_cv_json_from_the_command_line(synthetic_idx_dir):
    code, out, err = run_main(
        [
            "cv",
            "--folds",
            "4",
            "--subset",
            "400",
            "--batch-size",
            "32",
            "--json",
            *synthetic(synthetic_idx_dir),
        ]
    )
    assert code == 0, err
    got = last_json(out)
    assert got["folds"] == 4 and got["fold_sizes"] == [100] * 4 and len(got["fold_accuracies"]) == 4
    assert got["mean_accuracy"] == pytest.approx(np.mean(got["fold_accuracies"]))
    assert got["mean_accuracy"] > 0.5  # ten learnable synthetic classes; chance is 0.1
    code, text, err = run_main(
        ["cv", "--folds", "4", "--subset", "400", *synthetic(synthetic_idx_dir)]
    )
    assert code == 0 and "logreg 4-fold CV: mean accuracy" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cv", "--folds", "1"], "--folds must be at least 2"),
        (["cv", "--subset", "3", "--folds", "5"], "--subset must be at least --folds"),
        (["cv", "--optimizer", "lion"], "invalid choice: 'lion'"),
        (["cv", "--epochs", "0"], "--epochs must be positive"),
        (["cv", "--preset", "nope"], "invalid choice: 'nope'"),
    ],
)
def test_cv_bad_flags_are_exit_2_with_one_line(argv, message, synthetic_idx_dir):
    code, _, err = run_main([*argv, *synthetic(synthetic_idx_dir)])
    assert message in error_line(code, err)


@pytest.fixture(scope="module")
def synthetic_cnn(tmp_path_factory, synthetic_idx_dir) -> Path:
    workdir = tmp_path_factory.mktemp("synthetic-cnn") / "cnn"
    code, _, err = run_main(
        [
            "train",
            "--model",
            "cnn",
            "--filters",
            "4",
            "8",
            "--hidden",
            "16",
            "--epochs",
            "1",
            "--workdir",
            workdir,
            "--quiet",
            *synthetic(synthetic_idx_dir),
        ]
    )
    assert code == 0, err
    return workdir


def test_plot_json_from_the_command_line(synthetic_cnn, synthetic_idx_dir, tmp_path):
    out_dir = tmp_path / "figs"
    code, out, err = run_main(
        [
            "plot",
            "--workdir",
            synthetic_cnn,
            "--out-dir",
            out_dir,
            "--image",
            "3",
            "--json",
            *synthetic(synthetic_idx_dir),
        ]
    )
    assert code == 0, err
    written = last_json(out)
    assert set(written) == {
        "filters",
        "feature_input",
        "feature_maps_conv0",
        "feature_maps_conv1",
        "confusion",
        "curves",
        "mistakes",
    }
    for path in written.values():
        assert Path(path).parent == out_dir and Path(path).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image", "200"], "image_index 200 out of range: the test set has 200 images"),
        (["--image", "x"], "invalid int value: 'x'"),
    ],
)
def test_plot_bad_flags_are_exit_2_with_one_line(argv, message, synthetic_cnn, synthetic_idx_dir):
    code, _, err = run_main(
        ["plot", "--workdir", synthetic_cnn, *argv, *synthetic(synthetic_idx_dir)]
    )
    assert message in error_line(code, err)


def test_plot_of_a_folder_without_a_model_is_exit_2(tmp_path, synthetic_idx_dir):
    code, _, err = run_main(["plot", "--workdir", tmp_path, *synthetic(synthetic_idx_dir)])
    assert "no config.json" in error_line(code, err)


# ------------------------------------------------------------------ workdirs that are not runs


def odd_workdir(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / kind
    if kind == "file":
        path.write_text("not a folder")
    elif kind == "empty":
        path.mkdir()
    elif kind == "foreign":  # another program's folder, with a config.json of its own
        path.mkdir()
        (path / "config.json").write_text('{"name": "resnet", "layers": 50}')
        (path / "checkpoints").mkdir()
    elif kind == "symlink-loop":
        path.symlink_to(path)
    elif kind == "edited-config":  # a real config.json, edited by hand
        path.mkdir()
        raw = json.loads(json.dumps(config_to_dict(preset("chapter"))))
        raw["epochs"] = "twenty"
        (path / "config.json").write_text(json.dumps(raw))
    return path


ODD_WORKDIRS = [
    (command, kind)
    for command in ("evaluate", "predict", "plot", "train --resume", "train")
    for kind in ("file", "empty", "foreign", "symlink-loop", "edited-config")
    # an empty folder is a fine place for a fresh run, and --resume there starts fresh
    if not (kind == "empty" and command.startswith("train"))
]


@pytest.mark.parametrize(("command", "kind"), ODD_WORKDIRS)
def test_every_command_on_a_workdir_that_is_not_a_run_is_one_line(
    tmp_path, synthetic_idx_dir, kind, command
):
    workdir = odd_workdir(tmp_path, kind)
    image = tmp_path / "x.npy"
    np.save(image, np.zeros((28, 28), np.uint8))
    argv = {
        "evaluate": ["evaluate", "--workdir", workdir],
        "predict": ["predict", "--workdir", workdir, image],
        "plot": ["plot", "--workdir", workdir],
        "train --resume": ["train", "--preset", "chapter", "--resume", "--workdir", workdir],
        "train": ["train", "--preset", "chapter", "--workdir", workdir],
    }[command]
    data = synthetic(synthetic_idx_dir) if command != "predict" else []
    code, _, err = run_main([*argv, *data])
    line = error_line(code, err)
    if kind == "edited-config" and command != "train":  # a fresh train never reads it
        assert "config key 'epochs' must be int, got 'twenty'" in line, line


# ------------------------------------------------------------------ persistent compilation cache

COUNT_CACHE_HITS = (
    "import sys, jax; hits = []; "
    "jax.monitoring.register_event_listener("
    "lambda name, **_: hits.append(1) if name == '/jax/compilation_cache/cache_hits' else None); "
    "from fashion_jax.cli import main; rc = main(sys.argv[1:]); "
    "print('hits', len(hits)); sys.exit(rc)"
)


def cached_run(
    tmp_path: Path, cache_home: Path, *argv: str, xla_flags: str = ""
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["XDG_CACHE_HOME"], env["XLA_FLAGS"] = str(cache_home), xla_flags
    return subprocess.run([sys.executable, "-c", COUNT_CACHE_HITS, *map(str, argv)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip


def hits(proc: subprocess.CompletedProcess) -> int:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.strip().splitlines()[-1].split()[1])


def test_a_second_process_loads_its_programs_from_the_cache_and_a_poisoned_one_is_mended(
    tmp_path, synthetic_idx_dir
):
    cache_home = tmp_path / "cache"
    argv = ["train", "--model", "logreg", "--epochs", "1", "--workdir", tmp_path / "run", "--quiet",
            "--overwrite", *synthetic(synthetic_idx_dir)]  # fmt: skip
    first = hits(cached_run(tmp_path, cache_home, *argv))  # hits only for a program built twice
    entries = [p for p in (cache_home / "fashion_jax").rglob("*") if p.is_file()]
    assert entries, "nothing was written to the cache"
    second = hits(cached_run(tmp_path, cache_home, *argv))
    assert second >= len(entries) > first  # every program the first run compiled is a hit
    assert hits(cached_run(tmp_path, cache_home, *argv, "--no-compile-cache")) == 0
    # JAX's keys cover the compiler's flags: a program compiled under others is never served
    other_flags = "--xla_backend_optimization_level=1"
    assert hits(cached_run(tmp_path, cache_home, *argv, xla_flags=other_flags)) == 0
    entries = [p for p in (cache_home / "fashion_jax").rglob("*") if p.is_file()]
    for entry in entries:  # a damaged cache: the run compiles, says so once, and succeeds
        entry.write_bytes(b"not a compiled program")
    damaged = cached_run(tmp_path, cache_home, *argv)
    hits(damaged)
    said = [line for line in damaged.stderr.splitlines() if "compilation cache" in line]
    assert said == ["warning: compilation cache: an entry could not be read; compiling it again"]
    assert "Traceback" not in damaged.stderr and "warnings.warn" not in damaged.stderr
    # JAX never overwrites an entry, so the damaged ones must go: the next run reads good ones
    mended = cached_run(tmp_path, cache_home, *argv)
    assert hits(mended) == second and "compilation cache" not in mended.stderr


def test_an_unusable_cache_folder_never_fails_a_run(tmp_path):
    (tmp_path / "file").write_text("XDG_CACHE_HOME is a file here")
    done = cached_run(tmp_path, tmp_path / "file", "xor", "--json")
    hits(done)
    assert "warning: compilation cache off:" in done.stderr


# ------------------------------------------------------------------ bad input against bugs


def test_a_value_error_inside_a_jitted_function_is_a_bug_with_its_traceback(trained, monkeypatch):
    """Only FashionJaxError (and OS errors about a user's path) is bad input: a builtin ValueError
    from inside a compiled function is ours, so the user sees where it came from."""
    from fashion_jax.training import evaluate

    def broken(model, params, images, labels, idx, mask):
        raise ValueError("a shape we never expected")

    monkeypatch.setattr(evaluate, "batch_sums", broken)
    code, _, err = run_main(["evaluate", "--workdir", trained[0], "--no-compile-cache"])
    assert code == 1, err
    assert "Traceback" in err and "a shape we never expected" in err
    assert err.strip().splitlines()[-1] == (
        "error: internal error (ValueError); this is a bug in fashion_jax, "
        "please report it with the traceback above"
    )


@pytest.mark.parametrize(
    "argv, cause",
    [
        (["train", "--model", "mlp", "--epochs", "zero"], "--epochs"),
        (["evaluate", "--workdir", "{tmp}/nothing-here"], "nothing-here"),
        (["predict", "--workdir", "{tmp}/nothing-here", "{tmp}/not-an-image.png"], "not-an-image"),
    ],
    ids=["bad-flag", "bad-workdir", "bad-image"],
)
def test_bad_input_at_each_door_is_one_line_naming_it(tmp_path, argv, cause):
    (tmp_path / "not-an-image.png").write_text("plain text")
    code, _, err = run_main([a.format(tmp=tmp_path) for a in argv])
    error_line(code, err, cause)

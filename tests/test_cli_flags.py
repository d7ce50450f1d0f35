"""cli_flags and config_flags: flags generated from the config dataclasses, one per field, each
explained."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from fashion_jax import config as config_lib
from fashion_jax.cli.config_flags import dest, given
from fashion_jax.cli.inputs import train_config
from fashion_jax.cli.parser import CliError, build_parser
from fashion_jax.config import CVOptions, ModelConfig, RunOptions, TrainConfig


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def subparser(name: str) -> argparse.ArgumentParser:
    return subparsers()[name]


def flags_by_dest(p: argparse.ArgumentParser) -> dict[str, list[argparse.Action]]:
    out: dict[str, list[argparse.Action]] = {}
    for action in p._actions:
        out.setdefault(action.dest, []).append(action)
    return out


@pytest.mark.parametrize(
    ("command", "classes"),
    [
        ("train", (ModelConfig, TrainConfig, RunOptions)),
        ("cv", (ModelConfig, TrainConfig, CVOptions)),
    ],
)
def test_every_config_field_has_exactly_one_flag(command, classes):
    actions = flags_by_dest(subparser(command))
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name == "model" and cls is TrainConfig:
                continue  # the nested ModelConfig: its fields have the flags
            assert len(actions.get(dest(f), [])) == 1, f"{cls.__name__}.{f.name}"


def test_every_flag_has_a_help_sentence_and_shows_its_default():
    for name, p in subparsers().items():
        for action in p._actions:
            if action.dest in ("help",) or isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, (
                f"{name} {action.option_strings or action.dest}"
            )
            optional_value = action.option_strings and action.nargs != 0 and not action.required
            if optional_value and not isinstance(action, argparse.BooleanOptionalAction):
                assert "default" in action.help, f"{name} {action.option_strings}"


def test_field_defaults_in_the_help_come_from_the_dataclasses():
    helps = {a.dest: a.help for a in subparser("train")._actions}
    assert (
        "default: 5;" in helps["epochs"]
        and "chapter 20" in helps["epochs"]
        and "fast 4" in helps["epochs"]
    )
    assert "default: 200" in helps["eval_batch_size"]
    assert "per model:" in helps["dropout"] and "cnn 0.4" in helps["dropout"]
    assert "default: unset" in helps["learning_rate"]


def parse_train(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


@pytest.mark.parametrize(
    ("argv", "name", "overrides"),
    [
        (["--preset", "chapter"], "chapter", {}),
        (
            ["--preset", "chapter", "--epochs", "3", "--dropout", "0.1"],
            "chapter",
            {"epochs": 3, "dropout": 0.1},
        ),
        (["--preset", "fast", "--optimizer", "sgd"], "fast", {"optimizer": "sgd"}),
        (
            ["--preset", "fast", "--learning-rate", "0.01", "--schedule", "constant"],
            "fast",
            {"learning_rate": 0.01, "schedule": "constant"},
        ),
        (
            ["--preset", "chapter", "--model", "mlp", "--hidden", "64"],
            "chapter",
            {"model": "mlp", "hidden": 64},
        ),
        (
            ["--preset", "chapter", "--no-restore-best", "--min-delta", "0.01"],
            "chapter",
            {"restore_best": False, "min_delta": 0.01},
        ),
        (
            ["--preset", "chapter", "--filters", "8", "16", "--kernel", "5", "--padding", "valid"],
            "chapter",
            {"filters": (8, 16), "kernel": 5, "padding": "valid"},
        ),
        (
            ["--model", "dense", "--eval-batch-size", "100", "--skip-nonfinite", "3"],
            None,
            {"model": "dense", "eval_batch_size": 100, "skip_nonfinite": 3},
        ),
    ],
)
def test_preset_and_flags_equal_the_python_preset_with_those_overrides(argv, name, overrides):
    assert train_config(parse_train(*argv)) == config_lib.preset(name, **overrides)


def test_run_options_come_from_their_flags():
    args = parse_train(
        "--model", "dense", "--resume", "--checkpoints", "end", "--devices", "2", "--quiet"
    )
    assert RunOptions(**given(args, RunOptions)) == RunOptions(
        resume=True, checkpoints="end", devices=2, quiet=True
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "three"],
        ["train", "--optimizer", "lion"],
        ["train", "--padding", "full"],
        ["train", "--checkpoints", "never"],
        ["cv", "--folds", "x"],
        ["train", "--bogus"],
    ],
)
def test_bad_flags_raise_one_line_cli_errors(argv):
    with pytest.raises(CliError) as err:
        build_parser().parse_args(argv)
    assert "\n" not in str(err.value)


def test_help_imports_no_jax():
    # What keeps --help fast (its time is measured in the bench, not here): JAX is never imported,
    # neither by the top-level --help nor by any command's.
    names = sorted(subparsers())
    code = (
        "import sys, contextlib, io; from fashion_jax.cli import main\n"
        "for argv in [['--help']] + [[name, '--help'] for name in sys.argv[1:]]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        assert main(argv) == 0, argv\n"
        "    assert 'usage:' in out.getvalue(), argv\n"
        "print('jax loaded:', 'jax' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "jax loaded: False"
    assert {"train", "predict", "evaluate"} <= set(names)


def test_every_command_has_a_handler_and_every_handler_a_command():
    # Imported here: this module's other tests check that the parser alone never loads JAX.
    from fashion_jax.cli.dispatch import COMMANDS, load_handler

    assert set(COMMANDS) == set(subparsers())
    for name in COMMANDS:
        assert load_handler(name).__name__ == f"cmd_{name}"

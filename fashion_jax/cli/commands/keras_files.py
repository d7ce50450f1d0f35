"""`fashion-jax import` and `fashion-jax export`: the chapter's Keras files in and out."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import jax

from fashion_jax import config as config_lib
from fashion_jax.cli.config_flags import dest, flag_fields, given
from fashion_jax.cli.parser import CliError
from fashion_jax.config import ModelConfig, TrainConfig
from fashion_jax.files import atomic_write_with
from fashion_jax.interop import keras_h5, keras_io
from fashion_jax.model.optim import make_optimizer
from fashion_jax.model.state import create_train_state, epoch_sums
from fashion_jax.storage.checkpoint import RunCheckpoints
from fashion_jax.storage.model_files import load_model
from fashion_jax.storage.workdir import WorkdirLock, prepare_workdir
from fashion_jax.training import early_stopping as es
from fashion_jax.training.resume import Progress, Saver

FULL_TRAIN_ROWS = 48_000  # data.load_dataset's training split of the 60,000 official images
EXPORT_SUFFIXES = (".weights.h5", ".keras", ".h5")  # longest first: .weights.h5 also ends in .h5


def cmd_import(args: argparse.Namespace) -> dict:
    path, workdir = Path(args.file), Path(args.workdir)
    if args.subset is not None and args.subset < 1:
        raise CliError(f"--subset must be positive, got {args.subset}")
    kind = keras_h5.file_kind(path)
    try:
        config, params = _read(path, kind, args)
    except keras_h5.KerasFileError as err:
        message = str(err)
        raise keras_h5.KerasFileError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None
    rows = min(args.subset or FULL_TRAIN_ROWS, FULL_TRAIN_ROWS)
    start_workdir(workdir, config, params, rows, args.overwrite)
    resume = train_command(workdir, config, args.subset)
    if not args.json:
        print(f"imported {path} ({kind}) as {config.model.name} -> {workdir}")
        print(f"fine-tune with (--epochs may change): {resume}")
    return {"workdir": str(workdir), "model": config.model.name, "format": kind, "resume": resume}


def _read(path: Path, kind: str, args: argparse.Namespace) -> tuple[TrainConfig, dict]:
    """The config (the file's architecture and optimizer, then the typed flags) and params."""
    typed = given(args, ModelConfig)
    if kind == "weights":
        if "model" not in typed:
            raise CliError(
                f"{path} holds weights only; say the architecture with --model "
                f"({', '.join(config_lib.MODEL_DEFAULTS)}) and its flags (--activation, --dropout)"
            )
        fields, weighted, extra = typed, keras_h5.read_weights(path), {}
    else:
        model = keras_h5.read_model(path)
        fields = keras_io.model_fields(model)
        _check_agrees(typed, fields, path)
        weighted = [(layer.name, layer.weights) for layer in model.layers if layer.weights]
        extra = keras_io.optimizer_fields(model.optimizer)
    config = config_lib.validate(
        config_lib.preset(None, **{**fields, **extra, **given(args, TrainConfig)})
    )
    return config, keras_io.params_from_keras(config.model, weighted)


def start_workdir(
    workdir: Path, config: TrainConfig, params: dict, n_train: int, overwrite: bool
) -> None:
    """A training workdir at epoch 0 whose state holds `params`.

    evaluate, predict and plot read it as any run (model_files.load_model falls back to the newest
    full state), and `train --resume` with the same settings and rows fine-tunes from it. The
    optimizer starts afresh: Keras's optimizer state is not carried over.
    """
    steps = -(-n_train // config.batch_size)
    with WorkdirLock(workdir):
        prepare_workdir(workdir, config, resume=False, overwrite=overwrite)
        checkpoints = RunCheckpoints(workdir)
        try:
            saver = Saver(
                checkpoints,
                workdir,
                n_train=n_train,
                batch_size=config.batch_size,
                steps_per_epoch=steps,
                skip_nonfinite=config.skip_nonfinite,
            )
            tx = make_optimizer(config, config.epochs * steps)
            state = create_train_state(jax.device_put(params), tx)
            start = Progress(epoch=0, history=[], stop=es.StopState())
            saver.save_state(0, state, epoch_sums(n_train), start, mid_epoch=False)
            checkpoints.wait()
        finally:
            checkpoints.close()


def _check_agrees(typed: dict[str, Any], fields: dict[str, Any], path: Path) -> None:
    """Model flags are for weights-only files; with a whole model they may only repeat it."""
    for key, value in typed.items():
        value = tuple(value) if isinstance(value, list) else value
        found = fields.get(key, getattr(config_lib.model_config(fields["model"]), key, None))
        if value != found:
            raise CliError(f"--{key.replace('_', '-')} {value} disagrees with {path}: {found}")


def train_command(workdir: Path, config: TrainConfig, subset: int | None) -> str:
    """The `train --resume` line whose flags rebuild exactly `config` (so the resume check
    passes)."""
    args = ["fashion-jax", "train", "--workdir", str(workdir), "--resume"]
    args += ["--model", config.model.name]
    defaults = [
        (config.model, config_lib.model_config(config.model.name)),
        (config, TrainConfig()),
    ]
    for ours, default in defaults:
        for f in flag_fields(type(ours)):
            value = getattr(ours, f.name)
            if f.name == "name" or value == getattr(default, f.name):
                continue
            flag = "--" + dest(f).replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else flag.replace("--", "--no-", 1))
            else:
                args += [flag, *map(str, value if isinstance(value, tuple) else (value,))]
    if subset is not None:
        args += ["--subset", str(subset)]
    return shlex.join(args)


def cmd_export(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    suffix = next((s for s in EXPORT_SUFFIXES if out.name.endswith(s)), None)
    if suffix is None:
        raise CliError(f"{out}: name it .keras or .h5 (whole model) or .weights.h5 (weights only)")
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} exists; pass --overwrite to replace it")
    config, _, params = load_model(args.workdir)
    weights_only = suffix == ".weights.h5"
    model = keras_io.keras_model(config, params, compiled=not weights_only)
    atomic_write_with(out, model.save_weights if weights_only else model.save)
    if not args.json:
        what = "weights of" if weights_only else "Keras model"
        print(f"wrote {out}: {what} {config.model.name} from {args.workdir}")
    return {"out": str(out), "model": config.model.name, "weights_only": weights_only}

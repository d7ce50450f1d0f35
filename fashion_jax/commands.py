"""What each `fashion-jax` command does, and how its outcome reaches the terminal.

`run(args)` calls the command's handler. Bad input (missing or corrupt data, bad flags, foreign
checkpoints, NaN loss) ends with one `error: ...` line on stderr and exit status 2, never a
traceback; an interrupted `train` says how to resume and exits 128 + the signal number.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from absl import logging as absl_logging

from fashion_jax import config as config_lib
from fashion_jax import distributed
from fashion_jax.chapter import shapes
from fashion_jax.chapter.xor import xor_report
from fashion_jax.checkpoint import CheckpointError
from fashion_jax.cli_flags import CONFIG_CLASSES, CliError, given
from fashion_jax.compile import enable_persistent_cache
from fashion_jax.config import ConfigError, CVOptions, RunOptions
from fashion_jax.cv import NonFiniteCVError, cross_validate
from fashion_jax.data import CLASS_NAMES, FashionMNIST, describe, load_dataset, load_split
from fashion_jax.evaluate import evaluate_arrays
from fashion_jax.idx import DataError
from fashion_jax.model_io import load_model
from fashion_jax.plots import plot_all, plot_samples
from fashion_jax.predict import predict_files
from fashion_jax.run import check_options
from fashion_jax.train import NonFiniteLossError, TrainingInterrupted, WorkdirError, fit

EXIT_BAD_INPUT = 2
EXPECTED_ERRORS = (
    CliError,
    ConfigError,
    DataError,
    CheckpointError,
    WorkdirError,
    NonFiniteLossError,
    NonFiniteCVError,
    ValueError,
    OSError,
)


def load_data(args: argparse.Namespace, subset: int | None = None) -> FashionMNIST:
    if subset is not None and subset < 1:
        raise CliError(f"--subset must be positive, got {subset}")
    return load_dataset(args.data_dir, verify=not args.no_verify, subset=subset)


def train_config(args: argparse.Namespace) -> config_lib.TrainConfig:
    """--preset plus the flags the user typed, exactly as `config.preset(name, **flags)`."""
    return config_lib.validate(config_lib.preset(args.preset, **given(args, *CONFIG_CLASSES)))


def cmd_data(args: argparse.Namespace) -> dict:
    ds = load_data(args)
    info = describe(ds)
    png = plot_samples(ds.train_x, ds.train_y, Path(args.out))
    if not args.json:
        print(f"source: {info['source']}")
        for split in ("train", "val", "test"):
            counts = "  ".join(f"{k}={v}" for k, v in info["class_counts"][split].items())
            print(f"{split:5s} {info[split]:6d}  {counts}")
        print(
            "first 10 training labels:",
            [f"{int(y)} {CLASS_NAMES[int(y)]}" for y in ds.train_y[:10]],
        )
        print(f"wrote {png}")
    return {**info, "samples_png": str(png)}


def cmd_train(args: argparse.Namespace) -> dict:
    config = train_config(args)
    options = RunOptions(**given(args, RunOptions))
    distributed.initialize(
        args.coordinator, args.num_processes, args.process_id, cluster=args.cluster
    )
    options = dataclasses.replace(options, quiet=options.quiet or not distributed.is_leader())
    check_options(options, config)  # before the data: a bad combination of flags fails at once
    data = load_data(args, args.subset)
    with GracefulStop() as stop:
        try:
            result = fit(config, data, Path(args.workdir), options, should_stop=stop.requested)
        except TrainingInterrupted as err:
            err.signum = stop.signum
            raise
    if not args.json:
        print(
            f"{result.model}: {result.epochs_run} epochs, best epoch {result.best_epoch}, "
            f"val_accuracy {result.val_accuracy:.4f}, test_accuracy {result.test_accuracy:.4f} "
            f"({result.seconds:.1f}s) -> {result.workdir}"
        )
    return result.summary()


def cmd_evaluate(args: argparse.Namespace) -> dict:
    config, model, params = load_model(args.workdir)
    data = load_data(args)
    x, y = (data.val_x, data.val_y) if args.split == "val" else (data.test_x, data.test_y)
    out = evaluate_arrays(model, params, x, y, config.eval_batch_size)
    if not args.json:
        print(
            f"{config.model.name} on {args.split}: accuracy {out['accuracy']:.4f}, "
            f"loss {out['loss']:.4f}, n {out['n']}"
        )
    return {"split": args.split, "model": config.model.name, **out}


def cmd_predict(args: argparse.Namespace) -> dict:
    rows = predict_files(args.workdir, args.files)
    if not args.json:
        for row in rows:
            print(f"{row['file']}: {row['class']} ({row['probability']:.3f})")
    return {"predictions": rows}


def cmd_cv(args: argparse.Namespace) -> dict:
    config = train_config(args)
    options = dataclasses.replace(CVOptions(), **given(args, CVOptions))
    if options.folds < 2:
        raise CliError(f"--folds must be at least 2, got {options.folds}")
    images, labels = load_split("train", args.data_dir, verify=not args.no_verify)
    if args.subset is not None:
        if args.subset < options.folds:
            raise CliError(f"--subset must be at least --folds, got {args.subset}")
        images, labels = images[: args.subset], labels[: args.subset]
    result = cross_validate(
        config, images, labels, options.folds, shuffle=options.shuffle, seed=config.seed
    )
    out = result.summary()
    if not args.json:
        accs = ", ".join(f"{a:.4f}" for a in out["fold_accuracies"])
        print(
            f"{config.model.name} {options.folds}-fold CV: "
            f"mean accuracy {out['mean_accuracy']:.4f} (folds: {accs}) in {out['seconds']:.2f}s"
        )
    return out


def cmd_shapes(args: argparse.Namespace) -> dict:
    if args.model == "cnn":
        layers = shapes.cnn_layers()
    else:
        padding = int(args.padding) if args.padding.lstrip("-").isdigit() else args.padding
        layers = [
            shapes.LayerSpec(
                "conv",
                features=args.filters,
                kernel=args.kernel,
                stride=args.stride,
                padding=padding,
            )
        ]
        if args.pool:
            layers.append(shapes.LayerSpec("pool", window=args.pool))
    rows = shapes.shape_walk((args.input, args.input, args.channels), layers)
    if not args.json:
        print(shapes.format_walk(rows))
    return {
        "walk": [{"layer": name, "shape": list(shape)} for name, shape in rows],
        "output": list(rows[-1][1]),
    }


def cmd_xor(args: argparse.Namespace) -> dict:
    report = xor_report(seed=args.seed)
    if not args.json:
        print(
            f"single-layer perceptron: best accuracy {report['perceptron_accuracy']:.2f} "
            "(XOR is not linearly separable)"
        )
        hidden, accuracy = report["mlp_hidden"], report["mlp_accuracy"]
        print(f"2-{hidden}-1 MLP trained by jax.grad: accuracy {accuracy:.2f}")
        print(f"hand-set 2-2-1 weights (NAND, OR -> AND): accuracy {report['hand_accuracy']:.2f}")
    return report


def cmd_plot(args: argparse.Namespace) -> dict:
    written = plot_all(
        Path(args.workdir), load_data(args), image_index=args.image, out_dir=args.out_dir
    )
    if not args.json:
        for name, path in written.items():
            print(f"{name}: {path}")
    return written


COMMANDS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "data": cmd_data,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "cv": cmd_cv,
    "shapes": cmd_shapes,
    "xor": cmd_xor,
    "plot": cmd_plot,
}


class GracefulStop:
    """First SIGINT/SIGTERM asks the fit loop to save and stop; a second one exits at once.

    The fit loop checks `requested()` after each compiled call, saves the full state, waits for the
    write, and raises TrainingInterrupted (exit 128 + signum). Exiting at once on the second signal
    is safe: Orbax writes each step to a tmp folder and renames it when done, and every other file
    in the workdir is replaced atomically, so a half-finished save leaves the previous step intact.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum
        name = signal.Signals(signum).name
        note = f"\nstopping after this step ({name}); a second Ctrl-C or signal quits at once\n"
        # os.write, not print: the signal may interrupt a print (tqdm's), and print is not reentrant
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.write(sys.stderr.fileno(), note.encode())

    def __enter__(self) -> GracefulStop:
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def resume_command(argv: list[str] | None) -> str:
    """The command line that continues this run: the same flags, plus --resume, minus
    --overwrite."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--overwrite"]
    return shlex.join(["fashion-jax", *args, *([] if "--resume" in args else ["--resume"])])


def quiet_logs() -> None:
    warning = logging.Formatter("warning: %(message)s")
    plain = [h for h in logging.root.handlers if type(h) is logging.StreamHandler]
    if plain:  # an import before this one (the JAX stack) configured the root logger already
        for handler in plain:
            handler.setFormatter(warning)
    else:
        logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    # Orbax logs the failures of its background save threads with tracebacks; the fit loop turns
    # each into one CheckpointError line, so only a debugging session needs to see them.
    absl_logging.set_verbosity(
        absl_logging.ERROR if os.environ.get("FASHION_JAX_DEBUG") else absl_logging.FATAL
    )


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run the parsed command; the exit status."""
    quiet_logs()
    enable_persistent_cache(not args.no_compile_cache)
    try:
        out = COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except TrainingInterrupted as err:
        hint = f"; resume with: {resume_command(argv)}" if getattr(err, "resumable", True) else ""
        print(f"interrupted: {err}{hint}", file=sys.stderr)
        return 128 + (getattr(err, "signum", None) or signal.SIGINT)
    except EXPECTED_ERRORS as err:
        if os.environ.get("FASHION_JAX_DEBUG"):
            raise
        print(
            f"error: {str(err).splitlines()[0] if str(err) else err.__class__.__name__}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if getattr(args, "json", False):
        print(json.dumps(out, sort_keys=True, default=str))
    return 0

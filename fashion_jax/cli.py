"""`fashion-jax` command line. Every command takes --json: its last stdout line is one JSON object.

Bad input (missing or corrupt data, bad flags, foreign checkpoints, NaN loss) ends with one
`error: ...` line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Callable

EXIT_BAD_INPUT = 2
PRESETS: dict[str, dict[str, Any]] = {
    # The chapter's final setup: CNN, Adam, dropout 0.4, up to 20 epochs, EarlyStopping(patience=2).
    "chapter": {"model": "cnn", "optimizer": "adam", "epochs": 20, "patience": 2, "batch_size": 32},
    # Fastest route to 92% test accuracy on a 2-core CPU (see README, "Presets").
    # Measured test accuracy, seeds 0-3: 0.9233, 0.9221, 0.9196, 0.9237 (Adam 2e-3: 0.9209, 0.9187).
    "fast": {"model": "cnn_fast", "optimizer": "adam", "learning_rate": 3e-3, "epochs": 4, "batch_size": 32,
             "patience": 0, "schedule": "cosine"},
}


class CliError(Exception):
    """Raised for bad flags; printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the whole usage block
        raise CliError(f"{self.prog}: {message}")


def add_common(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    if data:
        p.add_argument("--data-dir", help="folder with the four IDX files (default: $FASHION_JAX_DATA, then system)")
        p.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check (custom IDX data)")


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="fashion-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("data", help="split sizes, class counts and a PNG of the first 10 training images")
    p.add_argument("--out", default="samples.png")
    add_common(p)

    p = sub.add_parser("train", help="train a model; the workdir is the resume point")
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--model")
    p.add_argument("--optimizer")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--hidden", type=int)
    p.add_argument("--activation", choices=["relu", "sigmoid", "tanh"])
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs; 0 disables")
    p.add_argument("--monitor", choices=["val_loss", "val_accuracy"])
    p.add_argument("--schedule", choices=["constant", "cosine"])
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps inside an epoch")
    p.add_argument("--checkpoints", choices=["epoch", "end"], default="epoch",
                   help="epoch: save the state each epoch, resumable (default); end: save the final params only")
    p.add_argument("--skip-nonfinite", type=int, help="skip up to N consecutive non-finite updates")
    p.add_argument("--workdir", default="runs/default")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --workdir")
    p.add_argument("--subset", type=int, help="train on the first N training images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--devices", type=int, help="data-parallel over the first N devices (default: all)")
    p.add_argument("--coordinator", help="HOST:PORT of process 0, for multi-host (or $JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=int, help="number of processes (or $JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, help="this process's index (or $JAX_PROCESS_ID)")
    add_common(p)

    p = sub.add_parser("evaluate", help="restore a workdir's model and evaluate it")
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", choices=["val", "test"], default="test")
    add_common(p)

    p = sub.add_parser("predict", help="classify 28x28 grayscale PNG/JPEG or .npy files")
    p.add_argument("--workdir", required=True)
    p.add_argument("files", nargs="+")
    add_common(p, data=False)

    from fashion_jax import cli_extra
    cli_extra.add_parsers(sub, add_common)
    return parser


def train_config(args: argparse.Namespace):
    from fashion_jax.config import TrainConfig, model_config

    preset = dict(PRESETS.get(args.preset or "", {}))
    pick = lambda name, default=None: getattr(args, name) if getattr(args, name) is not None else preset.get(name, default)
    name = pick("model")
    if name is None:
        raise CliError("train: --model is required (logreg, dense, mlp, cnn) unless --preset is given")
    model = model_config(name, dropout=args.dropout, hidden=args.hidden, activation=args.activation)
    fields = {k: pick(k) for k in ("optimizer", "learning_rate", "epochs", "batch_size", "patience", "monitor",
                                   "schedule", "seed", "checkpoint_every", "skip_nonfinite")}
    return TrainConfig(model=model, **{k: v for k, v in fields.items() if v is not None})


def load_data(args: argparse.Namespace, subset: int | None = None):
    from fashion_jax.data import load_dataset

    if subset is not None and subset < 1:
        raise CliError(f"--subset must be positive, got {subset}")
    return load_dataset(args.data_dir, verify=not args.no_verify, subset=subset)


def cmd_data(args: argparse.Namespace) -> dict:
    from fashion_jax.data import CLASS_NAMES, describe, save_samples_png

    ds = load_data(args)
    info = describe(ds)
    png = save_samples_png(ds.train_x, ds.train_y, Path(args.out))
    if not args.json:
        print(f"source: {info['source']}")
        for split in ("train", "val", "test"):
            print(f"{split:5s} {info[split]:6d}  " + "  ".join(f"{k}={v}" for k, v in info["class_counts"][split].items()))
        print("first 10 training labels:", [f"{int(y)} {CLASS_NAMES[int(y)]}" for y in ds.train_y[:10]])
        print(f"wrote {png}")
    return {**info, "samples_png": str(png)}


def cmd_train(args: argparse.Namespace) -> dict:
    from fashion_jax.train import TrainingInterrupted, fit

    from fashion_jax import distributed
    from fashion_jax.config import validate

    config = validate(train_config(args))
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    data = load_data(args, args.subset)
    with GracefulStop() as stop:
        try:
            result = fit(config, data, Path(args.workdir), resume=args.resume, overwrite=args.overwrite,
                         progress=not args.quiet and distributed.is_leader(), devices=args.devices,
                         should_stop=stop.requested, checkpoints=args.checkpoints)
        except TrainingInterrupted as err:
            err.signum = stop.signum
            raise
    summary = result.summary()
    if not args.json:
        print(f"{result.model}: {result.epochs_run} epochs, best epoch {result.best_epoch}, "
              f"val_accuracy {result.val_accuracy:.4f}, test_accuracy {result.test_accuracy:.4f} "
              f"({result.seconds:.1f}s) -> {result.workdir}")
    return summary


def cmd_evaluate(args: argparse.Namespace) -> dict:
    import jax
    import numpy as np

    from fashion_jax import steps
    from fashion_jax.checkpoint import load_model

    config, model, params = load_model(args.workdir)
    data = load_data(args)
    x, y = (data.val_x, data.val_y) if args.split == "val" else (data.test_x, data.test_y)
    eval_step = steps.make_eval_step(model, config.eval_batch_size)
    out = steps.evaluate(eval_step, params, jax.device_put(x), jax.device_put(y.astype(np.int32)), config.eval_batch_size)
    if not args.json:
        print(f"{config.model.name} on {args.split}: accuracy {out['accuracy']:.4f}, loss {out['loss']:.4f}, n {out['n']}")
    return {"split": args.split, "model": config.model.name, **out}


def cmd_predict(args: argparse.Namespace) -> dict:
    from fashion_jax.predict import predict_files

    rows = predict_files(args.workdir, args.files)
    if not args.json:
        for row in rows:
            print(f"{row['file']}: {row['class']} ({row['probability']:.3f})")
    return {"predictions": rows}


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
        note = f"\nstopping after this step ({signal.Signals(signum).name}); a second Ctrl-C or signal quits at once\n"
        try:  # os.write, not print: the signal may interrupt a print (tqdm's), and print is not reentrant
            os.write(sys.stderr.fileno(), note.encode())
        except (OSError, ValueError, AttributeError):
            pass

    def __enter__(self) -> "GracefulStop":
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def resume_command(argv: list[str] | None) -> str:
    """The command line that continues this run: the same flags, plus --resume, minus --overwrite."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--overwrite"]
    return shlex.join(["fashion-jax", *args, *([] if "--resume" in args else ["--resume"])])


COMMANDS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "data": cmd_data, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict}


def expected_errors() -> tuple[type[BaseException], ...]:
    from fashion_jax.checkpoint import CheckpointError
    from fashion_jax.config import ConfigError
    from fashion_jax.idx import DataError
    from fashion_jax.train import NonFiniteLossError, WorkdirError

    return (CliError, ConfigError, DataError, CheckpointError, WorkdirError, NonFiniteLossError, ValueError)


def quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        from absl import logging as absl_logging
        # Orbax logs the failures of its background save threads with tracebacks; the fit loop turns
        # each into one CheckpointError line, so only a debugging session needs to see them.
        absl_logging.set_verbosity(absl_logging.ERROR if os.environ.get("FASHION_JAX_DEBUG") else absl_logging.FATAL)
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    try:
        args = build_parser().parse_args(argv)
        from fashion_jax import cli_extra
        handler = COMMANDS.get(args.command) or cli_extra.COMMANDS[args.command]
        out = handler(args)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        from fashion_jax.train import TrainingInterrupted
        if isinstance(err, TrainingInterrupted):
            hint = f"; resume with: {resume_command(argv)}" if getattr(err, "resumable", True) else ""
            print(f"interrupted: {err}{hint}", file=sys.stderr)
            return 128 + (getattr(err, "signum", None) or signal.SIGINT)
        if os.environ.get("FASHION_JAX_DEBUG"):
            raise
        if isinstance(err, expected_errors()) or isinstance(err, OSError):
            print(f"error: {str(err).splitlines()[0] if str(err) else err.__class__.__name__}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    if getattr(args, "json", False):
        print(json.dumps(out, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

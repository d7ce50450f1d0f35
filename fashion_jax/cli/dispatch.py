"""What each `fashion-jax` command does, and how its outcome reaches the terminal.

`run(args)` imports the command's handler (COMMANDS: name -> "module:function", so a command loads
only the modules it needs) and calls it. Bad input (missing or corrupt data, bad flags, foreign
checkpoints, NaN loss) ends with one `error: ...` line on stderr and exit status 2, never a
traceback; an interrupted `train` says how to resume and exits 128 + the signal number.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable

from absl import logging as absl_logging

from fashion_jax.runtime.compile import enable_persistent_cache

EXIT_BAD_INPUT = 2
# Adding a command: its handler `cmd_<name>(args) -> dict` in its own module, one line here, and
# its subparser in cli_flags.build_parser.
COMMANDS: dict[str, str] = {
    "data": "fashion_jax.cli.commands.data:cmd_data",
    "train": "fashion_jax.cli.commands.train:cmd_train",
    "evaluate": "fashion_jax.cli.commands.evaluate:cmd_evaluate",
    "predict": "fashion_jax.cli.commands.predict:cmd_predict",
    "cv": "fashion_jax.cli.commands.cv:cmd_cv",
    "shapes": "fashion_jax.cli.commands.chapter:cmd_shapes",
    "xor": "fashion_jax.cli.commands.chapter:cmd_xor",
    "plot": "fashion_jax.cli.commands.plot:cmd_plot",
    "import": "fashion_jax.cli.commands.keras_files:cmd_import",
    "export": "fashion_jax.cli.commands.keras_files:cmd_export",
    "serve": "fashion_jax.cli.commands.serve:cmd_serve",
}
# The errors that mean bad input, by the module that defines each. A class whose module was never
# imported cannot have been raised, so `expected_errors` names only the loaded ones: naming an
# error never imports Orbax or the training loop into a command that does not use them.
EXPECTED_ERRORS: dict[str, tuple[str, ...]] = {
    "builtins": ("ValueError", "OSError"),
    "fashion_jax.cli.parser": ("CliError",),
    "fashion_jax.config": ("ConfigError",),
    "fashion_jax.data.idx": ("DataError",),
    "fashion_jax.storage.checkpoint": ("CheckpointError",),
    "fashion_jax.storage.workdir": ("WorkdirError",),
    "fashion_jax.training.resume": ("NonFiniteLossError",),
    "fashion_jax.training.cv": ("NonFiniteCVError",),
}
INTERRUPTED = ("fashion_jax.training.resume", "TrainingInterrupted")


class PartialFailure(Exception):
    """Raised by a command that did only part of its job (predict: some files were bad). It has
    printed an `error:` line per failure itself; `out` is still its result (printed with --json),
    and the exit status is 2."""

    def __init__(self, out: dict, failures: int) -> None:
        super().__init__(f"{failures} failed")
        self.out = out


def loaded_class(module: str, name: str) -> type | None:
    found = sys.modules.get(module)
    return getattr(found, name) if found is not None else None


def expected_errors() -> tuple[type, ...]:
    """The classes of EXPECTED_ERRORS whose modules this process has imported."""
    classes = (loaded_class(m, n) for m, names in EXPECTED_ERRORS.items() for n in names)
    return tuple(c for c in classes if c is not None)


def load_handler(command: str) -> Callable[[argparse.Namespace], dict]:
    """The command's `cmd_<name>` function, its module imported now."""
    module, name = COMMANDS[command].split(":")
    return getattr(importlib.import_module(module), name)


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
    command = load_handler(args.command)
    quiet_logs()  # after the handler's imports: some of them configure the root logger
    enable_persistent_cache(not args.no_compile_cache)
    status = 0
    try:
        out = command(args)
    except PartialFailure as err:
        out, status = err.out, EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        status = failure_status(err, argv)
        if status is None:
            raise
        return status
    if getattr(args, "json", False):
        print(json.dumps(out, sort_keys=True, default=str))
    return status


def failure_status(err: Exception, argv: list[str] | None) -> int | None:
    """Print the one line an expected failure gets; its exit status, or None for a bug."""
    interrupted = loaded_class(*INTERRUPTED)
    if interrupted is not None and isinstance(err, interrupted):
        hint = f"; resume with: {resume_command(argv)}" if getattr(err, "resumable", True) else ""
        print(f"interrupted: {err}{hint}", file=sys.stderr)
        return 128 + (getattr(err, "signum", None) or signal.SIGINT)
    if not isinstance(err, expected_errors()) or os.environ.get("FASHION_JAX_DEBUG"):
        return None
    print(
        f"error: {str(err).splitlines()[0] if str(err) else err.__class__.__name__}",
        file=sys.stderr,
    )
    return EXIT_BAD_INPUT

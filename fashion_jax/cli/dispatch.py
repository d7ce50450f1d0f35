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
import traceback
from collections.abc import Callable

from absl import logging as absl_logging

from fashion_jax.errors import is_bad_input
from fashion_jax.runtime.compile import enable_persistent_cache, forget_unreadable_entry

EXIT_BAD_INPUT = 2
EXIT_BUG = 1
# Adding a command: its handler `cmd_<name>(args) -> dict` in its own module, one line here, and
# its subparser in parser.build_parser.
COMMANDS: dict[str, str] = {
    "data": "fashion_jax.cli.commands.data:cmd_data",
    "train": "fashion_jax.cli.commands.train:cmd_train",
    "evaluate": "fashion_jax.cli.commands.evaluate:cmd_evaluate",
    "predict": "fashion_jax.cli.commands.predict:cmd_predict",
    "explain": "fashion_jax.cli.commands.explain:cmd_explain",
    "cv": "fashion_jax.cli.commands.cv:cmd_cv",
    "shapes": "fashion_jax.cli.commands.chapter:cmd_shapes",
    "xor": "fashion_jax.cli.commands.chapter:cmd_xor",
    "plot": "fashion_jax.cli.commands.plot:cmd_plot",
    "import": "fashion_jax.cli.commands.keras_files:cmd_import",
    "export": "fashion_jax.cli.commands.keras_files:cmd_export",
    "serve": "fashion_jax.cli.commands.serve:cmd_serve",
}
INTERRUPTED = ("fashion_jax.training.resume", "TrainingInterrupted")


class PartialFailure(Exception):
    """Raised by a command that did only part of its job (predict: some files were bad). It has
    printed an `error:` line per failure itself; `out` is still its result (printed with --json),
    and the exit status is 2."""

    def __init__(self, out: dict, failures: int) -> None:
        super().__init__(f"{failures} failed")
        self.out = out


def per_file_result(
    key: str, rows: list[dict], describe: Callable[[dict], str], as_json: bool
) -> dict:
    """A per-file command's end (predict, explain): an `error:` line per failed file, a line per
    answered one unless --json, and `{key: rows}`, raised as PartialFailure when any file failed."""
    for row in rows:
        if "error" in row:
            print(f"error: {row['file']}: {row['error']}", file=sys.stderr)
        elif not as_json:
            print(describe(row))
    out = {key: rows}
    failures = sum("error" in row for row in rows)
    if failures:
        raise PartialFailure(out, failures)
    return out


def loaded_class(module: str, name: str) -> type | None:
    found = sys.modules.get(module)
    return getattr(found, name) if found is not None else None


def load_handler(command: str) -> Callable[[argparse.Namespace], dict]:
    """The command's `cmd_<name>` function, its module imported now."""
    module, name = COMMANDS[command].split(":")
    return getattr(importlib.import_module(module), name)


def resume_command(argv: list[str] | None) -> str:
    """The command line that continues this run: the same flags, plus --resume, minus
    --overwrite."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--overwrite"]
    return shlex.join(["fashion-jax", *args, *([] if "--resume" in args else ["--resume"])])


class CacheWarningOnce(logging.Filter):
    """JAX warns once per unreadable compilation-cache entry, with a source line, then compiles the
    program again; the entry is deleted so that the compile writes it back (the cache mends
    itself), and the user needs the fact once."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "persistent compilation cache" not in message:
            return True
        unreadable = forget_unreadable_entry(message)
        if self.said:
            return False
        self.said = True
        record.msg, record.args = (
            "compilation cache: an entry could not be read; compiling it again"
            if unreadable
            else "compilation cache: an entry could not be written; the run goes on without it",
            (),
        )
        return True


def quiet_logs() -> None:
    warning = logging.Formatter("warning: %(message)s")
    plain = [h for h in logging.root.handlers if type(h) is logging.StreamHandler]
    if plain:  # an import before this one (the JAX stack) configured the root logger already
        for handler in plain:
            handler.setFormatter(warning)
    else:
        logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    logging.captureWarnings(True)  # Python warnings as log records, so the filter can see them
    logging.getLogger("py.warnings").addFilter(CacheWarningOnce())
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
        if status == EXIT_BAD_INPUT and _joined_other_processes():
            _exit_without_shutdown(status)
        return status
    if getattr(args, "json", False):
        print(json.dumps(out, sort_keys=True, default=str))
    return status


def _joined_other_processes() -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def _exit_without_shutdown(status: int) -> None:
    """Every process of a multi-process run refuses the same bad input and exits; JAX's exit
    handler would then wait at a shutdown barrier for processes already gone, and the coordination
    service aborts the process (SIGABRT) after the one line was printed. Nothing is in flight by
    now (fit closed its checkpoints on the way out), so leave without that handler."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def failure_status(err: Exception, argv: list[str] | None) -> int:
    """Print the one line bad input gets (a bug: its traceback, then one line); the exit status."""
    interrupted = loaded_class(*INTERRUPTED)
    if interrupted is not None and isinstance(err, interrupted):
        hint = f"; resume with: {resume_command(argv)}" if getattr(err, "resumable", True) else ""
        print(f"interrupted: {err}{hint}", file=sys.stderr)
        return 128 + (getattr(err, "signum", None) or signal.SIGINT)
    if not is_bad_input(err) or os.environ.get("FASHION_JAX_DEBUG"):
        traceback.print_exception(err)
        print(
            f"error: internal error ({type(err).__name__}); this is a bug in fashion_jax, "
            "please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_BUG
    print(f"error: {one_line(err)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def one_line(err: BaseException) -> str:
    """The first line of the error's message (its class name when it has none)."""
    text = str(err)
    return text.splitlines()[0] if text.strip() else type(err).__name__

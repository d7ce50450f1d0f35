"""`fashion-jax train`: one `fit` call, stopped cleanly by the first SIGINT/SIGTERM, then the
run's learning curves drawn to WORKDIR/curves.png."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
from pathlib import Path

from fashion_jax.cli.config_flags import given
from fashion_jax.cli.inputs import load_data, train_config
from fashion_jax.config import RunOptions
from fashion_jax.runtime import distributed
from fashion_jax.storage.workdir import WorkdirError
from fashion_jax.training.fit_result import FitResult
from fashion_jax.training.loop import TrainingInterrupted, fit
from fashion_jax.training.run import check_options
from fashion_jax.viz import figures, plots


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


def cmd_train(args: argparse.Namespace) -> dict:
    config = train_config(args)
    options = RunOptions(**given(args, RunOptions))
    distributed.initialize(
        args.coordinator, args.num_processes, args.process_id, cluster=args.cluster
    )
    leader = distributed.is_leader()
    options = dataclasses.replace(options, quiet=options.quiet or not leader)
    check_options(options, config)  # before the data: a bad combination of flags fails at once
    if leader:  # matplotlib's import (~0.3 s of CPU) overlaps the data's decompression and checks
        figures.import_in_background()
    data = load_data(args, args.subset)
    with GracefulStop() as stop:
        try:
            result = fit(config, data, Path(args.workdir), options, should_stop=stop.requested)
        except TrainingInterrupted as err:
            err.signum = stop.signum
            raise
    if leader:
        draw_curves(result)
    if not args.json:
        print(
            f"{result.model}: {result.epochs_run} epochs, best epoch {result.best_epoch}, "
            f"val_accuracy {result.val_accuracy:.4f}, test_accuracy {result.test_accuracy:.4f} "
            f"({result.seconds:.1f}s) -> {result.workdir}"
        )
    return result.summary()


def draw_curves(result: FitResult) -> None:
    """curves.png from the finished run's history; a failure says the run itself is saved."""
    path = Path(result.workdir) / "curves.png"
    try:
        plots.plot_history(result.history, path, title=result.model)
    except OSError as err:
        raise WorkdirError(
            f"{path} not written ({err}); the run finished and is saved in {result.workdir}"
        ) from None

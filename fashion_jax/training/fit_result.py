"""The end of a fit: the params it returns, best/ for `--checkpoints end`, the test metrics and
result.json, as a `FitResult`.

Apart from loop.py, which runs the epochs, because none of this runs per epoch: it is what a
finished (or early-stopped) run leaves behind.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

from fashion_jax.files import atomic_write_json
from fashion_jax.model.state import TrainState
from fashion_jax.runtime import distributed
from fashion_jax.storage import checkpoint as ckpt
from fashion_jax.training import early_stopping as es
from fashion_jax.training.evaluate import evaluate
from fashion_jax.training.resume import Progress
from fashion_jax.training.run import Run


@dataclass
class FitResult:
    """What fit returns; result.json holds its summary()."""

    model: str
    epochs_run: int
    best_epoch: int | None
    val_accuracy: float
    val_loss: float
    test_accuracy: float | None
    test_loss: float | None
    workdir: str
    seconds: float
    compile_seconds: float
    epoch_seconds: list[float]
    stopped_early: bool
    peak_rss_mb: float | None  # None where the OS does not say (Windows)
    processes: int  # how many processes took part (jax.process_count())
    devices: int  # the data-parallel mesh size
    history: list[dict] = field(default_factory=list)
    params: Any = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        # not dataclasses.asdict: it would deep-copy the params (one device program per leaf)
        skip = ("params", "history")
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip
        }


def final_params(run: Run, state: TrainState, progress: Progress) -> tuple[Any, dict | None]:
    """The params fit returns (the best epoch's with restore_best) and their val metrics if
    known."""
    run.checkpoints.wait()
    # The last epoch's params already have their val row; only older best params need a new eval.
    params = state.params
    val = (
        {"loss": progress.history[-1]["val_loss"], "accuracy": progress.history[-1]["val_accuracy"]}
        if progress.history
        else None
    )
    if run.rule.restore_best and progress.stop.best_epoch != len(progress.history) - 1:
        best = run.checkpoints.restore_best(state.params)
        if best is not None:
            params, val = best[0], None
    if run.options.checkpoints == "end":
        _save_params(run.workdir, params, progress, run.rule)
    return params, val


def _save_params(workdir: Path, params: Any, progress: Progress, rule: es.StopRule) -> None:
    """checkpoints="end": the returned params go to best/, where evaluate, predict and load_model
    look."""
    best = progress.stop.best_epoch
    epoch = best + 1 if rule.restore_best and best >= 0 else len(progress.history)
    if epoch < 1:
        return
    final = ckpt.RunCheckpoints(workdir)
    try:
        final.save_best(
            epoch, params, {"epoch": epoch, rule.monitor: progress.history[epoch - 1][rule.monitor]}
        )
        final.wait()
    finally:
        final.close()


def finish(
    run: Run,
    params: Any,
    val: dict,
    progress: Progress,
    compile_seconds: float,
    t_start: float,
) -> FitResult:
    """Test metrics and result.json (atomically) from the params fit returns."""
    config, test = run.config, None
    if run.test is not None:
        test = evaluate(run.eval_step, params, *run.test)
    stop, leader = progress.stop, distributed.is_leader()
    result = FitResult(
        model=config.model.name,
        epochs_run=len(progress.history),
        best_epoch=stop.best_epoch + 1 if stop.best_epoch >= 0 else None,
        val_accuracy=val["accuracy"],
        val_loss=val["loss"],
        test_accuracy=test["accuracy"] if test else None,
        test_loss=test["loss"] if test else None,
        workdir=str(run.workdir),
        seconds=time.perf_counter() - t_start,
        compile_seconds=compile_seconds,
        epoch_seconds=run.epoch_seconds,
        stopped_early=stop.should_stop,
        peak_rss_mb=peak_rss_mb(),
        processes=jax.process_count(),
        devices=run.place.num_devices,
        history=progress.history,
        params=params,
    )
    if leader:
        atomic_write_json(run.workdir / "result.json", result.summary())
    return result


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB; None where unknown (no `resource`: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS, in KiB on Linux and the BSDs
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0

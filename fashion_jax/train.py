"""`fit(config, data, workdir)`: the one fit loop for every model.

The workdir is the resume point. Data order comes from (seed, epoch) and dropout keys from
(seed, global step), and every checkpoint holds the full state (params, optimizer, the epoch's
running sums and position, early stopping, history), so a resumed run replays the same
computation as an uninterrupted one, bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
from tqdm.auto import tqdm

from fashion_jax import checkpoint as ckpt
from fashion_jax import config as config_lib
from fashion_jax import distributed, plots
from fashion_jax import early_stopping as es
from fashion_jax import resume as resume_lib
from fashion_jax import run as run_lib
from fashion_jax.background import in_background
from fashion_jax.batching import padded_order
from fashion_jax.config import RunOptions, TrainConfig
from fashion_jax.data import FashionMNIST
from fashion_jax.evaluate import evaluate
from fashion_jax.files import atomic_write_json
from fashion_jax.history import write_history
from fashion_jax.resume import NonFiniteLossError, Progress, TrainingInterrupted
from fashion_jax.run import Run
from fashion_jax.steps import (
    EpochSums,
    TrainState,
    epoch_sums,
)
from fashion_jax.workdir import WorkdirError, writer_lock

__all__ = ["FitResult", "NonFiniteLossError", "TrainingInterrupted", "WorkdirError", "fit"]


@dataclass
class FitResult:
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
    peak_rss_mb: float
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


def fit(
    config: TrainConfig,
    data: FashionMNIST,
    workdir: str | Path,
    options: RunOptions | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Train `config.model` on `data.train_*`, validating on `data.val_*` each epoch.

    options.checkpoints="epoch" saves the full state at every epoch end (and every
    `checkpoint_every` steps) and the best params when they improve: a killed run resumes. "end"
    writes only the returned params, to best/, once training is over (as Keras's fit writes nothing
    unless asked): for runs so short that the saves would cost more than a rerun. `should_stop` is
    polled after every compiled call; when it turns true the state is saved and TrainingInterrupted
    raised.
    """
    t_start = time.perf_counter()
    options = options or RunOptions()
    config = config_lib.validate(config)
    run_lib.check_options(options, config)
    should_stop = run_lib.stop_everywhere(should_stop or (lambda: False))
    with writer_lock(Path(workdir)):  # one writer per workdir, for the whole run
        run = run_lib.open_run(config, data, Path(workdir), options)
        try:
            state, sums, progress = run_lib.initial_state(run)
            run.board = run_lib.open_board(run, progress.epoch)
            compile_seconds = run_lib.compile_programs(run, state, sums, progress)
            if distributed.is_leader():  # it draws curves.png at the end; the epochs hold no GIL
                plots.import_in_background()
            while progress.unfinished(config.epochs):
                t_epoch = time.perf_counter()
                state, sums = _train_epoch(run, state, sums, progress, should_stop)
                row = _epoch_row(run, state, sums, progress.epoch)
                sums = _record_epoch(run, state, sums, row, progress)
                run.epoch_seconds.append(time.perf_counter() - t_epoch)
                if not options.quiet:
                    tqdm.write(_format_row(row, run.epoch_seconds[-1]))
                if should_stop() and progress.unfinished(config.epochs):
                    _interrupted(run, progress.epoch - 1)
            curves = _draw_curves(run, progress)  # drawn while the saves finish
            params, val = _final_params(run, state, progress)
        finally:
            run.close()
        if val is None:
            val = evaluate(run.eval_step, params, *run.val, config.eval_batch_size)
        return _finish(run, params, val, progress, curves, compile_seconds, t_start)


def _train_epoch(
    run: Run,
    state: TrainState,
    sums: EpochSums,
    progress: Progress,
    should_stop: Callable[[], bool],
) -> tuple[TrainState, EpochSums]:
    """The rest of epoch `progress.epoch`, with mid-epoch saves when asked or when stopping."""
    config, epoch = run.config, progress.epoch
    order = run.place.replicate(padded_order(run.orders.get(epoch), config.batch_size))
    at = int(sums.next_batch)
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=at,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        disable=run.options.quiet,
        leave=False,
        mininterval=0.5,
    )
    for n in run.stepper.plan(at):
        state, sums, _ = run.stepper(n, state, sums, order, *run.train)
        run.host_step, at = run.host_step + n, at + n
        bar.update(n)
        every = config.checkpoint_every
        crossed = every and run.host_step // every != (run.host_step - n) // every
        # At the epoch's last step the epoch-end save covers it (same step number).
        if at < run.steps_per_epoch and (should_stop() or crossed):
            run.saver.save_state(run.host_step, state, sums, progress, mid_epoch=True)
            if should_stop():
                _interrupted(run, epoch)
    bar.close()
    return state, sums


def _epoch_row(run: Run, state: TrainState, sums: EpochSums, epoch: int) -> dict[str, float]:
    """The epoch's history row: training means from the running sums, then the validation pass."""
    resume_lib.check_finite(state, sums, epoch, run.steps_per_epoch, run.config.skip_nonfinite)
    loss_sum, correct, count = jax.device_get((sums.loss_sum, sums.correct, sums.count))
    val = evaluate(run.eval_step, state.params, *run.val, run.config.eval_batch_size)
    count = int(count) or float("nan")  # every batch skipped: no mean to report
    row = {
        "epoch": epoch + 1,
        "loss": float(loss_sum) / count,
        "accuracy": int(correct) / count,
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
    }
    resume_lib.check_epoch_means(row, epoch, run.config.skip_nonfinite)
    return row


def _record_epoch(
    run: Run, state: TrainState, sums: EpochSums, row: dict, progress: Progress
) -> EpochSums:
    """Early stopping, best params, the epoch-end checkpoint and history.jsonl; fresh sums back."""
    epoch, monitor = progress.epoch, run.rule.monitor
    previous_best = progress.stop.best_epoch
    progress.stop = es.update(run.rule, progress.stop, epoch, row)
    progress.history.append(row)
    if progress.stop.best_epoch != previous_best:
        run.saver.save_best(epoch + 1, state, sums, {"epoch": epoch + 1, monitor: row[monitor]})
    progress.epoch += 1
    sums = run.place.replicate(epoch_sums(run.n_train))
    run.saver.save_state(run.host_step, state, sums, progress, mid_epoch=False)
    # after the save is issued: a kill in between leaves history ahead, fixed on resume
    if distributed.is_leader():
        write_history(run.workdir / "history.jsonl", progress.history)
    if run.board is not None:  # the leader's alone
        run.board.write(row, run.host_step)
    return sums


def _final_params(run: Run, state: TrainState, progress: Progress) -> tuple[Any, dict | None]:
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


def _interrupted(run: Run, epoch: int) -> None:
    run.checkpoints.wait()  # the stop is only safe once the state is on disk
    resumable = run.options.checkpoints == "epoch"
    saved = (
        f"the state is saved in {run.workdir}"
        if resumable
        else "nothing was saved (--checkpoints end)"
    )
    err = TrainingInterrupted(f"stopped in epoch {epoch + 1} at step {run.host_step}; {saved}")
    err.workdir, err.step, err.resumable = str(run.workdir), run.host_step, resumable
    raise err


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


def _draw_curves(run: Run, progress: Progress) -> Future | None:
    """curves.png on a helper thread (the leader's): what follows mostly waits or runs in XLA."""
    if not (progress.history and distributed.is_leader()):
        return None
    path, title = run.workdir / "curves.png", run.config.model.name
    return in_background(plots.plot_history, list(progress.history), path, title)


def _format_row(row: dict, seconds: float) -> str:
    return (
        f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
        f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  {seconds:.1f}s"
    )


def _finish(
    run: Run,
    params: Any,
    val: dict,
    progress: Progress,
    curves: Future | None,
    compile_seconds: float,
    t_start: float,
) -> FitResult:
    """Test metrics and result.json (atomically) from the params fit returns, once curves.png is
    written."""
    config, test = run.config, None
    if run.test is not None:
        test = evaluate(run.eval_step, params, *run.test, config.eval_batch_size)
    stop, leader = progress.stop, distributed.is_leader()
    if curves is not None:
        curves.result()  # its errors are fit's
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

"""`fit(config, data, workdir)`: the one fit loop for every model.

The workdir is the resume point. Data order comes from (seed, epoch) and dropout keys from
(seed, global step), and every checkpoint holds the full state (params, optimizer, the epoch's
running sums and position, early stopping, history), so a resumed run replays the same
computation as an uninterrupted one, bit for bit on CPU. One call's setup is run.py's, and what a
finished run leaves (the returned params, result.json, `FitResult`) fit_result.py's. fit draws no
figures, as Keras's fit draws none: `fashion-jax train` draws curves.png from the history after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax
from tqdm.auto import tqdm

from fashion_jax import config as config_lib
from fashion_jax.config import RunOptions, TrainConfig
from fashion_jax.data.batching import padded_order
from fashion_jax.data.dataset import FashionMNIST
from fashion_jax.model.state import EpochSums, TrainState, epoch_sums
from fashion_jax.runtime import distributed
from fashion_jax.storage.run_files import write_history
from fashion_jax.storage.workdir import WorkdirError, writer_lock
from fashion_jax.training import early_stopping as es
from fashion_jax.training import resume as resume_lib
from fashion_jax.training import run as run_lib
from fashion_jax.training.evaluate import evaluate
from fashion_jax.training.fit_result import FitResult, final_params, finish
from fashion_jax.training.resume import NonFiniteLossError, Progress, TrainingInterrupted
from fashion_jax.training.run import Run

__all__ = ["NonFiniteLossError", "TrainingInterrupted", "WorkdirError", "fit"]


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
            params, val = final_params(run, state, progress)
        finally:
            run.close()
        if val is None:
            val = evaluate(run.eval_step, params, *run.val)
        return finish(run, params, val, progress, compile_seconds, t_start)


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
    val = evaluate(run.eval_step, state.params, *run.val)
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


def _format_row(row: dict, seconds: float) -> str:
    return (
        f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
        f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  {seconds:.1f}s"
    )

"""`fit(config, data, workdir)`: the one fit loop for every model.

The workdir is the resume point. Data order comes from (seed, epoch) and dropout keys from
(seed, global step), and every checkpoint holds the full state (params, optimizer, the epoch's
running sums and position, early stopping, history), so a resumed run replays the same
computation as an uninterrupted one, bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from fashion_jax import checkpoint as ckpt
from fashion_jax import config as config_lib
from fashion_jax import distributed, plots
from fashion_jax import early_stopping as es
from fashion_jax import resume as resume_lib
from fashion_jax.batching import EpochOrders, padded_order, warm_epoch_order
from fashion_jax.config import RunOptions, TrainConfig
from fashion_jax.data import FashionMNIST, check_dataset
from fashion_jax.evaluate import EvalStep, evaluate, make_eval_step
from fashion_jax.files import atomic_write_json
from fashion_jax.history import write_history
from fashion_jax.models import build_model, init_params, is_convolutional
from fashion_jax.optim import make_optimizer
from fashion_jax.resume import NonFiniteLossError, Progress, TrainingInterrupted, WorkdirError
from fashion_jax.steps import EpochSums, Stepper, TrainState, create_train_state, epoch_sums, steps_per_call

__all__ = ["FitResult", "NonFiniteLossError", "TrainingInterrupted", "WorkdirError", "fit"]
RUN_FILES = ("config.json", "history.jsonl", "result.json", "curves.png")  # what --overwrite deletes,
RUN_FOLDERS = ("checkpoints", "best")  # with these folders; nothing else in a workdir is touched


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
    history: list[dict] = field(default_factory=list)
    params: Any = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        # not dataclasses.asdict: it would deep-copy the params (one device program per leaf)
        skip = ("params", "history")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


@dataclass
class _Run:
    """What one fit() call holds: settings, device-resident data, programs and checkpoints."""

    config: TrainConfig
    options: RunOptions
    workdir: Path
    place: distributed.Placement
    model: nn.Module
    tx: optax.GradientTransformation
    n_train: int
    steps_per_epoch: int
    train: tuple[jax.Array, jax.Array]
    val: tuple[jax.Array, jax.Array]
    checkpoints: ckpt.RunCheckpoints | resume_lib.BestInMemory
    saver: resume_lib.Saver
    orders: EpochOrders
    rule: es.StopRule
    host_step: int = 0  # mirrors state.step without a device sync per step
    stepper: Stepper | None = None
    eval_step: EvalStep | None = None
    epoch_seconds: list[float] = field(default_factory=list)

    def close(self) -> None:
        self.orders.close()
        self.checkpoints.close()


def fit(config: TrainConfig, data: FashionMNIST, workdir: str | Path, options: RunOptions | None = None, *,
        should_stop: Callable[[], bool] | None = None) -> FitResult:
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
    _check_options(options, config)
    should_stop = _everywhere(should_stop or (lambda: False))
    run = _open_run(config, data, Path(workdir), options)
    try:
        state, sums, progress = _initial_state(run)
        compile_seconds = _compile(run, state, sums, progress)
        while progress.epoch < config.epochs and not progress.stop.should_stop:
            t_epoch = time.perf_counter()
            state, sums = _train_epoch(run, state, sums, progress, should_stop)
            row = _epoch_row(run, state, sums, progress.epoch)
            sums = _record_epoch(run, state, sums, row, progress)
            run.epoch_seconds.append(time.perf_counter() - t_epoch)
            if not options.quiet:
                tqdm.write(_format_row(row, run.epoch_seconds[-1]))
            if should_stop() and progress.epoch < config.epochs and not progress.stop.should_stop:
                _interrupted(run, progress.epoch - 1)
        params, val = _final_params(run, state, progress)
    finally:
        run.close()
    if val is None:
        val = evaluate(run.eval_step, params, *run.val, config.eval_batch_size)
    return _finish(run, data, params, val, progress, compile_seconds, t_start)


def _everywhere(should_stop: Callable[[], bool]) -> Callable[[], bool]:
    # A signal may reach one process only, or each at another step: every process must stop (and
    # save) at the same step, or none. any_process is a collective; every process polls it alike.
    if jax.process_count() == 1:
        return should_stop
    return lambda: distributed.any_process(should_stop())


def _open_run(config: TrainConfig, data: FashionMNIST, workdir: Path, options: RunOptions) -> _Run:
    """Check the data, prepare the workdir, and put the data, the model and the optimizer in place."""
    place = distributed.placement(options.devices, config.batch_size)
    check_dataset(data)
    prepare_workdir(workdir, config, options.resume, options.overwrite)
    n_train = int(data.train_x.shape[0])
    steps_per_epoch = -(-n_train // config.batch_size)
    put = place.replicate
    checkpoints = ckpt.RunCheckpoints(workdir) if options.checkpoints == "epoch" else resume_lib.BestInMemory()
    saver = resume_lib.Saver(checkpoints, workdir, n_train=n_train, batch_size=config.batch_size,
                             steps_per_epoch=steps_per_epoch, skip_nonfinite=config.skip_nonfinite)
    return _Run(config=config, options=options, workdir=workdir, place=place, model=build_model(config.model),
                tx=make_optimizer(config, config.epochs * steps_per_epoch), n_train=n_train,
                steps_per_epoch=steps_per_epoch, train=put((data.train_x, data.train_y.astype(np.int32))),
                val=put((data.val_x, data.val_y.astype(np.int32))), checkpoints=checkpoints, saver=saver,
                orders=EpochOrders(n_train, config.seed, config.epochs), rule=stop_rule(config))


def stop_rule(config: TrainConfig) -> es.StopRule:
    return es.StopRule(monitor=config.monitor, patience=config.patience or None,
                       min_delta=config.min_delta, restore_best=config.restore_best)


def _initial_state(run: _Run) -> tuple[TrainState, EpochSums, Progress]:
    """A fresh state from the seed, or, with resume, the newest intact checkpoint's."""
    put = run.place.replicate
    state = put(create_train_state(init_params(run.model, run.config.seed), run.tx))
    sums = put(epoch_sums(run.n_train))
    progress = Progress(epoch=0, history=[], stop=es.StopState())
    if run.options.resume:
        restored = resume_lib.restore(run.checkpoints, state, sums, n_train=run.n_train,
                                      batch_size=run.config.batch_size, steps_per_epoch=run.steps_per_epoch)
        if restored is not None:
            state, sums, progress = put(restored[0]), put(restored[1]), restored[2]
        if distributed.is_leader():  # history.jsonl may be ahead of its checkpoint; the checkpoint wins
            write_history(run.workdir / "history.jsonl", progress.history)
    run.host_step = int(state.step)
    return state, sums, progress


def _compile(run: _Run, state: TrainState, sums: EpochSums, progress: Progress) -> float:
    """Compile every per-epoch program now, not in epoch 1; returns the seconds it took."""
    t_compile, config = time.perf_counter(), run.config
    warm_epoch_order(run.n_train)
    run.orders.prefetch(progress.epoch)  # drawn on the other core while the steps below compile
    order0 = run.place.replicate(padded_order(np.arange(run.n_train), config.batch_size))
    k = steps_per_call(is_convolutional(run.model), jax.default_backend(), run.steps_per_epoch)
    run.stepper = Stepper(run.model, run.tx, config.seed, config.batch_size, run.steps_per_epoch, k,
                          (state, sums, order0, *run.train), run.place.constrain_batch)
    run.stepper.warm()
    run.eval_step = make_eval_step(run.model, config.eval_batch_size)
    run.eval_step.compiled(state.params, *run.val)
    resume_lib.check_finite(state, sums, progress.epoch, run.steps_per_epoch, config.skip_nonfinite)
    return time.perf_counter() - t_compile


def _train_epoch(run: _Run, state: TrainState, sums: EpochSums, progress: Progress,
                 should_stop: Callable[[], bool]) -> tuple[TrainState, EpochSums]:
    """The rest of epoch `progress.epoch`, with mid-epoch saves when asked or when stopping."""
    config, epoch = run.config, progress.epoch
    order = run.place.replicate(padded_order(run.orders.get(epoch), config.batch_size))
    at = int(sums.next_batch)
    bar = tqdm(total=run.steps_per_epoch, initial=at, desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=run.options.quiet, leave=False, mininterval=0.5)
    for n in run.stepper.plan(at):
        state, sums, _ = run.stepper.compiled(n)(state, sums, order, *run.train)
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


def _epoch_row(run: _Run, state: TrainState, sums: EpochSums, epoch: int) -> dict[str, float]:
    """The epoch's history row: training means from the running sums, then the validation pass."""
    resume_lib.check_finite(state, sums, epoch, run.steps_per_epoch, run.config.skip_nonfinite)
    loss_sum, correct, count = jax.device_get((sums.loss_sum, sums.correct, sums.count))
    val = evaluate(run.eval_step, state.params, *run.val, run.config.eval_batch_size)
    count = int(count) or float("nan")  # every batch skipped: no mean to report
    row = {"epoch": epoch + 1, "loss": float(loss_sum) / count, "accuracy": int(correct) / count,
           "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
    resume_lib.check_epoch_means(row, epoch, run.config.skip_nonfinite)
    return row


def _record_epoch(run: _Run, state: TrainState, sums: EpochSums, row: dict, progress: Progress) -> EpochSums:
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
    if distributed.is_leader():  # after the save is issued: a kill in between leaves history ahead, fixed on resume
        write_history(run.workdir / "history.jsonl", progress.history)
    return sums


def _final_params(run: _Run, state: TrainState, progress: Progress) -> tuple[Any, dict | None]:
    """The params fit returns (the best epoch's with restore_best) and their val metrics if known."""
    run.checkpoints.wait()
    # The last epoch's params already have their val row; only older best params need a new eval.
    params = state.params
    val = {"loss": progress.history[-1]["val_loss"], "accuracy": progress.history[-1]["val_accuracy"]} \
        if progress.history else None
    if run.rule.restore_best and progress.stop.best_epoch != len(progress.history) - 1:
        best = run.checkpoints.restore_best(state.params)
        if best is not None:
            params, val = best[0], None
    if run.options.checkpoints == "end":
        _save_params(run.workdir, params, progress, run.rule)
    return params, val


def _interrupted(run: _Run, epoch: int) -> None:
    run.checkpoints.wait()  # the stop is only safe once the state is on disk
    resumable = run.options.checkpoints == "epoch"
    saved = f"the state is saved in {run.workdir}" if resumable else "nothing was saved (--checkpoints end)"
    err = TrainingInterrupted(f"stopped in epoch {epoch + 1} at step {run.host_step}; {saved}")
    err.workdir, err.step, err.resumable = str(run.workdir), run.host_step, resumable
    raise err


def _check_options(options: RunOptions, config: TrainConfig) -> None:
    if options.checkpoints not in config_lib.CHECKPOINT_POLICIES:
        raise WorkdirError(f"--checkpoints must be one of {', '.join(config_lib.CHECKPOINT_POLICIES)}, "
                           f"got {options.checkpoints!r}")
    if options.checkpoints == "end" and (options.resume or config.checkpoint_every):
        raise WorkdirError("--checkpoints end saves nothing during training, so it cannot be combined with "
                           f"{'--resume' if options.resume else '--checkpoint-every'}")


def _save_params(workdir: Path, params: Any, progress: Progress, rule: es.StopRule) -> None:
    """checkpoints="end": the returned params go to best/, where evaluate, predict and load_model look."""
    best = progress.stop.best_epoch
    epoch = best + 1 if rule.restore_best and best >= 0 else len(progress.history)
    if epoch < 1:
        return
    final = ckpt.RunCheckpoints(workdir)
    try:
        final.save_best(epoch, params, {"epoch": epoch, rule.monitor: progress.history[epoch - 1][rule.monitor]})
        final.wait()
    finally:
        final.close()


def _format_row(row: dict, seconds: float) -> str:
    return (f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  {seconds:.1f}s")


def _finish(run: _Run, data: FashionMNIST, params: Any, val: dict, progress: Progress,
            compile_seconds: float, t_start: float) -> FitResult:
    """Test metrics, curves.png and result.json (atomically) from the params fit returns."""
    config, test = run.config, None
    if data.test_x is not None and len(data.test_x):
        test_x, test_y = run.place.replicate((data.test_x, data.test_y.astype(np.int32)))
        test = evaluate(run.eval_step, params, test_x, test_y, config.eval_batch_size)
    stop, leader = progress.stop, distributed.is_leader()
    if progress.history and leader:
        plots.plot_history(progress.history, run.workdir / "curves.png", title=config.model.name)
    result = FitResult(
        model=config.model.name, epochs_run=len(progress.history),
        best_epoch=stop.best_epoch + 1 if stop.best_epoch >= 0 else None,
        val_accuracy=val["accuracy"], val_loss=val["loss"],
        test_accuracy=test["accuracy"] if test else None, test_loss=test["loss"] if test else None,
        workdir=str(run.workdir), seconds=time.perf_counter() - t_start, compile_seconds=compile_seconds,
        epoch_seconds=run.epoch_seconds, stopped_early=stop.should_stop, peak_rss_mb=peak_rss_mb(),
        history=progress.history, params=params)
    if leader:
        atomic_write_json(run.workdir / "result.json", result.summary())
    return result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def prepare_workdir(workdir: Path, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a previous run unless asked; never delete anything that is not the run's."""
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"{workdir} is a file, not a folder")
    has_run = any((workdir / name).exists() for name in ("config.json", *RUN_FOLDERS))
    if has_run and overwrite:
        _check_ours(workdir)
    elif has_run and not resume:
        raise WorkdirError(f"{workdir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    elif resume:
        resume_lib.check_workdir_config(workdir, config)
    # Multi-process (shared workdir): every process has read the workdir before the leader changes it,
    # and none goes on before the leader is done. Both barriers are no-ops in a single process.
    distributed.barrier("prepare_workdir:checked")
    try:
        if distributed.is_leader():
            if has_run and overwrite:
                for name in RUN_FOLDERS:
                    shutil.rmtree(workdir / name, ignore_errors=True)
                for name in RUN_FILES:
                    (workdir / name).unlink(missing_ok=True)
            workdir.mkdir(parents=True, exist_ok=True)
            config_lib.save_json(config, workdir / "config.json")
    except OSError as err:
        raise WorkdirError(f"{workdir}: cannot write ({err.strerror or err})") from None
    finally:
        distributed.barrier("prepare_workdir:ready")


def _check_ours(workdir: Path) -> None:
    """--overwrite deletes checkpoints/ and best/; only when config.json proves they are ours."""
    try:
        config_lib.load_json(workdir / "config.json")
    except config_lib.ConfigError as err:
        raise WorkdirError(f"{workdir}: not a fashion_jax workdir ({err}); refusing to delete anything in it") from None

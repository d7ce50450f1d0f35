"""`fit(config, data, workdir)`: the one fit loop for every model.

The workdir is the resume point. Data order comes from (seed, epoch) and dropout keys from
(seed, global step), and every checkpoint holds the full state (params, optimizer, the epoch's
running sums and position, early stopping, history), so a resumed run replays the same
computation as an uninterrupted one, bit for bit on CPU.
"""
from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from fashion_jax import checkpoint as ckpt
from fashion_jax import config as config_lib
from fashion_jax import data as data_lib
from fashion_jax import distributed
from fashion_jax import early_stopping as es
from fashion_jax import history as history_lib
from fashion_jax import resume as resume_lib
from fashion_jax import steps
from fashion_jax.config import TrainConfig
from fashion_jax.models import build_model, init_params, is_convolutional
from fashion_jax.optim import make_optimizer
from fashion_jax.resume import NonFiniteLossError, TrainingInterrupted, WorkdirError  # noqa: F401 (API)


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
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("params", "history")}


def stop_rule(config: TrainConfig) -> es.StopRule:
    return es.StopRule(monitor=config.monitor, patience=config.patience or None,
                       min_delta=config.min_delta, restore_best=config.restore_best)


def prepare_workdir(workdir: Path, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a previous run unless asked; never delete anything that is not ours."""
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"{workdir} is a file, not a folder")
    has_run = any((workdir / name).exists() for name in ("config.json", "checkpoints", "best"))
    if has_run and overwrite:
        _check_ours(workdir)
    elif has_run and not resume:
        raise WorkdirError(f"{workdir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    elif resume:
        ckpt.check_workdir_config(workdir, config)
    # Multi-process (shared workdir): every process has read the workdir before the leader changes it,
    # and none goes on before the leader is done. Both barriers are no-ops in a single process.
    distributed.barrier("prepare_workdir:checked")
    try:
        if distributed.is_leader():
            if has_run and overwrite:
                for name in ("checkpoints", "best"):
                    shutil.rmtree(workdir / name, ignore_errors=True)
                for name in ("config.json", "history.jsonl", "result.json", "curves.png"):
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


CHECKPOINT_POLICIES = ("epoch", "end")


def fit(config: TrainConfig, data: data_lib.FashionMNIST, workdir: str | Path, *, resume: bool = False,
        overwrite: bool = False, progress: bool = True, devices: int | None = None,
        should_stop: Callable[[], bool] = lambda: False, checkpoints: str = "epoch") -> FitResult:
    """Train `config.model` on `data.train_*`, validating on `data.val_*` each epoch.

    checkpoints="epoch" saves the full state at every epoch end (and every `checkpoint_every`
    steps) and the best params when they improve: a killed run resumes. "end" writes only the
    returned params, to best/, once training is over (as Keras's fit writes nothing unless asked):
    for runs so short that the saves would cost more than a rerun.
    """
    t_start = time.perf_counter()
    config = config_lib.validate(config)
    _check_policy(checkpoints, config, resume)
    if jax.process_count() > 1:  # a signal may reach one process only, or each at another step:
        local_stop = should_stop  # every process must stop (and save) at the same step, or none
        should_stop = lambda: distributed.any_process(local_stop())  # noqa: E731 (a collective)
    place = distributed.placement(devices, config.batch_size)
    leader = distributed.is_leader()
    workdir = Path(workdir)
    data_lib.check_dataset(data)
    prepare_workdir(workdir, config, resume, overwrite)
    n_train = int(data.train_x.shape[0])
    put = place.replicate
    train_x, train_y = put(data.train_x), put(data.train_y.astype(np.int32))
    val_x, val_y = put(data.val_x), put(data.val_y.astype(np.int32))

    model = build_model(config.model)
    steps_per_epoch = -(-n_train // config.batch_size)
    tx = make_optimizer(config, config.epochs * steps_per_epoch)
    state = put(steps.create_train_state(init_params(model, config.seed), tx))
    acc = put(steps.epoch_accumulator(n_train))
    rule = stop_rule(config)
    pos = resume_lib.Position(epoch=0, history=[], stop=es.StopState())
    policy, checkpoints = checkpoints, (ckpt.RunCheckpoints(workdir) if checkpoints == "epoch"
                                        else resume_lib.BestInMemory())
    saver = resume_lib.Saver(checkpoints, workdir, n_train=n_train, batch_size=config.batch_size,
                             steps_per_epoch=steps_per_epoch, skip_nonfinite=config.skip_nonfinite)
    orders = data_lib.EpochOrders(n_train, config.seed, config.epochs)
    try:
        if resume:
            restored = resume_lib.restore(checkpoints, state, acc, n_train=n_train, batch_size=config.batch_size,
                                          steps_per_epoch=steps_per_epoch)
            if restored is not None:
                state, acc, pos = put(restored[0]), put(restored[1]), restored[2]
            if leader:  # history.jsonl may be ahead of the checkpoint it came with; the checkpoint wins
                history_lib.write_history(workdir / "history.jsonl", pos.history)

        t_compile = time.perf_counter()
        data_lib.warm_epoch_order(n_train)
        orders.prefetch(pos.epoch)  # drawn on the other core while the steps below compile
        order0 = put(steps.padded_order(np.arange(n_train), config.batch_size))
        k = steps.steps_per_call(is_convolutional(model), jax.default_backend(), steps_per_epoch)
        stepper = steps.Stepper(model, tx, config.seed, config.batch_size, steps_per_epoch, k,
                                (state, acc, order0, train_x, train_y), place.constrain_batch)
        stepper.warm()
        eval_step = steps.make_eval_step(model, config.eval_batch_size)
        eval_step.compiled(state.params, val_x, val_y)  # the per-epoch programs compile here, not in epoch 1
        resume_lib.check_finite(state, acc, pos.epoch, steps_per_epoch, config.skip_nonfinite)  # compiles its check
        compile_seconds = time.perf_counter() - t_compile

        epoch_seconds: list[float] = []
        host_step = int(state.step)  # mirrors state.step without a device sync per step
        while pos.epoch < config.epochs and not pos.stop.should_stop:
            t_epoch, epoch = time.perf_counter(), pos.epoch
            order = put(steps.padded_order(orders.get(epoch), config.batch_size))
            at = int(acc["pos"])
            bar = tqdm(total=steps_per_epoch, initial=at, desc=f"epoch {epoch + 1}/{config.epochs}",
                       disable=not progress, leave=False, mininterval=0.5)
            for n in stepper.plan(at):
                state, acc, _ = stepper.compiled(n)(state, acc, order, train_x, train_y)
                host_step, at = host_step + n, at + n
                bar.update(n)
                crossed = config.checkpoint_every and (host_step // config.checkpoint_every
                                                       != (host_step - n) // config.checkpoint_every)
                # At the epoch's last step the epoch-end save below covers it (same step number).
                if at < steps_per_epoch and (should_stop() or crossed):
                    saver.save_state(host_step, state, acc, pos, mid_epoch=True)
                    if should_stop():
                        _interrupted(checkpoints, workdir, epoch, host_step, policy)
            bar.close()
            resume_lib.check_finite(state, acc, epoch, steps_per_epoch, config.skip_nonfinite)
            sums = jax.device_get({k: acc[k] for k in ("loss_sum", "correct", "count")})
            val = steps.evaluate(eval_step, state.params, val_x, val_y, config.eval_batch_size)
            count = int(sums["count"]) or float("nan")  # every batch skipped: no mean to report
            row = {"epoch": epoch + 1, "loss": float(sums["loss_sum"]) / count,
                   "accuracy": int(sums["correct"]) / count,
                   "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
            resume_lib.check_epoch_means(row, epoch, config.skip_nonfinite)
            previous_best = pos.stop.best_epoch
            pos.stop = es.update(rule, pos.stop, epoch, row)
            pos.history.append(row)
            if pos.stop.best_epoch != previous_best:
                saver.save_best(epoch + 1, state, acc, {"epoch": epoch + 1, rule.monitor: row[rule.monitor]})
            pos.epoch += 1
            acc = put(steps.epoch_accumulator(n_train))
            saver.save_state(host_step, state, acc, pos, mid_epoch=False)
            if leader:  # after the save is issued: a kill in between leaves history ahead, fixed on resume
                history_lib.write_history(workdir / "history.jsonl", pos.history)
            epoch_seconds.append(time.perf_counter() - t_epoch)
            if progress:
                tqdm.write(_format_row(row, epoch_seconds[-1]))
            if should_stop() and pos.epoch < config.epochs and not pos.stop.should_stop:
                _interrupted(checkpoints, workdir, epoch, host_step, policy)
        checkpoints.wait()
        # The last epoch's params already have their val row; only older best params need a restore and an eval.
        params, val = state.params, _val_of(pos.history[-1]) if pos.history else None
        if rule.restore_best and pos.stop.best_epoch != len(pos.history) - 1:
            best = checkpoints.restore_best(state.params)
            if best is not None:
                params, val = best[0], None
        if policy == "end":
            _save_params(workdir, params, pos, rule)
    finally:
        orders.close()
        checkpoints.close()
    if val is None:
        val = steps.evaluate(eval_step, params, val_x, val_y, config.eval_batch_size)
    return _finish(config, data, workdir, eval_step, params, val, pos.history, pos.stop, t_start,
                   compile_seconds, epoch_seconds, put)


def _val_of(row: dict) -> dict[str, float]:
    return {"loss": row["val_loss"], "accuracy": row["val_accuracy"]}


def _interrupted(checkpoints: Any, workdir: Path, epoch: int, step: int, policy: str) -> None:
    checkpoints.wait()  # the stop is only safe once the state is on disk
    saved = f"the state is saved in {workdir}" if policy == "epoch" else "nothing was saved (--checkpoints end)"
    err = TrainingInterrupted(f"stopped in epoch {epoch + 1} at step {step}; {saved}")
    err.workdir, err.step, err.resumable = str(workdir), step, policy == "epoch"
    raise err


def _check_policy(policy: str, config: TrainConfig, resume: bool) -> None:
    if policy not in CHECKPOINT_POLICIES:
        raise WorkdirError(f"checkpoints must be one of {', '.join(CHECKPOINT_POLICIES)}, got {policy!r}")
    if policy == "end" and (resume or config.checkpoint_every):
        raise WorkdirError("--checkpoints end saves nothing during training, so it cannot be combined with "
                           f"{'--resume' if resume else '--checkpoint-every'}")


def _save_params(workdir: Path, params: Any, pos: resume_lib.Position, rule: es.StopRule) -> None:
    """checkpoints="end": the returned params go to best/, where evaluate, predict and load_model look."""
    epoch = pos.stop.best_epoch + 1 if rule.restore_best and pos.stop.best_epoch >= 0 else len(pos.history)
    if epoch < 1:
        return
    final = ckpt.RunCheckpoints(workdir)
    try:
        final.save_best(epoch, params, {"epoch": epoch, rule.monitor: pos.history[epoch - 1][rule.monitor]})
        final.wait()
    finally:
        final.close()


def _format_row(row: dict, seconds: float) -> str:
    return (f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  {seconds:.1f}s")


def _finish(config, data, workdir, eval_step, params, val, history, stop, t_start,
            compile_seconds, epoch_seconds, put) -> FitResult:
    test = None
    if data.test_x is not None and len(data.test_x):
        test = steps.evaluate(eval_step, params, put(data.test_x), put(data.test_y.astype(np.int32)),
                              config.eval_batch_size)
    leader = distributed.is_leader()
    if history and leader:
        history_lib.plot_history(history, workdir / "curves.png", title=config.model.name)
    result = FitResult(
        model=config.model.name, epochs_run=len(history),
        best_epoch=stop.best_epoch + 1 if stop.best_epoch >= 0 else None,
        val_accuracy=val["accuracy"], val_loss=val["loss"],
        test_accuracy=test["accuracy"] if test else None, test_loss=test["loss"] if test else None,
        workdir=str(workdir), seconds=time.perf_counter() - t_start, compile_seconds=compile_seconds,
        epoch_seconds=epoch_seconds, stopped_early=stop.should_stop, peak_rss_mb=peak_rss_mb(),
        history=history, params=params)
    if leader:  # atomic, like every file in the workdir: a kill never leaves half a result
        tmp = workdir / "result.json.tmp"
        tmp.write_text(json.dumps(result.summary(), indent=2) + "\n")
        tmp.replace(workdir / "result.json")
    return result

"""One fit() call's setup: what it holds (`Run`), opening it, its first state, and its programs.

train.fit runs the epochs; this module gets everything ready for them: the placement on the
devices, the workdir, the device-resident data, the model and optimizer, the checkpoints, the
initial (or resumed) state, and every program an epoch runs, compiled before the first epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import optax

from fashion_jax import config as config_lib
from fashion_jax.config import RunOptions, TrainConfig
from fashion_jax.data.batching import EpochOrders, padded_order, warm_epoch_order
from fashion_jax.data.dataset import FashionMNIST, check_dataset
from fashion_jax.model.models import build_model, init_fn, is_convolutional
from fashion_jax.model.optim import make_optimizer
from fashion_jax.model.state import EpochSums, TrainState, create_train_state, epoch_sums
from fashion_jax.runtime import distributed
from fashion_jax.runtime.compile import compile_ahead
from fashion_jax.storage import checkpoint as ckpt
from fashion_jax.storage.run_files import write_history
from fashion_jax.storage.workdir import WorkdirError, prepare_workdir
from fashion_jax.training import early_stopping as es
from fashion_jax.training import resume as resume_lib
from fashion_jax.training.evaluate import (
    EvalSplit,
    EvalStep,
    eval_step_for,
    pad_to_common_length,
)
from fashion_jax.training.resume import Progress
from fashion_jax.training.steps import Stepper, steps_per_call
from fashion_jax.training.tensorboard import EpochBoard, check_available


@dataclass
class Run:
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
    val: EvalSplit  # val and test padded to one length: one eval program for both
    test: EvalSplit | None  # evaluated once, at the end
    checkpoints: ckpt.RunCheckpoints | resume_lib.BestInMemory
    saver: resume_lib.Saver
    orders: EpochOrders
    rule: es.StopRule
    host_step: int = 0  # mirrors state.step without a device sync per step
    stepper: Stepper | None = None
    eval_step: EvalStep | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    board: EpochBoard | None = None  # --tensorboard, on the leader

    def close(self) -> None:
        self.orders.close()
        self.checkpoints.close()
        if self.board is not None:
            self.board.close()


def stop_everywhere(should_stop: Callable[[], bool]) -> Callable[[], bool]:
    # A signal may reach one process only, or each at another step: every process must stop (and
    # save) at the same step, or none. any_process is a collective; every process polls it alike.
    if jax.process_count() == 1:
        return should_stop
    return lambda: distributed.any_process(should_stop())


def open_run(config: TrainConfig, data: FashionMNIST, workdir: Path, options: RunOptions) -> Run:
    """Check the data, prepare the workdir, and put the data, the model and the optimizer in
    place."""
    place = distributed.placement(options.devices, config.batch_size)
    check_dataset(data)
    prepare_workdir(workdir, config, options.resume, options.overwrite)
    n_train = int(data.train_x.shape[0])
    steps_per_epoch = -(-n_train // config.batch_size)
    put = place.replicate
    val, test = _eval_splits(data, put)
    checkpoints = (
        ckpt.RunCheckpoints(workdir)
        if options.checkpoints == "epoch"
        else resume_lib.BestInMemory()
    )
    saver = resume_lib.Saver(
        checkpoints,
        workdir,
        n_train=n_train,
        batch_size=config.batch_size,
        steps_per_epoch=steps_per_epoch,
        skip_nonfinite=config.skip_nonfinite,
    )
    return Run(
        config=config,
        options=options,
        workdir=workdir,
        place=place,
        model=build_model(config.model),
        tx=make_optimizer(config, config.epochs * steps_per_epoch),
        n_train=n_train,
        steps_per_epoch=steps_per_epoch,
        train=put((data.train_x, data.train_y.astype(np.int32))),
        val=val,
        test=test,
        checkpoints=checkpoints,
        saver=saver,
        orders=EpochOrders(n_train, config.seed, config.epochs),
        rule=stop_rule(config),
    )


def _eval_splits(data: FashionMNIST, put: Callable) -> tuple[EvalSplit, EvalSplit | None]:
    """The val and (if any) test split on the devices, padded to one length."""
    splits = [(data.val_x, data.val_y.astype(np.int32))]
    if data.test_x is not None and len(data.test_x) > 0:
        splits.append((data.test_x, data.test_y.astype(np.int32)))
    placed = [EvalSplit(*put((s.images, s.labels)), s.n) for s in pad_to_common_length(*splits)]
    return placed[0], placed[1] if len(placed) > 1 else None


def stop_rule(config: TrainConfig) -> es.StopRule:
    return es.StopRule(
        monitor=config.monitor,
        patience=config.patience or None,
        min_delta=config.min_delta,
        restore_best=config.restore_best,
    )


def initial_state(run: Run) -> tuple[TrainState, EpochSums, Progress]:
    """A fresh state from the seed, or, with resume, the newest intact checkpoint's."""
    put = run.place.replicate
    seed = np.int32(run.config.seed)
    # One program for params, optimizer state and step: made op by op, the optimizer's zeros
    # compiled a program per leaf shape (each one traced, lowered and looked up on every start).
    init = lambda s: create_train_state(init_fn(run.model)(s), run.tx)  # noqa: E731
    state = put(compile_ahead(jax.jit(init), seed, tuning="one_shot")(seed))
    sums = put(epoch_sums(run.n_train))
    progress = Progress(epoch=0, history=[], stop=es.StopState())
    if run.options.resume:
        restored = resume_lib.restore(
            run.checkpoints,
            state,
            sums,
            n_train=run.n_train,
            batch_size=run.config.batch_size,
            steps_per_epoch=run.steps_per_epoch,
        )
        if restored is not None:
            state, sums, progress = put(restored[0]), put(restored[1]), restored[2]
        if (
            distributed.is_leader()
        ):  # history.jsonl may be ahead of its checkpoint; the checkpoint wins
            write_history(run.workdir / "history.jsonl", progress.history)
    run.host_step = int(state.step)
    return state, sums, progress


def compile_programs(run: Run, state: TrainState, sums: EpochSums, progress: Progress) -> float:
    """Compile every per-epoch program now, not in epoch 1; returns the seconds it took."""
    t_compile, config = time.perf_counter(), run.config
    warm_epoch_order(run.n_train)
    run.orders.prefetch(progress.epoch)  # drawn on the other core while the steps below compile
    order0 = run.place.replicate(padded_order(np.arange(run.n_train), config.batch_size))
    k = steps_per_call(is_convolutional(run.model), jax.default_backend(), run.steps_per_epoch)
    run.stepper = Stepper(
        run.model,
        run.tx,
        config.seed,
        config.batch_size,
        run.steps_per_epoch,
        k,
        (state, sums, order0, *run.train),
        run.place.constrain_batch,
    )
    run.stepper.warm()
    run.eval_step = eval_step_for(run.model, config.eval_batch_size)
    run.eval_step.compiled(state.params, run.val.images, run.val.labels)
    resume_lib.check_finite(state, sums, progress.epoch, run.steps_per_epoch, config.skip_nonfinite)
    return time.perf_counter() - t_compile


def open_board(run: Run, first_epoch: int) -> EpochBoard | None:
    """The TensorBoard writer with --tensorboard; only the leader writes."""
    if not (run.options.tensorboard and distributed.is_leader()):
        return None
    return EpochBoard(run.workdir, run.config, run.steps_per_epoch, first_epoch)


def check_options(options: RunOptions, config: TrainConfig) -> None:
    if options.tensorboard:
        check_available()
    if options.checkpoints not in config_lib.CHECKPOINT_POLICIES:
        raise WorkdirError(
            f"--checkpoints must be one of {', '.join(config_lib.CHECKPOINT_POLICIES)}, "
            f"got {options.checkpoints!r}"
        )
    if options.checkpoints == "end" and (options.resume or config.checkpoint_every):
        raise WorkdirError(
            "--checkpoints end saves nothing during training, so it cannot be combined with "
            f"{'--resume' if options.resume else '--checkpoint-every'}"
        )

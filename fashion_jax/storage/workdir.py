"""A run's folder as a whole: preparing it, what --overwrite may delete, which settings a resume
may change, and the fingerprint that says two runs left the same bits.

Layout of a workdir (what `fit` writes):
  config.json            the TrainConfig; restores the model without the caller knowing it
  checkpoints/<step>/    latest full states, for --resume (checkpoint.RunCheckpoints)
  best/<epoch>/          params of the best epoch by the monitored metric
  history.jsonl          one row per finished epoch
  result.json, curves.png  written when the run ends
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fashion_jax import config as config_lib
from fashion_jax.config import TrainConfig
from fashion_jax.errors import FashionJaxError
from fashion_jax.runtime import distributed
from fashion_jax.storage import checkpoint as ckpt
from fashion_jax.storage import locking, run_files

# What --overwrite deletes: these files and folders; nothing else in a workdir is touched.
RUN_FILES = ("config.json", "history.jsonl", "result.json", "curves.png", "params.msgpack")
RUN_FOLDERS = ("checkpoints", "best", "tensorboard")
LOCK_FILE = ".lock"  # held by the one process that writes the workdir (WorkdirLock)


class WorkdirError(FashionJaxError, RuntimeError):
    """The workdir cannot be used as asked; the message is one line."""


class WorkdirLock:
    """An exclusive lock on a workdir for the whole life of the one process that writes it.

    locking.try_lock on `workdir/.lock` (flock on POSIX, msvcrt on Windows): the OS drops the lock
    when the process dies, however it dies, so a kill -9 never leaves a stale lock behind. The
    file names the holder (pid, start time) for the refusal message. Readers (evaluate, predict,
    plot) take no lock: checkpoints are renamed into place only when complete, so they always read
    the last committed one.
    """

    def __init__(self, workdir: Path):
        self.workdir, self._fd = Path(workdir), None

    def acquire(self) -> WorkdirLock:
        if self.workdir.exists() and not self.workdir.is_dir():
            raise WorkdirError(f"{self.workdir} is a file, not a folder")
        path = self.workdir / LOCK_FILE
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            fd, locked = locking.try_lock(path)
        except OSError as err:
            raise WorkdirError(f"{self.workdir}: cannot write ({err.strerror or err})") from None
        if not locked:
            holder = locking.read_holder(fd)
            os.close(fd)
            pid, since = (holder + ["?", "?"])[:2]
            message = f"{self.workdir} is in use by process {pid} (since {since})"
            raise WorkdirError(message) from None
        self._fd = fd
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with contextlib.suppress(OSError):  # who holds it, for the refusal message
            locking.write_holder(path, fd, f"{os.getpid()} {stamp}\n")
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the lock
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def writer_lock(workdir: Path) -> Iterator[None]:
    """Hold the workdir lock for the run. In a multi-process run only the leader writes the shared
    files, so only it locks; a refusal reaches every process (a collective), so none is left
    waiting for a leader that has gone."""
    if jax.process_count() == 1:
        with WorkdirLock(workdir):
            yield
        return
    lock, refused = None, None
    if distributed.is_leader():
        try:
            lock = WorkdirLock(workdir).acquire()
        except WorkdirError as err:
            refused = err
    if distributed.any_process(refused is not None):
        raise refused or WorkdirError(f"{workdir} is in use by another run (process 0 was refused)")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def prepare_workdir(workdir: Path, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a previous run unless asked; never delete anything that is not the
    run's."""
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"{workdir} is a file, not a folder")
    has_run = any((workdir / name).exists() for name in ("config.json", *RUN_FOLDERS))
    if has_run and overwrite:
        _check_ours(workdir)
    elif has_run and not resume:
        raise WorkdirError(
            f"{workdir} already holds a run; "
            "pass --resume to continue it or --overwrite to replace it"
        )
    elif resume:
        check_workdir_config(workdir, config)
    # Multi-process (shared workdir): every process has read the workdir before the leader changes
    # it, and none goes on before the leader is done. Both barriers are no-ops in a single process.
    distributed.barrier("prepare_workdir:checked")
    try:
        if distributed.is_leader():
            if has_run and overwrite:
                for name in RUN_FOLDERS:
                    shutil.rmtree(workdir / name, ignore_errors=True)
                for name in RUN_FILES:
                    (workdir / name).unlink(missing_ok=True)
            workdir.mkdir(parents=True, exist_ok=True)
            run_files.save_json(config, workdir / "config.json")
    except OSError as err:
        raise WorkdirError(f"{workdir}: cannot write ({err.strerror or err})") from None
    finally:
        distributed.barrier("prepare_workdir:ready")


def _check_ours(workdir: Path) -> None:
    """--overwrite deletes checkpoints/ and best/; only when config.json proves they are ours."""
    try:
        run_files.load_json(workdir / "config.json")
    except config_lib.ConfigError as err:
        raise WorkdirError(
            f"{workdir}: not a fashion_jax workdir ({err}); refusing to delete anything in it"
        ) from None


# Settings a resume may change: how long to train, how often to save, and how evaluation is batched
# (its default may change between versions, and it only moves val metrics' last bits). Anything else
# would silently make a different run than the one in the checkpoint.
RESUMABLE_CHANGES = ("epochs", "patience", "checkpoint_every", "eval_batch_size")


def check_workdir_config(workdir: Path, config: TrainConfig) -> None:
    """A workdir of another model or other settings is refused before any restore is attempted."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        if (Path(workdir) / "checkpoints").exists():
            raise ckpt.CheckpointError(
                f"{workdir} has checkpoints/ but no config.json; not a fashion_jax workdir"
            )
        return
    saved = run_files.load_json(path)
    if saved.model != config.model:
        raise ckpt.CheckpointMismatch(
            f"{workdir} holds a {saved.model.name!r} run with another architecture; "
            "use another --workdir or --overwrite"
        )
    old, new = run_files.to_dict(saved), run_files.to_dict(config)
    changed = [k for k in new if old.get(k) != new[k] and k not in RESUMABLE_CHANGES]
    if config.schedule == "cosine" and old.get("epochs") != new["epochs"]:
        changed.append("epochs (the cosine schedule spans all epochs)")
    if changed:
        raise ckpt.CheckpointMismatch(
            f"{workdir} was trained with other settings ({', '.join(changed)}); resume "
            "with the same flags, or use another --workdir or --overwrite"
        )


def fingerprint(workdir: str | Path) -> dict[str, Any]:
    """SHA-256 of everything a run leaves that must not depend on interruptions: the best params,
    the newest full state (params, optimizer, counters), history.jsonl and result.json's metrics.
    Two runs are bitwise identical exactly when their fingerprints are equal."""
    workdir = Path(workdir)

    def digest_tree(folder: Path) -> str | None:
        steps = (
            sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit()), reverse=True)
            if folder.is_dir()
            else []
        )
        if not steps:
            return None
        h = hashlib.sha256(str(steps[0]).encode())
        item = next(p for p in (folder / str(steps[0])).iterdir() if p.name in ("state", "params"))
        as_numpy = jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
            ocp.StandardCheckpointHandler().metadata(item).tree,
        )
        with (
            ocp.PyTreeCheckpointer() as reader
        ):  # numpy arrays: no devices, no sharding metadata needed
            tree = reader.restore(item, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            arr = np.asarray(leaf)
            h.update(f"{jax.tree_util.keystr(path)}:{arr.dtype}:{arr.shape}".encode())
            h.update(arr.tobytes())
        return h.hexdigest()

    result_path = workdir / "result.json"
    metrics = None
    if result_path.is_file():
        raw = json.loads(result_path.read_text())
        metrics = {
            k: raw.get(k)
            for k in (
                "epochs_run",
                "best_epoch",
                "val_accuracy",
                "val_loss",
                "test_accuracy",
                "test_loss",
                "stopped_early",
            )
        }
    history = workdir / "history.jsonl"
    return {
        "best": digest_tree(workdir / "best"),
        "latest": digest_tree(workdir / "checkpoints"),
        "history": hashlib.sha256(history.read_bytes()).hexdigest() if history.is_file() else None,
        "result": metrics,
    }

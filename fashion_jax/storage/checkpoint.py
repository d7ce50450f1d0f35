"""Checkpoint storage (Orbax): the latest full states and the best params of a run (weights-only
folders: weights.py).

Storage only: it knows trees, steps and files, never models or training (model_files.py builds
models from what it reads, resume.py decides what a run saves).

Layout of a workdir:
  config.json            the TrainConfig; restores the model without the caller knowing it
  checkpoints/<step>/    latest full states (params, optimizer, counters, early stopping, history)
  best/<epoch>/          params of the best epoch by the monitored metric
  params.msgpack         a copy of best/'s newest params for readers (params_file.py), written
                         once best/ is committed (wait), so predict needs no Orbax; single-
                         process runs only (multi-process readers read best/ itself)
Two managers, because `best_fn` with `max_to_keep` would keep the best N and drop the latest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from fashion_jax.storage import params_file
from fashion_jax.storage.checkpoint_trust import (
    CheckpointError,
    CheckpointMismatch,
    abstract,
    brief,
    check_finite,
    check_tree,
    refuse_symlinks,
)

log = logging.getLogger("fashion_jax")


def _manager(directory: Path, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        read_only=read_only,
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=True,
        # Multi-process: the two managers (checkpoints/, best/) save concurrently (async) and Orbax
        # syncs processes with barriers named by step; without a prefix their barriers collide
        # ("Barrier ... is already ongoing") and the run dies or hangs.
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=directory.name
        ),
    )
    try:
        return ocp.CheckpointManager(directory.absolute(), options=options)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory}: cannot open checkpoints ({brief(err)})") from None


def _json_copy(meta: dict) -> dict:
    # Orbax may serialise in its background thread; the caller keeps mutating its history list.
    return json.loads(json.dumps(meta))


class RunCheckpoints:
    """The latest and best checkpoints of one run, with fallback to the newest intact step.

    Every failure to write (disk full, read-only, vanished workdir) becomes a one-line
    CheckpointError.
    """

    def __init__(self, workdir: Path, read_only: bool = False):
        self.workdir = Path(workdir)
        if not read_only:  # what a killed writer left: probes, and unfinished saves
            # Before the managers exist: Orbax removes unfinished saves too, in the background,
            # and not always before the first restore (seen under load); two removers would race.
            # The writer holds the workdir lock, so nothing else is saving here.
            for folder in (self.workdir / "checkpoints", self.workdir / "best"):
                for pattern in (f"{PROBE_PREFIX}*", f"*{TMP_MARK}*"):
                    for stale in folder.glob(pattern):
                        shutil.rmtree(stale, ignore_errors=True)
            params_file.discard(self.workdir)  # best/ is about to change
        self.latest = _manager(self.workdir / "checkpoints", keep=2, read_only=read_only)
        self.best = _manager(self.workdir / "best", keep=1, read_only=read_only)
        self._best_copy: tuple[int, Any] | None = None  # for params.msgpack, once committed
        # Single-process saves write host copies; a mesh's processes save their device arrays
        # together (Orbax synchronises them inside each save).
        self._host_copies = not read_only and jax.process_count() == 1

    def save_state(self, step: int, tree: Any, meta: dict) -> None:
        self._save(self.latest, step, "state", tree, meta)

    def save_best(self, epoch: int, params: Any, meta: dict) -> None:
        host = self._save(self.best, epoch, "params", params, meta)
        if host is not None:  # single-process runs; multi-process readers use best/ itself
            self._best_copy = (epoch, host)

    def _save(
        self, manager: ocp.CheckpointManager, step: int, key: str, tree: Any, meta: dict
    ) -> Any:
        """Issue the save (Orbax writes in the background); the host copy saved, if any."""
        try:
            _probe_writable(Path(manager.directory))  # a refusing folder fails here, at once
        except Exception as err:
            raise _write_error(manager, err) from None
        if not self._host_copies:
            _orbax_save(manager, step, key, tree, _json_copy(meta))
            return None
        # A host copy: the next train step donates the device buffers. Saved as NumPy arrays, which
        # costs Orbax a third less CPU per save than device arrays (no sharding metadata) and
        # restores anywhere, with no device named in the files; restores place them on the target.
        host = jax.device_get(tree)
        _orbax_save(manager, step, key, host, _json_copy(meta))
        return host

    def restore_state(
        self, target: Any, validate: Callable[[int, Any, dict], None] | None = None
    ) -> tuple[Any, dict, int] | None:
        """(tree, meta, step) of the newest intact full state, or None when there is none yet."""
        return _restore_newest(self.latest, "state", target, validate)

    def restore_best(self, target: Any) -> tuple[Any, dict, int] | None:
        return _restore_newest(self.best, "params", target)

    def prune(self, latest_after: int, best_after: int) -> None:
        """Delete latest steps > latest_after and best epochs > best_after (see resume.restore)."""
        for manager, after in ((self.latest, latest_after), (self.best, best_after)):
            for step in [s for s in manager.all_steps() if s > after]:
                log.warning(
                    "removing %s/%d: newer than the state being resumed; it will be rewritten",
                    manager.directory,
                    step,
                )
                manager.delete(step)

    def wait(self) -> None:
        """Block until every save is committed; then copy the newest best params for readers."""
        for manager in (self.latest, self.best):
            try:
                manager.wait_until_finished()
            except Exception as err:
                raise CheckpointError(
                    f"cannot write checkpoints in {manager.directory}: {brief(err)}"
                ) from None
        if self._best_copy is not None:
            epoch, params = self._best_copy
            self._best_copy = None
            try:
                params_file.write(self.workdir, f"best/{epoch}", params)
            except OSError as err:  # only a cache: readers fall back to best/ itself
                log.warning("%s not written (%s)", self.workdir / params_file.FILE, brief(err))

    def close(self) -> None:
        """Finish pending saves and release threads; never raises (it runs while errors
        propagate)."""
        for manager in (self.latest, self.best):
            try:
                manager.close()
            except Exception as err:
                log.warning("checkpoint in %s not finished (%s)", manager.directory, brief(err))


def _orbax_save(manager: ocp.CheckpointManager, step: int, key: str, tree: Any, meta: dict) -> None:
    try:
        manager.save(
            step,
            args=ocp.args.Composite(
                **{key: ocp.args.StandardSave(tree), "meta": ocp.args.JsonSave(meta)}
            ),
            force=True,
        )
    except Exception as err:  # includes a failure of the previous async save, surfaced here
        raise _write_error(manager, err) from None


def _write_error(manager: ocp.CheckpointManager, err: BaseException) -> CheckpointError:
    return CheckpointError(f"cannot write checkpoints in {manager.directory}: {brief(err)}")


PROBE_PREFIX = ".write-probe-"
TMP_MARK = ".orbax-checkpoint-tmp"  # Orbax writes a step here, then renames it


def _probe_writable(directory: Path) -> None:
    """Make the mkdir Orbax's save starts with, here, in the foreground.

    When Orbax's background save cannot create its tmp folder (read-only or forbidden folder), its
    helper threads wait up to 5 minutes for a signal that never comes and keep the process alive
    after the error. A folder that refuses this mkdir fails now, as one line, before Orbax starts.
    """
    probe = directory / f"{PROBE_PREFIX}{os.getpid()}"
    with contextlib.suppress(FileExistsError):
        probe.mkdir()
    probe.rmdir()


def _restore_newest(
    manager: ocp.CheckpointManager,
    key: str,
    target: Any,
    validate: Callable[[int, Any, dict], None] | None = None,
) -> tuple[Any, dict, int] | None:
    """Newest step that is intact and fits `target`; damaged steps are skipped with a warning.

    A fresh manager lists the steps from disk (after a crash no in-process state is trusted), and
    Orbax never lists an unfinished *.orbax-checkpoint-tmp* folder as a step.
    """
    manager.wait_until_finished()
    failures = []
    for step in sorted(manager.all_steps(), reverse=True):
        path = Path(manager.directory) / str(step)
        try:
            refuse_symlinks(path)
            check_tree(ocp.StandardCheckpointHandler().metadata(path / key).tree, target, f"{path}")
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        key: ocp.args.StandardRestore(abstract(target)),
                        "meta": ocp.args.JsonRestore(),
                    }
                ),
            )
            tree, meta = restored[key], restored["meta"]
            check_tree(ocp.tree.serialize_tree(tree), target, f"{path}")
            check_finite(tree, f"{path}")
            if not isinstance(meta, dict):
                raise CheckpointError(f"{path}: meta is not a JSON object")
            if validate is not None:
                validate(step, tree, meta)
            return tree, dict(meta), step
        except CheckpointMismatch as err:
            raise CheckpointMismatch(f"{path}: {err}") from None
        except CheckpointError as err:
            failures.append(str(err))
        except Exception as err:  # orbax/tensorstore raise many types for damaged files
            failures.append(f"{path}: {brief(err)}")
        log.warning(
            "checkpoint %s is damaged or foreign; trying an older one (%s)", path, failures[-1]
        )
    if failures:
        raise CheckpointError(f"no intact checkpoint in {manager.directory}: {failures[0]}")
    return None


READ_ATTEMPTS = 3


def restore_newest_readonly(directory: Path, key: str, target: Any) -> tuple[Any, dict, int] | None:
    """`_restore_newest` through a read-only manager: readers never write into a run's folder.

    A reader takes no lock, so a trainer may commit a newer step and delete the one being read
    (best/ keeps one) in the middle of the read, or while the manager lists the steps as it opens.
    When the folder's steps changed during a failed open or read, it starts again from the new
    newest step.
    """
    for attempt in range(READ_ATTEMPTS):
        before = _step_names(Path(directory))
        manager = None
        try:
            manager = _manager(Path(directory), keep=1, read_only=True)
            return _restore_newest(manager, key, target)
        except CheckpointError:
            if attempt == READ_ATTEMPTS - 1 or _step_names(Path(directory)) == before:
                raise
        finally:
            if manager is not None:
                manager.close()
    return None


def _step_names(directory: Path) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir() if p.name.isdigit())
    except OSError:
        return []

"""Orbax checkpoints: the latest full state for resume, the best params, weights and whole models.

Layout of a workdir:
  config.json            the TrainConfig; restores the model without the caller knowing it
  checkpoints/<step>/    latest full states (params, optimizer, counters, early stopping, history)
  best/<epoch>/          params of the best epoch by the monitored metric
Two managers, because `best_fn` with `max_to_keep` would keep the best N and drop the latest.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from fashion_jax import config as config_lib
from fashion_jax.config import TrainConfig

log = logging.getLogger("fashion_jax")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted or read; the message is one line."""


def refuse_symlinks(root: Path) -> None:
    """Tensorstore follows symlinked chunk files out of the tree, so a foreign tree with links is refused."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise CheckpointError(f"{os.path.join(dirpath, name)}: symlink inside a checkpoint; refusing to read it")


def abstract(tree: Any) -> Any:
    """Shape/dtype/sharding target for restore; lets a GPU-saved checkpoint land on a CPU-only host."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _manager(directory: Path, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only, enable_async_checkpointing=True)
    try:
        return ocp.CheckpointManager(directory.absolute(), options=options)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory}: cannot open checkpoints ({_brief(err)})") from None


def _brief(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {text[0][:200]}" if text else err.__class__.__name__


class RunCheckpoints:
    """The latest and best checkpoints of one run, with fallback to the newest intact step."""

    def __init__(self, workdir: Path, read_only: bool = False):
        self.workdir = Path(workdir)
        self.latest = _manager(self.workdir / "checkpoints", keep=2, read_only=read_only)
        self.best = _manager(self.workdir / "best", keep=1, read_only=read_only)

    def save_state(self, step: int, tree: Any, meta: dict) -> None:
        self.latest.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)

    def save_best(self, epoch: int, params: Any, meta: dict) -> None:
        self.best.save(epoch, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)), force=True)

    def restore_state(self, target: Any) -> tuple[Any, dict] | None:
        """The newest intact full state, or None when there is none yet."""
        return _restore_newest(self.latest, "state", target)

    def restore_best(self, target: Any) -> tuple[Any, dict] | None:
        return _restore_newest(self.best, "params", target)

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _restore_newest(manager: ocp.CheckpointManager, key: str, target: Any) -> tuple[Any, dict] | None:
    manager.wait_until_finished()
    steps = sorted(manager.all_steps(), reverse=True)
    failures = []
    for step in steps:
        path = Path(manager.directory) / str(step)
        try:
            refuse_symlinks(path)
            restored = manager.restore(step, args=ocp.args.Composite(
                **{key: ocp.args.StandardRestore(abstract(target)), "meta": ocp.args.JsonRestore()}))
            return restored[key], dict(restored["meta"])
        except CheckpointError as err:
            failures.append(str(err))
        except Exception as err:  # orbax/tensorstore raise many types for damaged files
            failures.append(f"{path}: {_brief(err)}")
        log.warning("checkpoint %s is damaged or foreign; trying an older one (%s)", path, failures[-1])
    if failures:
        raise CheckpointError(f"no intact checkpoint in {manager.directory}: {failures[0]}")
    return None


def check_workdir_config(workdir: Path, config: TrainConfig) -> None:
    """A workdir of another model or shape is refused before any restore is attempted."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        return
    saved = config_lib.load_json(path)
    if saved.model != config.model:
        raise CheckpointError(
            f"{workdir} holds a {saved.model.name!r} run with another architecture; use another --workdir or --overwrite")


def save_weights(path: str | os.PathLike, params: Any) -> Path:
    """Weights only (Keras save_weights): params, no config. Load into a known model with load_weights."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, params, force=True)
        ckptr.wait_until_finished()
    return path


def load_weights(path: str | os.PathLike, like: Any) -> Any:
    """Params saved by save_weights, checked against `like` (e.g. freshly initialised params)."""
    path = Path(path).absolute()
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such weights checkpoint")
    refuse_symlinks(path)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(path, abstract(like))
    except Exception as err:
        raise CheckpointError(f"{path}: weights do not fit this model ({_brief(err)})") from None


def save_model(path: str | os.PathLike, config: TrainConfig, params: Any) -> Path:
    """Whole model (Keras save): config JSON plus params; load_model needs nothing else."""
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    config_lib.save_json(config, path / "config.json")
    save_weights(path / "params", params)
    return path


def load_model(path: str | os.PathLike) -> tuple[TrainConfig, Any, Any]:
    """(config, flax module, params) from a save_model folder or a training workdir (its best params)."""
    from fashion_jax.models import build_model, init_params

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such model folder or workdir")
    config = config_lib.load_json(path / "config.json")
    model = build_model(config.model)
    like = init_params(model, config.seed)
    if (path / "params").is_dir():
        return config, model, load_weights(path / "params", like)
    for folder, key in (("best", "params"), ("checkpoints", "state")):
        if (path / folder).is_dir():
            manager = _manager(path / folder, keep=1, read_only=True)
            target = like if key == "params" else None
            restored = _restore_newest(manager, key, target) if target is not None else _restore_params_only(manager, like)
            if restored is not None:
                return config, model, restored[0]
    raise CheckpointError(f"{path}: no saved params (no params/, best/ or checkpoints/)")


def _restore_params_only(manager: ocp.CheckpointManager, like: Any) -> tuple[Any, dict] | None:
    """Params from a full-state checkpoint without knowing the optimizer's state structure."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            refuse_symlinks(Path(manager.directory) / str(step))
            tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
            params = jax.tree.map(lambda ref, x: jax.numpy.asarray(x, ref.dtype).reshape(ref.shape),
                                  like, tree["state"]["params"])
            return params, dict(tree["meta"])
        except Exception as err:
            log.warning("checkpoint step %s unreadable (%s)", step, _brief(err))
    return None

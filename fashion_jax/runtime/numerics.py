"""The one finiteness check, for device pytrees (state, checkpoints) and host values alike."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fashion_jax.runtime.compile import compile_ahead

_FLAG_PROGRAMS: dict[tuple, Any] = {}  # per tree of leaves: compiled once a process


def _finite_flags(leaves: list[jax.Array]) -> jax.Array:
    """One program and one transfer for the whole tree, not one per leaf."""
    key = tuple((x.shape, x.dtype, str(getattr(x, "sharding", ""))) for x in leaves)
    if key not in _FLAG_PROGRAMS:
        flags = jax.jit(lambda xs: jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs]))
        _FLAG_PROGRAMS[key] = compile_ahead(flags, leaves, tuning="hot")
    return _FLAG_PROGRAMS[key](leaves)


def _held_here(x: Any) -> bool:
    """Whether this process holds all of x's values (in one place, or a replica of them)."""
    return not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated


def _local_copy(x: Any) -> Any:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x.addressable_data(0)  # this process's replica of all the values
    return x


def leaf_name(path: tuple) -> str:
    """A pytree key path as "params/conv0/kernel"."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def first_nonfinite(tree: Any) -> str | None:
    """The name (`leaf_name`) of the first floating leaf holding NaN or Inf; None when every
    floating leaf is finite. Integer leaves are never checked."""
    named = [
        (leaf_name(path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    if not named:
        return None
    values = [leaf for _, leaf in named]
    if all(_held_here(v) for v in values):
        # Read on the host (one batched transfer): our trees are small, and a compiled check
        # would cost each command a compile per tree shape at start (docs/SPEED.md).
        host = jax.device_get([_local_copy(v) for v in values])
        flags = np.array([np.all(np.isfinite(v)) for v in host])
    else:  # sharded across processes: one global reduction, so that every process agrees
        flags = np.asarray(_finite_flags(values))
    bad = np.flatnonzero(~flags)
    return named[int(bad[0])][0] if bad.size else None

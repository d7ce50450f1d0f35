"""The one finiteness check, for device pytrees (state, checkpoints) and host values alike."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fashion_jax.runtime.distributed import to_host


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
    # On the host, where every process sees all the values (to_host gathers what spans other
    # processes), so all decide alike: no program compiled per tree shape (docs/SPEED.md).
    flags = np.array([np.all(np.isfinite(v)) for v in to_host([leaf for _, leaf in named])])
    bad = np.flatnonzero(~flags)
    return named[int(bad[0])][0] if bad.size else None

"""What a checkpoint must be before we trust it: its errors, and the checks that every read runs
(no symlinks, the exact leaves, shapes and dtypes of this model, finite values).

checkpoint.py (Orbax storage) and its readers share these; a CheckpointError's message is one line
that names the folder and, where there is one, the cause the user can act on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from fashion_jax.errors import FashionJaxError
from fashion_jax.runtime.numerics import first_nonfinite


class CheckpointError(FashionJaxError, RuntimeError):
    """A checkpoint that cannot be trusted, read or written; the message is one line."""


class CheckpointMismatch(CheckpointError):
    """An intact checkpoint of a run with other settings: older steps would not fit either, so no
    fallback."""


def refuse_symlinks(root: Path) -> None:
    """Tensorstore follows symlinked chunk files out of the tree, so a foreign tree with links is
    refused."""
    if os.path.islink(root):
        raise CheckpointError(f"{root}: checkpoint folder is a symlink; refusing to read it")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if os.path.islink(os.path.join(dirpath, name)):
                link = os.path.join(dirpath, name)
                raise CheckpointError(f"{link}: symlink inside a checkpoint; refusing to read it")


def abstract(tree: Any) -> Any:
    """Shape/dtype/sharding target for restore. Orbax then places each array as the target says
    (this host's devices), not as the checkpoint's sharding metadata says (the writer's devices),
    which is what lets a GPU-saved checkpoint load on a CPU-only host."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


# What the user can act on, wherever Orbax or tensorstore buried it in a long message.
_OS_CAUSES = re.compile(
    r"No space left on device|Read-only file system|Permission denied|Disk quota exceeded|"
    r"No such file or directory|Too many open files"
)


def brief(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    cause = _OS_CAUSES.search(str(err))
    if cause:
        return cause.group(0)
    text = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {text[0][:200]}" if text else err.__class__.__name__


def _flat(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        "/".join(k): (tuple(v.shape), str(v.dtype))
        for k, v in ocp.tree.to_flat_dict(tree).items()
        if hasattr(v, "shape")
    }


def check_tree(found: Any, expected: Any, what: str) -> None:
    """Same leaves, shapes and dtypes, or CheckpointError naming the first difference.

    Orbax refuses other shapes but silently casts other dtypes; a checkpoint that is not exactly
    this model's is garbage to us, so both are refused before (and after) anything is read.
    """
    have, want = _flat(found), _flat(ocp.tree.serialize_tree(expected))
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            show = lambda v: "missing" if v is None else f"{v[1]}{list(v[0])}"
            raise CheckpointError(
                f"{what}: {key} is {show(have.get(key))} in the checkpoint, "
                f"this model needs {show(want.get(key))}{_why(key, have.get(key), want.get(key))}"
            )


def _why(key: str, have: Any, want: Any) -> str:
    """The one known cause of a transposed kernel: dense and logreg runs saved before 2026-12-07
    stored theirs as (classes, pixels), a layout tuned for XLA:CPU that was dropped then."""
    if have is None or want is None or not key.endswith("dense/kernel"):
        return ""
    if len(want[0]) != 2 or want[0][0] != 784 or tuple(have[0]) != tuple(want[0])[::-1]:
        return ""
    return (
        " (a run saved before 2026-12-07 by the old (classes, pixels) layout of dense and logreg; "
        "retrain it, or export it to Keras with that older fashion_jax and import the file)"
    )


def check_finite(tree: Any, what: str) -> None:
    # fit() never saves a non-finite state, so NaN/Inf in a checkpoint means damage or forgery.
    bad = first_nonfinite(tree)
    if bad is not None:
        raise CheckpointError(f"{what}: {bad} holds NaN or Inf")

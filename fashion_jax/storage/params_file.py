"""A copy of the stored params in one msgpack file, so readers start without importing Orbax.

Orbax's folders stay the record (resume, fallback). `params.msgpack` beside them is a cache for
readers (predict, evaluate, serve): importing Orbax alone costs about half a second. The file
names the folder it copies (`best/<epoch>` or `params`) and holds a SHA-256 of that folder's
files and one of its own payload. A reader uses it only when the folder is still byte for byte
what was copied and the payload is intact and fits the model; otherwise it reads the folder with
Orbax, as before this file existed. A writer deletes it before touching the folder it copies
(`discard`) and writes it, atomically, only after that folder is committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization, traverse_util

from fashion_jax.files import atomic_write_with

log = logging.getLogger("fashion_jax")
FILE = "params.msgpack"
FORMAT = 1


def folder_digest(folder: Path) -> str | None:
    """SHA-256 over the relative names and bytes of every file under `folder`; None when it is
    missing, unreadable, or holds a symlink (Orbax's reader refuses those; so must the copy)."""
    digest = hashlib.sha256()
    try:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(dirs + files):
                if os.path.islink(os.path.join(root, name)):
                    return None
            for name in sorted(files):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, folder).encode() + b"\0")
                with open(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
    except OSError:
        return None
    return digest.hexdigest() if folder.is_dir() else None


def write(owner: Path, source: str, params: Any) -> Path | None:
    """Copy host `params` into `owner/params.msgpack`, tied to the committed folder
    `owner/source`; None (and nothing written) when that folder cannot be fingerprinted."""
    fingerprint = folder_digest(owner / source)
    if fingerprint is None:
        return None
    payload = serialization.msgpack_serialize(
        {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
    )
    record = {
        "format": FORMAT,
        "source": source,
        "folder_sha256": fingerprint,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload": payload,
    }
    data = serialization.msgpack_serialize(record)
    return atomic_write_with(owner / FILE, lambda tmp: tmp.write_bytes(data))


def discard(owner: Path) -> None:
    """Remove the copy before its folder changes. Tidiness only: a copy whose folder changed is
    never used anyway (its fingerprint no longer matches), so a failure here is ignored."""
    with contextlib.suppress(OSError):
        (owner / FILE).unlink(missing_ok=True)


def read(owner: Path, source: str, like: Any) -> dict | None:
    """The params copied from `owner/source`, as host arrays shaped like `like` (arrays or
    ShapeDtypeStructs); None when there is no usable copy (absent, stale, damaged: a damaged one
    is one warning line), so the caller reads the folder itself."""
    path = owner / FILE
    if not path.is_file():
        return None
    try:
        params, problem = _unpack(serialization.msgpack_restore(path.read_bytes()), owner, source)
        problem = problem or _shape_problem(params, like)
    except Exception as err:  # msgpack raises many types for damaged bytes
        params, problem = None, f"unreadable ({type(err).__name__})"
    if problem == "stale":
        return None
    if problem:
        log.warning("%s is damaged (%s); reading %s instead", path, problem, owner / source)
        return None
    return params


def _unpack(record: Any, owner: Path, source: str) -> tuple[dict | None, str | None]:
    """(params, None), or (None, what is wrong): "stale" when the copy is of another folder or
    the folder changed since, a damage otherwise."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None, "unknown format"
    if record.get("source") != source or record.get("folder_sha256") != folder_digest(
        owner / source
    ):
        return None, "stale"
    payload = record.get("payload")
    if not isinstance(payload, bytes):
        return None, "no payload"
    if hashlib.sha256(payload).hexdigest() != record.get("payload_sha256"):
        return None, "checksum mismatch"
    flat = serialization.msgpack_restore(payload)
    return traverse_util.unflatten_dict(flat, sep="/"), None


def _shape_problem(params: dict, like: Any) -> str | None:
    """The first leaf whose name, shape or dtype differs from `like`'s, or a non-finite one."""
    have = traverse_util.flatten_dict(params, sep="/")
    want = traverse_util.flatten_dict(like, sep="/")
    for key in sorted(set(have) | set(want)):
        a, b = have.get(key), want.get(key)
        if a is None or b is None or a.shape != tuple(b.shape) or a.dtype != b.dtype:
            return f"{key} does not fit this model"
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            return f"{key} holds NaN or Inf"
    return None

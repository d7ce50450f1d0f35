"""The one way fashion_jax writes a file: atomically, so a crash never leaves half of one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temporary sibling, flush it to disk, then rename it over `path`.

    Readers see the old file or the new one, never a mix, even if the process is killed mid-write.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None:  # write, flush and fsync errors name no file: a full disk, say
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    return path


def atomic_write_json(path: str | os.PathLike, payload: Any, **dumps: Any) -> Path:
    """`payload` as indented JSON (extra json.dumps arguments pass through), written atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2, **dumps) + "\n")


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Let `write(tmp)` create the file at a temporary sibling, flush it to disk, then rename it
    over `path`; the sibling is removed if anything fails.

    For writers that own their file format (Keras's save): the sibling's name ends as `path`'s
    does, because such writers choose the format by the name's ending.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

"""The one way fashion_jax writes a file: atomically, so a crash never leaves half of one."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def user_cache_dir() -> Path:
    """fashion_jax's user cache folder: $XDG_CACHE_HOME/fashion_jax, else ~/.cache/fashion_jax."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fashion_jax"


def make_writable_folder(folder: str | os.PathLike) -> Path:
    """Create `folder` if need be and prove that a file can be written there; OSError if not."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".probe-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
    return folder


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temporary sibling, flush it to disk, then rename it over `path`.

    Readers see the old file or the new one, never a mix, even if the process is killed mid-write.
    """
    path = Path(path)
    return _replace(path, path.with_name(f"{path.name}.tmp"), lambda tmp: tmp.write_text(text))


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
    return _replace(path, path.with_name(f".tmp-{os.getpid()}-{path.name}"), write)


def _replace(path: Path, tmp: Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)`, fsync it, rename it over `path`; the temporary never outlives the call."""
    try:
        with _naming(path):
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Write, flush and fsync errors name no file (a full disk, say): give them `path`, so that
    they read as an error about the user's place (errors.is_bad_input), not as a bug."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise

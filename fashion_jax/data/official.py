"""Reading one of the four official files: its size limit, its SHA-256 check, and its decompressed
copy, which spares a command inflating 26 MB of gzip, most of what loading the data costs
(docs/SPEED.md).

A copy lives in the user cache folder (files.user_cache_dir()/unpacked), named after its source's
identity (real path, size, modification time), so a source that changes or is damaged is read
again, never served from an old copy; and a copy is read like any file, checked against the
official SHA-256 and deleted when it does not match. A cache folder that cannot be written only
means no copy."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from fashion_jax.data.idx import (
    MAX_DATASET_BYTES,
    OFFICIAL_SHA256,
    DataError,
    IdxFile,
    is_gzip,
    load_idx,
)
from fashion_jax.files import atomic_write_with, user_cache_dir


def load_file(path: Path, magic: int, name: str, verify: bool) -> tuple[IdxFile, Path | None]:
    """The IDX file `path` (the official file `name` when `verify`), and where to keep its copy
    once `check` has passed (None: read from that copy, or not to be verified)."""
    copy = copy_of(path, name) if verify else None
    found = read_copy(copy, name, magic)
    if found is not None:
        return found, None
    return load_idx(path, expect_magic=magic, **size_cap(name, verify)), copy


def size_cap(name: str, verify: bool) -> dict:
    """What a file's header may declare: the official file's size when it is to be verified
    anyway (a larger one would fail the check after costing its size), else MAX_DATASET_BYTES."""
    if verify:
        return {"max_bytes": OFFICIAL_SHA256[name][0], "limit_name": f"the official {name}'s size"}
    return {"max_bytes": MAX_DATASET_BYTES, "limit_name": "MAX_DATASET_BYTES"}


def check(path: Path, name: str, idx: IdxFile) -> None:
    """Raise DataError unless `idx` holds the official file `name`."""
    want_bytes, want_sha = OFFICIAL_SHA256[name]
    if idx.sha256 != want_sha:
        raise DataError(
            path,
            f"checksum mismatch: decompressed {idx.nbytes} bytes have SHA-256 {idx.sha256}, the "
            f"official {name} has {want_bytes} bytes and {want_sha}; "
            "pass verify=False / --no-verify for custom IDX data",
        )


def copy_of(source: Path, name: str) -> Path | None:
    """Where the copy of the gzipped file `source` lives; None for a plain one (read as fast)."""
    if not is_gzip(source):
        return None
    stat = source.stat()
    identity = f"{os.path.realpath(source)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    return user_cache_dir() / "unpacked" / f"{name}-{hashlib.sha256(identity).hexdigest()[:16]}"


def read_copy(copy: Path | None, name: str, magic: int) -> IdxFile | None:
    """The copy's contents when it holds the official file `name`; else None, and no copy."""
    if copy is None or not copy.is_file():
        return None
    try:
        found = load_idx(copy, expect_magic=magic, **size_cap(name, True))
        check(copy, name, found)
        return found
    except DataError:  # damaged, or not ours
        with contextlib.suppress(OSError):
            copy.unlink()
        return None


def keep_copy(copy: Path | None, idx: IdxFile) -> None:
    """Write the checked contents of a gzipped file as its plain copy, where the folder allows."""
    if copy is None:
        return
    header = idx.magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in idx.array.shape)
    with contextlib.suppress(OSError):
        copy.parent.mkdir(parents=True, exist_ok=True)
        for older in copy.parent.glob(f"{copy.name.rsplit('-', 1)[0]}-*"):
            with contextlib.suppress(OSError):  # another source's copy: one copy a file
                older.unlink()
        atomic_write_with(copy, lambda tmp: _write(tmp, header, idx))


def _write(path: Path, header: bytes, idx: IdxFile) -> None:
    with open(path, "wb") as f:
        f.write(header)
        f.write(idx.array.data)  # uint8, C order: the file's bytes as they are

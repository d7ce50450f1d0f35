"""A validating reader for IDX files (the MNIST / Fashion-MNIST format), gzipped or plain.

The reader trusts nothing in a header: sizes are checked against a byte limit before anything
is read, data is read in bounded chunks, and every failure becomes a one-line DataError.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import zlib
from dataclasses import dataclass
from math import prod
from typing import BinaryIO

import numpy as np

from fashion_jax.errors import FashionJaxError

# Decompressed size in bytes and SHA-256 of the official Fashion-MNIST files, as published with the
# dataset (Xiao, Rasul & Vollgraf 2017); the loader refuses anything else unless told not to verify.
OFFICIAL_SHA256: dict[str, tuple[int, str]] = {
    "train-images-idx3-ubyte": (
        47040016,
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    "train-labels-idx1-ubyte": (
        60008,
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "t10k-images-idx3-ubyte": (
        7840016,
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    "t10k-labels-idx1-ubyte": (
        10008,
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
}

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

# A gzip member can expand ~1000x, so a header is only believed up to this many payload bytes
# unless the caller raises it; the real train images are 47 MB.
DEFAULT_MAX_BYTES = 1 << 30
# What the dataset loader believes of one file it cannot verify (--no-verify): the real train
# images are 47 MB, so a crafted header costs at most this much memory, never a gigabyte.
MAX_DATASET_BYTES = 64 << 20
MAX_NDIM = 16
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(FashionJaxError, ValueError):
    """A data file is missing or malformed. str() is one line: '<file>: <problem>'."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the cause said
        super().__init__(f"{self.path}: {self.problem}")


@dataclass(frozen=True)
class IdxFile:
    """A parsed IDX file plus the size and SHA-256 of its decompressed bytes."""

    array: np.ndarray
    magic: int
    nbytes: int
    sha256: str


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_gzip(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def read_idx(
    path: str | os.PathLike, *, expect_magic: int | None = None, max_bytes: int | None = None
) -> np.ndarray:
    """Read an IDX file (gzipped or plain, detected by content) into a native-endian array."""
    return load_idx(path, expect_magic=expect_magic, max_bytes=max_bytes).array


def load_idx(
    path: str | os.PathLike,
    *,
    expect_magic: int | None = None,
    max_bytes: int | None = None,
    limit_name: str | None = None,
) -> IdxFile:
    """Like read_idx, but also return the magic, decompressed size and SHA-256. A header that
    declares more than `max_bytes` is refused naming `limit_name`."""
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    limit_name = limit_name or ("DEFAULT_MAX_BYTES" if max_bytes is None else "max_bytes")
    try:
        _require_regular_file(path)
        gz = is_gzip(path)
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            raw_size = None if gz else os.fstat(f.fileno()).st_size
            return _parse(f, path, expect_magic, (limit, limit_name), raw_size)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(path, f"corrupt or truncated gzip data ({type(e).__name__}: {e})") from None
    except (OSError, MemoryError) as e:
        raise DataError(path, f"cannot read ({type(e).__name__}: {e})") from None


def _require_regular_file(path: str | os.PathLike) -> None:
    # A FIFO or a device would block or never end; only regular files are read.
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise DataError(path, "not a regular file")


def _parse(f: BinaryIO, path, expect_magic, cap: tuple[int, str], raw_size: int | None) -> IdxFile:
    limit, limit_name = cap
    digest = hashlib.sha256()
    head = _read_exact(f, 4, path, "header", digest)
    if head[0] != 0 or head[1] != 0:
        raise DataError(
            path, f"bad magic 0x{head.hex()}: the first two bytes must be zero (not an IDX file?)"
        )
    magic = int.from_bytes(head, "big")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(path, f"wrong magic 0x{magic:08x}, expected 0x{expect_magic:08x}")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        raise DataError(path, f"unsupported type code 0x{code:02x}")
    if not 1 <= ndim <= MAX_NDIM:
        raise DataError(path, f"unsupported number of dimensions {ndim}")
    dims_raw = _read_exact(f, 4 * ndim, path, "dimensions", digest)
    dims = tuple(int.from_bytes(dims_raw[i : i + 4], "big") for i in range(0, 4 * ndim, 4))
    dtype = np.dtype(IDX_DTYPES[code])
    declared = prod(dims) * dtype.itemsize  # Python ints: no overflow
    header_len = 4 + 4 * ndim
    if raw_size is not None:  # plain file: its length is known, so compare before reading
        _check_length(path, dims, declared, raw_size - header_len)
    # numpy also refuses shapes such as (0, 2**32, 2**32), so bound the product of nonzero dims.
    extent = prod(d for d in dims if d) * dtype.itemsize
    if extent > limit:
        raise DataError(
            path,
            f"header dims {dims} describe up to {extent} data bytes, above the limit of {limit} "
            f"({limit_name})",
        )
    payload = _read_capped(f, declared, digest)
    _check_length(path, dims, declared, len(payload))
    array = np.frombuffer(payload, dtype=dtype).reshape(dims)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    return IdxFile(array, magic, header_len + declared, digest.hexdigest())


def _check_length(path, dims: tuple[int, ...], declared: int, actual: int) -> None:
    if actual < declared:
        raise DataError(
            path, f"truncated: dims {dims} need {declared} data bytes, file has {max(actual, 0)}"
        )
    if actual > declared:
        raise DataError(
            path, f"trailing bytes: dims {dims} need {declared} data bytes, file has {actual}"
        )


def _read_exact(f: BinaryIO, n: int, path, what: str, digest) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(path, f"truncated {what}: needed {n} bytes, got {len(data)}")
    digest.update(data)
    return data


def _read_capped(f: BinaryIO, declared: int, digest) -> bytearray:
    """Read at most declared+1 bytes in bounded chunks, so memory follows what the file really
    holds.

    Reading one byte past the declared size detects trailing data, and reaching EOF makes gzip
    verify its CRC, so truncated or corrupt streams surface here.
    """
    buf = bytearray()
    while len(buf) <= declared:
        chunk = f.read(min(_CHUNK, declared + 1 - len(buf)))
        if not chunk:
            break
        buf += chunk
    with memoryview(buf) as view:  # hash without copying 47 MB
        digest.update(view[:declared])
    return buf

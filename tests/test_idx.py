"""The IDX reader: crafted good and bad files, then fuzzing. Only DataError may ever escape."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fashion_jax.data.idx import (
    IDX_DTYPES,
    OFFICIAL_SHA256,
    DataError,
    load_idx,
    read_idx,
    sha256_of,
)

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
CODES = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
# Header bytes are untrusted; whatever they say, reading may only cost about one read chunk.
MEMORY_BOUND = 4 << 20


# ---------------------------------------------------------------- helpers


def header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def idx_bytes(array: np.ndarray) -> bytes:
    code = CODES[array.dtype]
    return header(code, array.shape) + array.astype(np.dtype(IDX_DTYPES[code])).tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@contextmanager
def bounded_memory(path: Path) -> Iterator[None]:
    """Fail if the block allocates much more than the file holds (headers are untrusted)."""
    tracemalloc.start()
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    size = path.stat().st_size
    assert peak < MEMORY_BOUND + 2 * size, f"peak {peak} bytes for a {size}-byte file"


def read_or_data_error(path: Path, **kw) -> np.ndarray | None:
    """read_idx, with DataError -> None; any other exception fails the test."""
    with bounded_memory(path):
        try:
            return read_idx(path, **kw)
        except DataError as e:
            assert "\n" not in str(e) and path.name in str(e)
            return None


SMALL = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)


# ---------------------------------------------------------------- good files


@pytest.mark.parametrize("gz", [False, True])
def test_roundtrip_uint8(tmp_path, gz):
    path = write(tmp_path / "x-idx3-ubyte", idx_bytes(SMALL), gz)
    out = read_idx(path, expect_magic=0x00000803)
    assert out.dtype == np.uint8 and out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, SMALL)
    assert out.flags.writeable


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_roundtrip_other_types_are_native_endian(tmp_path, dtype):
    array = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    out = read_idx(write(tmp_path / "x", idx_bytes(array), gz=False))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_gzip_detected_by_content_not_extension(tmp_path):
    gz_without_suffix = write(tmp_path / "plain-looking", idx_bytes(SMALL), gz=True)
    plain_with_suffix = write(tmp_path / "looks.gz", idx_bytes(SMALL), gz=False)
    np.testing.assert_array_equal(read_idx(gz_without_suffix), SMALL)
    np.testing.assert_array_equal(read_idx(plain_with_suffix), SMALL)


def test_empty_first_dimension_is_valid(tmp_path):
    out = read_idx(write(tmp_path / "x", header(0x08, (0, 28, 28)), gz=True))
    assert out.shape == (0, 28, 28)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_reports_decompressed_size_and_sha(tmp_path, gz):
    data = idx_bytes(SMALL)
    got = load_idx(write(tmp_path / "x", data, gz))
    assert got.nbytes == len(data) and got.magic == 0x803
    assert got.sha256 == hashlib.sha256(data).hexdigest() == sha256_of(data)


def test_official_table_matches_data_md():
    assert set(OFFICIAL_SHA256) == {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    }  # fmt: skip
    assert OFFICIAL_SHA256["train-images-idx3-ubyte"][0] == 16 + 60000 * 28 * 28
    assert OFFICIAL_SHA256["t10k-labels-idx1-ubyte"][0] == 8 + 10000
    assert all(len(sha) == 64 for _, sha in OFFICIAL_SHA256.values())


# ---------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        read_idx(tmp_path / "nope-idx1-ubyte.gz")
    one_line(err, "nope-idx1-ubyte.gz")


def test_directory_and_fifo_are_rejected_without_blocking(tmp_path):
    with pytest.raises(DataError, match="not a regular file"):
        read_idx(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        read_idx(fifo)  # opening a FIFO for reading would block forever


def test_truncated_gzip(tmp_path):
    compressed = gzip.compress(
        idx_bytes(np.random.default_rng(0).integers(0, 256, (50, 28, 28), np.uint8))
    )
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError) as err:
        read_idx(path)
    one_line(err, path.name)


def test_corrupt_gzip(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(SMALL)))
    compressed[12:20] = b"\xff" * 8  # inside the deflate stream
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataError, match="gzip") as err:
        read_idx(path)
    one_line(err, path.name)


def test_bad_crc_detected(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(SMALL)))
    compressed[-8] ^= 0xFF  # the CRC32 in the trailer
    path = write(tmp_path / "x.gz", bytes(compressed), gz=False)
    with pytest.raises(DataError, match="gzip"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_wrong_magic(tmp_path, gz):
    path = write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(SMALL), gz)
    with pytest.raises(DataError, match="wrong magic 0x00000803, expected 0x00000801") as err:
        read_idx(path, expect_magic=0x00000801)
    one_line(err, path.name)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"\x01\x00\x08\x01" + bytes(8), "first two bytes must be zero"),
        (header(0x07, (4,)) + bytes(4), "unsupported type code 0x07"),
        (bytes([0, 0, 8, 0]), "dimensions 0"),
        (bytes([0, 0, 8]), "truncated header"),
        (header(0x08, (2, 3))[:10], "truncated dimensions"),
    ],
)
def test_bad_headers(tmp_path, data, pattern):
    path = write(tmp_path / "bad-idx", data, gz=False)
    with pytest.raises(DataError, match=pattern) as err:
        read_idx(path)
    one_line(err, path.name)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(("delta", "word"), [(-1, "truncated"), (1, "trailing bytes")])
def test_dims_must_match_length_exactly(tmp_path, gz, delta, word):
    data = idx_bytes(SMALL)
    data = data[:delta] if delta < 0 else data + b"\x00" * delta
    path = write(tmp_path / "images-idx3-ubyte", data, gz)
    with pytest.raises(DataError, match=word) as err:
        read_idx(path)
    one_line(err, path.name)


@pytest.mark.parametrize("gz", [False, True])
def test_huge_dims_rejected_fast_without_allocating(tmp_path, gz):
    path = write(tmp_path / "liar", header(0x08, (2**31, 2**31)) + bytes(8), gz)
    assert path.stat().st_size <= 40
    start = time.perf_counter()
    assert read_or_data_error(path) is None
    assert time.perf_counter() - start < 1.0


def test_plausible_but_false_size_in_gzip_reads_only_what_exists(tmp_path):
    # 500 MB declared is below the default limit, so only chunked reading keeps memory small.
    path = write(tmp_path / "liar.gz", header(0x08, (500, 1000, 1000)) + bytes(100), gz=True)
    with bounded_memory(path), pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_gzip_bomb_stops_after_declared_size(tmp_path):
    path = write(tmp_path / "bomb.gz", header(0x08, (10,)) + bytes(50_000_000), gz=True)
    assert path.stat().st_size < 100_000
    start = time.perf_counter()
    assert read_or_data_error(path) is None  # trailing bytes, found without inflating 50 MB
    assert time.perf_counter() - start < 1.0


def test_max_bytes_caps_declared_size(tmp_path):
    path = write(tmp_path / "x.gz", idx_bytes(SMALL), gz=True)
    with pytest.raises(DataError, match="above the limit of 10"):
        read_idx(path, max_bytes=10)
    with pytest.raises(DataError, match="above the limit"):  # an empty array with absurd other dims
        read_idx(write(tmp_path / "y", header(0x08, (0, 2**32 - 1, 2**32 - 1)), gz=False))
    assert read_idx(path, max_bytes=SMALL.size).shape == SMALL.shape


def test_error_message_is_one_line():
    err = DataError("f.gz", "line one\nline two\r\n  three")
    assert str(err) == "f.gz: line one line two three"
    assert isinstance(err, ValueError)


# ---------------------------------------------------------------- fuzzing


def check_consistent(out: np.ndarray | None, data: bytes) -> None:
    """If plain `data` parsed, the array must be exactly what its header describes."""
    if out is None:
        return
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    assert out.shape == dims
    assert out.nbytes == len(data) - 4 - 4 * ndim


@FUZZ
@given(data=st.binary(max_size=300), gz=st.booleans())
def test_fuzz_random_bytes(tmp_path, data, gz):
    path = write(tmp_path / "fuzz", data, gz)
    out = read_or_data_error(path)
    if not gz:
        check_consistent(out, data)


@FUZZ
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x0A, 0xFF]),
    dims=st.lists(st.one_of(st.integers(0, 4), st.integers(0, 2**32 - 1)), min_size=0, max_size=6),
    payload=st.binary(max_size=64),
    gz=st.booleans(),
)
def test_fuzz_headers_with_huge_dims(tmp_path, code, dims, payload, gz):
    data = header(code, tuple(dims)) + payload
    path = write(tmp_path / "fuzz", data, gz)
    out = read_or_data_error(path)
    check_consistent(out, data)
    if out is not None:
        assert out.dtype == np.dtype(IDX_DTYPES[code]).newbyteorder("=")


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None, extra: bytes) -> bytes:
    out = bytearray(data)
    for pos, bit in flips:
        out[pos % len(out)] ^= 1 << bit
    if cut is not None:
        out = out[: cut % (len(out) + 1)]
    return bytes(out) + extra


MUTATIONS = dict(
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), max_size=4),
    cut=st.none() | st.integers(0, 10_000),
    extra=st.binary(max_size=8),
)


@FUZZ
@given(**MUTATIONS)
def test_fuzz_mutated_plain_file(tmp_path, flips, cut, extra):
    data = mutate(idx_bytes(SMALL), flips, cut, extra)
    check_consistent(read_or_data_error(write(tmp_path / "m", data, gz=False)), data)


@FUZZ
@given(**MUTATIONS, inner=st.booleans())
def test_fuzz_mutated_gzip_file(tmp_path, flips, cut, extra, inner):
    # inner=True mutates the IDX bytes before compressing, otherwise the compressed stream.
    original = idx_bytes(SMALL)
    if inner:
        data = mutate(original, flips, cut, extra)
        out = read_or_data_error(write(tmp_path / "m.gz", data, gz=True))
        check_consistent(out, data)
    else:
        path = tmp_path / "m.gz"
        path.write_bytes(mutate(gzip.compress(original), flips, cut, extra))
        out = read_or_data_error(path)
        if out is not None:  # the damaged stream still decompressed: the array is what it holds
            with gzip.open(path, "rb") as f:
                check_consistent(out, f.read())

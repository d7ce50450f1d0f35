"""official: a gzipped official file is inflated once, then read from its checked copy; a damaged
copy or a changed source is never served."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require_real_data

from fashion_jax.data import idx, official
from fashion_jax.data.dataset import FILES, SYSTEM_DIR, load_split
from fashion_jax.data.idx import DataError

NAMES = FILES["test"]  # the smaller pair: 7.8 MB of images
pytestmark = pytest.mark.realdata


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the official gzipped test files, and an empty user cache folder."""
    require_real_data(system_dir_only=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "data"
    folder.mkdir()
    for name in NAMES:
        shutil.copy(SYSTEM_DIR / f"{name}.gz", folder / f"{name}.gz")
    return folder


def copies(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "fashion_jax" / "unpacked").glob("*"))


def no_gzip(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("inflated a file that has a copy")

    monkeypatch.setattr(idx.gzip, "open", refuse)


def test_the_first_load_keeps_a_copy_and_the_next_reads_only_it(source, tmp_path, monkeypatch):
    first = load_split("test", source)
    kept = copies(tmp_path)
    assert [p.name.rsplit("-", 1)[0] for p in kept] == sorted(NAMES)
    with gzip.open(source / f"{NAMES[0]}.gz") as f:
        assert kept[0].read_bytes() == f.read()  # the decompressed file, byte for byte
    no_gzip(monkeypatch)
    again = load_split("test", source)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert again[0].flags.writeable  # the caller's own array, as from the gzip


def test_a_damaged_copy_is_deleted_and_the_source_read_again(source, tmp_path):
    first = load_split("test", source)
    images_copy = next(p for p in copies(tmp_path) if p.name.startswith(NAMES[0]))
    damaged = bytearray(images_copy.read_bytes())
    damaged[1000] ^= 0xFF
    images_copy.write_bytes(bytes(damaged))
    again = load_split("test", source)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert official.read_copy(images_copy, NAMES[0], 0x803) is not None  # written back, whole


def test_a_changed_source_is_read_not_served_from_the_old_copy(source, tmp_path):
    load_split("test", source)
    raw = bytearray(gzip.decompress((source / f"{NAMES[0]}.gz").read_bytes()))
    raw[5000] ^= 0xFF  # one pixel: a well-formed file that is not the official one
    (source / f"{NAMES[0]}.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_split("test", source)
    assert len(load_split("test", source, verify=False)[0]) == 10000


def test_no_copy_without_verification_or_a_writable_cache(source, tmp_path, monkeypatch):
    load_split("test", source, verify=False)
    assert copies(tmp_path) == []
    (tmp_path / "a-file").write_text("XDG_CACHE_HOME is a file here")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
    assert len(load_split("test", source)[0]) == 10000

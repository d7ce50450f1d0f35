"""Fetch the four official Fashion-MNIST files into the user's cache folder, when no local copy is
found (data.resolve_source) or when asked (`fashion-jax data --download`).

Each file comes from the first mirror that serves it whole with the official SHA-256. It is
written to a hidden sibling (`.NAME.PID.part`) and renamed to its final name only once verified,
so an interrupted or failed download never leaves anything the loader would take for data; every
failure is one DataError line naming the URL and the cause. Pooch's HTTPDownloader (requests)
does the HTTP and the tqdm bar.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fashion_jax.data.idx import DataError

# The mirrors the dataset's authors and Keras publish, tried in this order.
MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)
MIRROR_ENV = "FASHION_JAX_MIRROR"  # one base URL that replaces MIRRORS (a local mirror, tests)
OFFLINE_ENV = "FASHION_JAX_OFFLINE"  # 1: never touch the network
TIMEOUT_ENV = "FASHION_JAX_DOWNLOAD_TIMEOUT"  # seconds without a byte before a mirror is given up
DEFAULT_TIMEOUT = 30.0
# Size and SHA-256 of the official gzipped files, as the mirrors serve them. They decompress to
# exactly the files of idx.OFFICIAL_SHA256 (checked against /usr/share/datasets/fashion-mnist).
GZ_SHA256: dict[str, tuple[int, str]] = {
    "train-images-idx3-ubyte.gz": (
        26421856,
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    ),
    "train-labels-idx1-ubyte.gz": (
        29491,
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    ),
    "t10k-images-idx3-ubyte.gz": (
        4422079,
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    ),
    "t10k-labels-idx1-ubyte.gz": (
        5125,
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    ),
}
_CHUNK = 1 << 16
# A .part file untouched this long belongs to a download that was killed (kill -9, a power cut):
# a live one writes at least every timeout, or gives up and deletes it.
STALE_PART_SECONDS = 3600


class _MirrorFailed(Exception):
    """This mirror could not serve this file; the next one may."""


def cache_dir() -> Path:
    """Where downloads go: $XDG_CACHE_HOME/fashion_jax/data (else ~/.cache/...) on Linux, the
    platform's user cache folder elsewhere."""
    import pooch

    return Path(pooch.os_cache("fashion_jax")) / "data"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def mirrors() -> tuple[str, ...]:
    custom = os.environ.get(MIRROR_ENV, "").strip()
    return (custom,) if custom else MIRRORS


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise DataError(f"${TIMEOUT_ENV}", f"must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise DataError(f"${TIMEOUT_ENV}", f"must be positive, got {raw!r}")
    return value


def complete(folder: Path) -> bool:
    """Whether folder holds the four gzipped files under their official names."""
    return all((folder / name).is_file() for name in GZ_SHA256)


def fetch(
    folder: str | os.PathLike | None = None,
    *,
    progress: bool | None = None,
    sources: Sequence[str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Make `folder` (default: cache_dir()) hold the four official .gz files, downloading those
    missing or wrong; what was done, as {"to", "files": [{"name", "bytes", "from"}], "downloaded"}.

    progress=None shows tqdm bars only when stderr is a terminal. Raises DataError (one line) when
    a file is missing and downloads are off ($FASHION_JAX_OFFLINE), the folder cannot be written,
    or no mirror serves a file whole with its official SHA-256; files already verified stay,
    nothing else is left. A wrong file is replaced in the cache folder, refused in any other.
    """
    cache = cache_dir()
    target = Path(folder) if folder is not None else cache
    show = sys.stderr.isatty() if progress is None else progress
    sources = tuple(sources) if sources is not None else mirrors()
    wait = timeout if timeout is not None else timeout_seconds()
    have = {name for name in GZ_SHA256 if _present(target / name, ours=target == cache)}
    if offline() and len(have) < len(GZ_SHA256):
        raise DataError(
            f"${OFFLINE_ENV}",
            "downloads are off, and the Fashion-MNIST files are missing; unset it (or drop "
            f"--offline) where there is network, or copy the four .gz files into {target} or a "
            "folder given as --data-dir",
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(target, f"cannot create the data folder ({_strerror(err)})") from None
    _remove_stale_parts(target)
    files = [
        {"name": name, "bytes": GZ_SHA256[name][0], "from": None}
        if name in have
        else _fetch_one(target / name, sources, wait, show)
        for name in GZ_SHA256
    ]
    return {
        "to": str(target),
        "files": files,
        "downloaded": sum(f["bytes"] for f in files if f["from"] is not None),
    }


def _present(path: Path, ours: bool) -> bool:
    """Whether path is the official file. A wrong one is deleted from our cache folder, and
    refused in a user's folder, where it may be data of their own."""
    if not path.is_file():
        return False
    if _matches(path, path.name):
        return True
    if not ours:
        raise DataError(path, "is not the official file; move it away or use another folder")
    try:
        path.unlink()
    except OSError as err:
        raise DataError(path, f"is not the official file and cannot be deleted ({err})") from None
    return False


def _remove_stale_parts(folder: Path) -> None:
    now = time.time()
    for part in folder.glob(".*.part"):
        with contextlib.suppress(OSError):  # another process's cleanup may have won
            if now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()


def _fetch_one(path: Path, sources: Sequence[str], timeout: float, show: bool) -> dict:
    size, _ = GZ_SHA256[path.name]
    failures = []
    for base in sources:
        url = f"{base.rstrip('/')}/{path.name}"
        try:
            _download(url, path, timeout, show)
            return {"name": path.name, "bytes": size, "from": url}
        except _MirrorFailed as why:
            failures.append(f"{url}: {why}")
    raise DataError(f"download of {path.name}", "; ".join(failures) + "; nothing was kept")


def _download(url: str, path: Path, timeout: float, show: bool) -> None:
    """One try from one URL: the verified file at `path`, or _MirrorFailed and no file."""
    import pooch
    import requests

    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    bar = _bar(path.name, show)
    fetcher = pooch.HTTPDownloader(
        progressbar=False if bar is None else bar, timeout=timeout, chunk_size=_CHUNK
    )
    try:
        with open(part, "wb") as out:
            try:
                fetcher(url, out, None)
            except requests.RequestException as err:
                raise _MirrorFailed(describe(err, timeout)) from None
            out.flush()
            os.fsync(out.fileno())
        if not _matches(part, path.name):
            size, sha = GZ_SHA256[path.name]
            got = part.stat().st_size
            raise _MirrorFailed(
                f"wrong SHA-256: got {got} bytes with {_sha256(part)}, the official file has "
                f"{size} bytes and {sha}; the bytes were deleted"
            )
        os.replace(part, path)
    except OSError as err:  # the local side: a read-only or full folder is the same on any mirror
        raise DataError(url, f"cannot save into {path.parent} ({_strerror(err)})") from None
    finally:
        if bar is not None:
            bar.close()
        # A read-only folder refuses even the unlink of a file that was never made (EROFS).
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


class _Bar(tqdm):
    def reset(self, total: float | None = None) -> None:
        # pooch resets the bar, then fills it, when a download ends; tqdm's reset would also
        # restart the clock and show the rate of that last update (GB/s) as the download's.
        self.n = 0


def _bar(name: str, show: bool) -> _Bar | None:
    if not show:
        return None
    # A total from the start: pooch tests the bar's truth, which tqdm refuses while it is None.
    total = GZ_SHA256[name][0]
    return _Bar(desc=name, total=total, unit="B", unit_scale=True, unit_divisor=1024, leave=True)


def _matches(path: Path, name: str) -> bool:
    size, sha = GZ_SHA256[name]
    return path.stat().st_size == size and _sha256(path) == sha


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe(err: BaseException, timeout: float) -> str:
    """The cause of a failed request in a few words: the HTTP status, a timeout, a truncated
    body, a DNS failure or the connection error, instead of requests' nested reprs."""
    import requests

    response = getattr(err, "response", None)
    if isinstance(err, requests.HTTPError) and response is not None:
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    chain = list(_causes(err))
    if any(isinstance(e, (requests.Timeout, TimeoutError, socket.timeout)) for e in chain) or any(
        type(e).__name__ in ("ReadTimeoutError", "ConnectTimeoutError") for e in chain
    ):
        return f"timed out (nothing received for {timeout:g} s)"
    for e in chain:
        if type(e).__name__ == "IncompleteRead" and isinstance(getattr(e, "partial", None), int):
            return f"truncated body ({e.partial} bytes came, {e.expected} more were announced)"
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "truncated body (the connection closed before the whole file came)"
    for e in chain:
        if isinstance(e, socket.gaierror):
            return f"cannot resolve the host name ({_strerror(e)}: no network, or no DNS)"
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            return f"cannot connect ({e.strerror})"
    return " ".join(f"{type(err).__name__}: {err}".split())


def _causes(err: BaseException) -> Iterator[BaseException]:
    """err and everything it wraps: requests and urllib3 nest the real cause in args, `reason`,
    __cause__ and __context__."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        nested = [*e.args, getattr(e, "reason", None), e.__cause__, e.__context__]
        todo.extend(n for n in nested if isinstance(n, BaseException))


def _strerror(err: OSError) -> str:
    return err.strerror or str(err) or type(err).__name__

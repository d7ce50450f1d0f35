"""A local Fashion-MNIST mirror for the tests: an HTTP server on 127.0.0.1 that serves the real
gzipped files, and faulty variants of one of them (test_download). Nothing leaves the machine.

URLs are /<mode>/<name>: mode `good` serves every file whole; the fault modes break only FAULTY
and serve the others whole; `missing` answers 404 for everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fashion_jax.data import download

REAL = Path("/usr/share/datasets/fashion-mnist")
FAULTY = "train-labels-idx1-ubyte.gz"  # the second file fetched: the first must stay, verified
STALL_SECONDS = 5.0


def official(path: Path) -> bool:
    """Whether path holds the official file of its name: its size and SHA-256."""
    size, sha = download.GZ_SHA256[path.name]
    return path.stat().st_size == size and hashlib.sha256(path.read_bytes()).hexdigest() == sha


class Mirror(BaseHTTPRequestHandler):
    """GET /<mode>/<name>: the real file, except for FAULTY under a fault's mode; /missing/: 404."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.paths.append(self.path)
        _, mode, name = self.path.split("/", 2)
        body = self.server.files.get(name)
        if body is None or mode == "missing":
            return self.send_error(404)
        if name != FAULTY or mode == "good":
            return self._send(body)
        if mode in ("404", "500"):
            return self.send_error(int(mode))
        if mode == "wrong":
            return self._send(body[:100] + bytes([body[100] ^ 1]) + body[101:])
        if mode == "truncated":
            return self._send(body[: len(body) // 2], length=len(body))
        if mode == "stall-headers":
            self.server.release.wait(STALL_SECONDS)
            return self._send(body)
        if mode == "stall-body":
            self._send(body[:1000], length=len(body))
            self.wfile.flush()
            self.server.release.wait(STALL_SECONDS)
        return None

    def _send(self, body: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    """The mirror: `url` is its base, `paths` every path asked for, `release` ends the stalls."""

    url: str
    files: dict[str, bytes]
    paths: list[str]
    release: threading.Event

    def handle_error(self, request, client_address) -> None:
        pass  # a client that gave up on a stalled reply: expected, not worth a traceback


@contextlib.contextmanager
def serving(folder: Path = REAL) -> Iterator[QuietServer]:
    """A mirror of the four official .gz files in `folder`, on a free port, for the block."""
    httpd = QuietServer(("127.0.0.1", 0), Mirror)
    httpd.daemon_threads = True
    httpd.files = {name: (folder / name).read_bytes() for name in download.GZ_SHA256}
    httpd.paths, httpd.release = [], threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield httpd
    finally:
        httpd.release.set()  # a stalled reply would otherwise hold shutdown for STALL_SECONDS
        httpd.shutdown()
        httpd.server_close()

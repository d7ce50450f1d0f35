"""`fashion-jax serve --workdir W`: a local web page to try a trained model (serve/app.py).

The model is loaded and every program compiled before the address is printed, so the first
request is as fast as the rest. The listening socket is bound here, before uvicorn starts, so
`--port 0` has its real port in the printed line and a busy port is one error line. Ctrl-C or
SIGTERM stops the server after the requests in flight (uvicorn's shutdown) and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import ipaddress
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from fashion_jax.cli.parser import CliError
from fashion_jax.serve.service import ModelService

MISSING_LIBS = "serve needs: pip install 'fashion-jax[serve]'"
WEB_LIBS = ("starlette", "uvicorn", "multipart")  # multipart: python-multipart, for uploads


def check_web_libs() -> None:
    """One CliError line when the optional web libraries are not installed."""
    if any(importlib.util.find_spec(name) is None for name in WEB_LIBS):
        raise CliError(MISSING_LIBS)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0: a free port); an OSError names the address."""
    if not 0 <= port <= 65535:
        raise CliError(f"--port must be 0..65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # connections made before uvicorn runs wait here, none are refused
    except OSError as err:
        raise CliError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    return sock


LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def allowed_hosts(host: str) -> tuple[str, ...]:
    """The Host header names the server answers to: loopback names for a loopback bind (the
    default), any name when the user chose to serve on a network address."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return LOOPBACK_HOSTS if loopback else ("*",)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (how systemd, Docker and Kubernetes stop a server) stops as Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_serve(args: argparse.Namespace) -> dict:
    check_web_libs()
    if not args.max_upload_mb > 0:
        raise CliError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    # Imported here, after the check: the web libraries are an optional extra.
    import uvicorn

    from fashion_jax.serve.app import build_app

    workdir = Path(args.workdir)
    # the port first: a busy one fails at once, not after the model has loaded
    with contextlib.closing(listen(args.host, args.port)) as sock:
        service = ModelService(workdir)
        try:
            app = build_app(
                service,
                max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
                allowed_hosts=allowed_hosts(args.host),
            )
            server = uvicorn.Server(
                uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
            )
            url = url_of(sock)
            # uvicorn catches SIGINT/SIGTERM, finishes the requests in flight, then raises the
            # signal again under the handler it found; the KeyboardInterrupt that follows is the
            # normal way to stop. SIGTERM's default handler would end the process (143) instead.
            with contextlib.suppress(KeyboardInterrupt), sigterm_as_ctrl_c():
                print(f"serving {workdir} on {url}", flush=True)
                server.run(sockets=[sock])
        finally:
            service.close()
    print(f"stopped serving {workdir}", file=sys.stderr)
    return {"workdir": str(workdir), "url": url}

"""The web side of `fashion-jax serve`: a Starlette app over a `ModelService`.

Routes: `GET /` the page (fashion_jax/serve/web/), `GET /api/model` what the model is,
`POST /api/predict` (multipart field `file`) exactly the object `predict --json` gives for one
file, `POST /api/explain` that object plus the 28x28 image the model saw and every conv layer's
feature maps. A bad request is answered {"error": "one line"} with a 4xx status; nothing a client
sends stops the server. Imported only by `serve`, because Starlette is an optional dependency.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fashion_jax.config import PREPROCESS_MODES
from fashion_jax.errors import FashionJaxError
from fashion_jax.inference.preprocess import ImageError, Prepared, prepare_bytes
from fashion_jax.serve.service import ModelService

MAX_NAME = 200  # characters of an upload's file name kept in the answer
# The page and its scripts come from this server only: no CDN, and nothing it shows can load more.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' blob: data:",
    "x-content-type-options": "nosniff",
}


class BadUpload(FashionJaxError):
    """A request the server refuses: its HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


class UploadLimit:
    """Refuses a request body over `max_bytes` with 413: at once when Content-Length says so,
    else as soon as the bytes received pass the limit, so an upload is never held whole first."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.too_large()(scope, receive, send)
            return None
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BadUpload(413, self.too_large().body.decode())
            return message

        return await self.app(scope, counted, send)

    def too_large(self) -> JSONResponse:
        return error(413, f"upload larger than {self.max_bytes} bytes")


async def read_upload(request: Request) -> tuple[str, bytes, str]:
    """(file name, bytes, preprocessing mode) of the request's one `file` field."""
    mode = request.query_params.get("preprocess", "auto")
    if mode not in PREPROCESS_MODES:
        raise BadUpload(400, f"preprocess must be one of {', '.join(PREPROCESS_MODES)}")
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadUpload(400, "send one image as the multipart form field 'file'")
        data = await upload.read()
        name = upload.filename or "upload"
    # only the last path component, whichever separator the client's system uses
    name = PureWindowsPath(PurePosixPath(name).name).name[:MAX_NAME] or "upload"
    if not data:
        raise BadUpload(400, f"{name}: empty file")
    return name, data, mode


async def prepare(request: Request) -> tuple[str, Prepared]:
    name, data, mode = await read_upload(request)
    prepared = await run_in_threadpool(prepare_bytes, data, name, mode)  # PIL work off the loop
    return name, prepared


def build_app(
    service: ModelService, max_upload_bytes: int, allowed_hosts: tuple[str, ...] = ("*",)
) -> Starlette:
    """The routes over `service`, refusing request bodies over `max_upload_bytes` and requests
    whose Host header is not in `allowed_hosts`."""

    async def model_info(request: Request) -> JSONResponse:
        return JSONResponse(service.info() | {"max_upload_bytes": max_upload_bytes})

    async def predict(request: Request) -> JSONResponse:
        name, prepared = await prepare(request)
        probs = await asyncio.wrap_future(service.classify(prepared.image))
        return JSONResponse(service.predictor.row(name, prepared, probs))

    async def explain(request: Request) -> JSONResponse:
        name, prepared = await prepare(request)
        probs, maps = await asyncio.gather(
            asyncio.wrap_future(service.classify(prepared.image)),
            asyncio.wrap_future(service.explain(prepared.image)),
        )
        return JSONResponse(explanation(service, name, prepared, probs, maps))

    app = Starlette(
        routes=[
            Route("/api/model", model_info),
            Route("/api/predict", predict, methods=["POST"]),
            Route("/api/explain", explain, methods=["POST"]),
            Mount("/", StaticFiles(packages=[("fashion_jax.serve", "web")], html=True)),
        ],
        exception_handlers={
            BadUpload: bad_upload,
            ImageError: not_an_image,
            HTTPException: http_error,
            Exception: server_error,
        },
    )
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    # A server on loopback answers only to loopback names: a web page the user visits cannot
    # reach it through a DNS name rebound to 127.0.0.1.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app


async def bad_upload(request: Request, err: Exception) -> JSONResponse:
    return error(getattr(err, "status", 400), str(err))


async def not_an_image(request: Request, err: Exception) -> JSONResponse:
    return error(415, str(err))


async def http_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, HTTPException)
    return error(err.status_code, str(err.detail))


async def server_error(request: Request, err: Exception) -> JSONResponse:
    # Starlette logs the traceback itself; the client gets one line
    return error(500, f"internal error ({err.__class__.__name__})")


def explanation(
    service: ModelService, name: str, prepared: Prepared, probs: Any, maps: list[dict]
) -> dict[str, Any]:
    """What the page shows for one photo: the `predict --json` row, every class's probability,
    the 28x28 image the model saw (base64 uint8, row-major) and the feature maps."""
    return {
        "prediction": service.predictor.row(name, prepared, probs),
        "probabilities": [float(p) for p in probs],
        "image": base64.b64encode(prepared.image.tobytes()).decode("ascii"),
        "feature_maps": maps,
    }


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)

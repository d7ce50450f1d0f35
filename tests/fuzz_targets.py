"""The fuzz campaign's pieces: real seed files of every kind fashion_jax reads, mutators, and one
target per reader that says how a case ended.

Shared by tests/test_fuzz_files.py (hypothesis, a small budget in the suite) and
experiments/soak/fuzz_files.py (a long random campaign). A mutator takes the seed bytes and
`draw(lo, hi)`, an integer source: hypothesis's draws in the suite, random.Random in the soak.
The property every case must keep: the reader returns, or refuses with one line of bad input
(errors.is_bad_input); no other exception, within TIME_LIMIT seconds and MEMORY_LIMIT bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
import tempfile
import time
import traceback
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import h5py
import hostile_files as hf
import keras2_files as k2
import numpy as np
from PIL import Image
from starlette.testclient import TestClient

from fashion_jax.cli.commands import keras_files
from fashion_jax.cli.parser import build_parser
from fashion_jax.config import TrainConfig
from fashion_jax.data.dataset import SYSTEM_DIR
from fashion_jax.data.idx import MAX_DATASET_BYTES, load_idx
from fashion_jax.errors import is_bad_input
from fashion_jax.inference.predictor import Predictor
from fashion_jax.inference.preprocess import MAX_PIXELS, prepare_bytes
from fashion_jax.interop import keras_h5
from fashion_jax.serve.app import build_app
from fashion_jax.storage import run_files

Draw = Callable[[int, int], int]
TIME_LIMIT = 2.0  # seconds a case may take: ~1 s asked, doubled for the shared 2-core machine
MEMORY_LIMIT = 100 << 20  # peak bytes above the case's start
# A picture may declare up to MAX_PIXELS (50 MP, a limit the issue keeps); decoding a valid one
# that large costs its RGB pixels and a working copy, so pictures get this bound instead.
PICTURE_MEMORY_LIMIT = 4 * MAX_PIXELS
PICTURES = ("png", "jpeg", "gif", "multipart")
EXTREMES = [
    b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00",
    b"\xff" * 8, b"\x00\x00\x00\x01", b"\x01\x00\x00\x00", b"\xff\xff", b"\x00",
]  # fmt: skip


def _garment() -> np.ndarray:
    rows, cols = np.mgrid[:28, :28]
    return np.where((abs(rows - 14) < 10) & (abs(cols - 14) < 6), 200, 0).astype(np.uint8)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _idx_gz() -> bytes:
    """The first 16 images of the real test set (synthetic where the files are missing)."""
    real = SYSTEM_DIR / "t10k-images-idx3-ubyte.gz"
    images = load_idx(real).array[:16] if real.exists() else np.stack([_garment()] * 16)
    head = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    return gzip.compress(head + images.tobytes())


def _multipart(data: bytes, name: str = "shoe.png") -> bytes:
    return (
        b"--FUZZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + name.encode()
        + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--FUZZ--\r\n"
    )  # fmt: skip


def _keras2_h5() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        configs = [k2.dense("dense_1", 10, "softmax", batch_input_shape=[None, 784])]
        weights = {"dense_1": [np.zeros((784, 10), np.float32), np.zeros(10, np.float32)]}
        return k2.write_model(Path(tmp) / "m.h5", configs, weights).read_bytes()


def _keras3() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return hf.keras_zip(Path(tmp) / "m.keras").read_bytes()


def seeds() -> dict[str, bytes]:
    """kind -> the real file each campaign mutates."""
    garment = Image.fromarray(_garment())
    frames = [garment, Image.fromarray(255 - _garment())]
    npy = io.BytesIO()
    np.save(npy, _garment().astype(np.float32) / 255)
    photo = Image.fromarray(np.dstack([255 - _garment()] * 3)).resize((64, 64))
    return {
        "png": _encoded(garment, "PNG"),
        "jpeg": _encoded(photo, "JPEG", quality=85),
        "gif": _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "npy": npy.getvalue(),
        "h5": _keras2_h5(),
        "keras": _keras3(),
        "idx.gz": _idx_gz(),
        "config.json": json.dumps(run_files.to_dict(TrainConfig()), indent=2).encode(),
        "multipart": _multipart(_encoded(garment, "PNG")),
    }


# ---- mutators: (seed, draw) -> mutated bytes --------------------------------------------------


def flip(data: bytes, draw: Draw) -> bytes:
    out = bytearray(data)
    for _ in range(draw(1, 8)):
        out[draw(0, len(out) - 1)] ^= draw(1, 255)
    return bytes(out)


def truncate(data: bytes, draw: Draw) -> bytes:
    return data[: draw(0, len(data) - 1)]


def extreme(data: bytes, draw: Draw) -> bytes:
    """An extreme integer (0, -1, 2**31, ...) written over any position: a size or a count."""
    at, value = draw(0, len(data) - 1), EXTREMES[draw(0, len(EXTREMES) - 1)]
    return data[:at] + value + data[at + len(value) :]


def duplicate(data: bytes, draw: Draw) -> bytes:
    start = draw(0, len(data) - 1)
    piece = data[start : start + draw(1, 256)] * draw(1, 64)
    at = draw(0, len(data))
    return data[:at] + piece + data[at:]


NUMBER = [b"1e999", b"-1", b"0", b"18446744073709551616", b"9" * 5000, b"NaN", b"-1e-999"]
VALUE = [b"[]", b"{}", b"null", b"true", b'"x"', b"[[[[[[[[]]]]]]]]", b'{"class_name": {}}']


def json_mutation(text: bytes, draw: Draw) -> bytes:
    """Nesting, an extreme number, a long string, or a value of another type."""
    how = draw(0, 3)
    if how == 0:
        depth = (2, 63, 65, 1000, 100_000)[draw(0, 4)]
        return b"[" * depth + text + b"]" * depth
    tokens = list(re.finditer(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?|\"[^\"]*\"|\[|\{", text))
    if not tokens:
        return text + b"["
    token = tokens[draw(0, len(tokens) - 1)]
    if how == 1:
        new = NUMBER[draw(0, len(NUMBER) - 1)]
    elif how == 2:
        new = b'"' + b"x" * (1 << draw(0, 21)) + b'"'
    else:
        new = VALUE[draw(0, len(VALUE) - 1)]
    return text[: token.start()] + new + text[token.end() :]


def npy_header(data: bytes, draw: Draw) -> bytes:
    """A .npy header that declares another shape or dtype over the same bytes."""
    shapes = [(100_000, 100_000), (0, 28), (28, 28, 28), (1, 1), (2**62, 2**62), (28, 28 * 999)]
    dtypes = ["<f8", "|u1", "|O", "<c16", "|V8", "<U4", "|b1", ">i8", "<f2", "<M8[s]"]
    shape = shapes[draw(0, len(shapes) - 1)]
    descr = dtypes[draw(0, len(dtypes) - 1)]
    header = {"descr": descr, "fortran_order": bool(draw(0, 1)), "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data[128:]


def idx_fields(data: bytes, draw: Draw) -> bytes:
    """The inner IDX header's type code, rank or a dimension set to an extreme."""
    raw = bytearray(gzip.decompress(data))
    at = (2, 3, 4, 8, 12)[draw(0, 4)]
    value = EXTREMES[draw(0, len(EXTREMES) - 1)][: 1 if at < 4 else 4]
    raw[at : at + len(value)] = value
    return gzip.compress(bytes(raw), compresslevel=1)


def image_fields(data: bytes, draw: Draw) -> bytes:
    """An image's declared width or height set to an extreme (PNG's CRC made right again)."""
    out = bytearray(data)
    value = (b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x00\x01")[draw(0, 3)]
    if out.startswith(b"\x89PNG"):
        at = (16, 18, 20, 22)[draw(0, 3)]
        out[at : at + 2] = value
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    elif out.startswith(b"GIF"):
        at = (6, 8)[draw(0, 1)]
        out[at : at + 2] = value
    elif (sof := out.find(b"\xff\xc0")) >= 0:
        at = sof + (5, 7)[draw(0, 1)]
        out[at : at + 2] = value
    return bytes(out)


def zip_fields(data: bytes, draw: Draw) -> bytes:
    """A size, offset or method in a zip's local or central header set to an extreme."""
    out = bytearray(data)
    heads = [m.start() for m in re.finditer(rb"PK\x01\x02|PK\x03\x04|PK\x05\x06", data)]
    head = heads[draw(0, len(heads) - 1)]
    at = head + (10, 18, 20, 22, 24, 28, 42)[draw(0, 6)]
    value = EXTREMES[draw(0, len(EXTREMES) - 1)]
    out[at : at + len(value)] = value
    return bytes(out[: len(data)])


def _rezip(data: bytes, name: str, change: Callable[[bytes], bytes]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[name] = change(members[name])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, value in members.items():
            zf.writestr(key, value)
    return out.getvalue()


def keras_inner(data: bytes, draw: Draw) -> bytes:
    """The .keras rebuilt around a mutated config.json or model.weights.h5."""
    if draw(0, 1):
        return _rezip(data, "config.json", lambda raw: json_mutation(raw, draw))
    mutate = (flip, truncate, extreme, duplicate)[draw(0, 3)]
    return _rezip(data, "model.weights.h5", lambda raw: mutate(raw, draw))


def h5_config(data: bytes, draw: Draw) -> bytes:
    """The .h5 with its model_config attribute mutated as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.h5"
        path.write_bytes(data)
        with h5py.File(path, "r+") as f:
            raw = f.attrs["model_config"]
            raw = raw.encode() if isinstance(raw, str) else bytes(raw)
            f.attrs["model_config"] = json_mutation(raw, draw)
        return path.read_bytes()


def multipart_fields(data: bytes, draw: Draw) -> bytes:
    """Many parts, a huge header, a huge file name, or a mutated picture inside."""
    how = draw(0, 3)
    if how == 0:
        part = data[: data.rindex(b"--FUZZ--")]
        return part * draw(2, 2000) + b"--FUZZ--\r\n"
    if how == 1:
        return data.replace(
            b"Content-Type:", b"X-Pad: " + b"a" * (1 << draw(10, 20)) + b"\r\nContent-Type:", 1
        )
    if how == 2:
        return data.replace(b'filename="', b'filename="' + b"../" * draw(1, 100000), 1)
    start = data.index(b"\r\n\r\n") + 4
    end = data.rindex(b"\r\n--FUZZ--")
    picture = (flip, truncate, image_fields)[draw(0, 2)](data[start:end], draw)
    return data[:start] + picture + data[end:]


GENERIC = {"flip": flip, "truncate": truncate, "extreme": extreme, "duplicate": duplicate}
STRUCTURED = {
    "png": {"fields": image_fields},
    "jpeg": {"fields": image_fields},
    "gif": {"fields": image_fields},
    "npy": {"header": npy_header},
    "h5": {"config": h5_config},
    "keras": {"inner": keras_inner, "zip": zip_fields},
    "idx.gz": {"fields": idx_fields},
    "config.json": {"json": json_mutation},
    "multipart": {"fields": multipart_fields},
}


def mutators(kind: str) -> dict[str, Callable[[bytes, Draw], bytes]]:
    return {**GENERIC, **STRUCTURED[kind]}


# ---- targets: how each reader meets a case ------------------------------------------------------


class _StubService:
    """What the web app needs of a ModelService, without a model: fixed probabilities."""

    predictor = Predictor  # Predictor.row is a staticmethod

    @staticmethod
    def _done(value: object) -> Future:
        future: Future = Future()
        future.set_result(value)
        return future

    def classify(self, image: np.ndarray) -> Future:
        return self._done(np.full(10, 0.1, np.float32))

    def explain(self, image: np.ndarray) -> Future:
        return self._done([])

    def info(self) -> dict:
        return {}


def stub_client(max_upload_bytes: int = 4 << 20) -> TestClient:
    """The page's app over _StubService, answering 500 (not raising) on a server error."""
    app = build_app(_StubService(), max_upload_bytes=max_upload_bytes)  # type: ignore[arg-type]
    return TestClient(app, raise_server_exceptions=False)


SUFFIX = {"png": ".png", "jpeg": ".jpg", "gif": ".gif", "npy": ".npy", "h5": ".h5"}


def _import(path: Path, folder: Path) -> None:
    """What `fashion-jax import` reads and checks, short of writing the workdir."""
    args = build_parser().parse_args(["import", str(path), "--workdir", str(folder / "w")])
    kind = keras_h5.file_kind(path)
    if kind == "weights":
        args.model = "dense"  # a weights-only file needs its architecture from the flags
    keras_files._read(path, kind, args)


def _post(client: TestClient, body: bytes) -> None:
    """The page must answer 2xx, or 4xx with one line; 5xx is a failure."""
    headers = {"content-type": "multipart/form-data; boundary=FUZZ"}
    answer = client.post("/api/predict", content=body, headers=headers)
    if answer.status_code >= 500:
        raise AssertionError(f"{answer.status_code}: {answer.text[:300]}")
    if answer.status_code >= 400:
        message = answer.json()["error"]
        if "\n" in message or not message:
            raise AssertionError(f"{answer.status_code} with a bad line: {message!r}")


def run_target(kind: str, data: bytes, folder: Path, client: TestClient | None = None) -> None:
    """Feed `data` to the reader of `kind` as fashion_jax would meet it."""
    if kind in ("png", "jpeg", "gif", "npy"):
        prepare_bytes(data, f"case{SUFFIX[kind]}")
        return
    if kind == "multipart":
        _post(client or stub_client(), data)
        return
    path = folder / ("model.keras" if kind == "keras" else f"case.{kind}")
    path.write_bytes(data)
    if kind in ("h5", "keras"):
        _import(path, folder)
    elif kind == "idx.gz":
        load_dataset_file(path)
    else:
        run_files.load_json(path)


def load_dataset_file(path: Path) -> None:
    """An IDX file as `--data-dir --no-verify` reads one."""
    load_idx(path, max_bytes=MAX_DATASET_BYTES, limit_name="MAX_DATASET_BYTES")


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def outcome(kind: str, data: bytes, folder: Path, client: TestClient | None = None) -> dict:
    """{"result": "ok" | "refused" | "FAIL", "detail", "seconds", "extra"} of one case."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS, so the peak below is this case's
    before, start = _status("VmRSS:"), time.monotonic()
    result, detail = "ok", ""
    try:
        run_target(kind, data, folder, client)
    except Exception as err:
        detail = f"{err.__class__.__name__}: {err}"
        one_line = "\n" not in str(err) and bool(str(err).strip())
        result = "refused" if is_bad_input(err) and one_line else "FAIL"
        if result == "FAIL":
            detail += "\n" + "".join(traceback.format_exception(err)[-6:])
    seconds, extra = time.monotonic() - start, _status("VmHWM:") - before
    memory = PICTURE_MEMORY_LIMIT if kind in PICTURES else MEMORY_LIMIT
    if result != "FAIL" and (seconds > TIME_LIMIT or extra > memory):
        result, detail = "FAIL", f"{seconds:.2f} s, {extra >> 20} MB extra; {detail}"
    return {"result": result, "detail": detail, "seconds": seconds, "extra": extra}

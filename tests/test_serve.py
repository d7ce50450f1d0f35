"""`fashion-jax serve`: the real server in a process, spoken to over HTTP.

The answers are checked against the library itself: /api/predict against `predict --json` on the
same file, a burst of 50 different uploads against `Predictor` on the same images.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from serve_helpers import photos, png_bytes, saved_model, small_cnn, start_server
from test_cli import odd_workdir, run_main

from fashion_jax.cli.commands import serve
from fashion_jax.inference.inspection import feature_maps
from fashion_jax.inference.preprocess import prepare_bytes
from fashion_jax.serve.service import ModelService
from fashion_jax.storage.model_files import load_model

LIMIT_MB = 0.25  # the servers here refuse uploads over 256 KiB
LIMIT = int(LIMIT_MB * (1 << 20))


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    return small_cnn(tmp_path_factory.mktemp("serve") / "cnn")


@pytest.fixture(scope="module")
def server(cnn_dir, tmp_path_factory):
    running = start_server(cnn_dir, tmp_path_factory.mktemp("logs"), "--max-upload-mb", "0.25")
    yield running
    code, stderr = running.stop()
    assert code in (0, 130) and "Traceback" not in stderr, stderr


@pytest.fixture(scope="module")
def service(cnn_dir):
    """The server's model side in this process: the oracle, and the worker tested directly."""
    model = ModelService(cnn_dir)
    yield model
    model.close()
    assert not model._worker.is_alive()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def upload(client: httpx.Client, name: str, data: bytes, path: str = "/api/predict"):
    return client.post(path, files={"file": (name, data, "image/png")})


def assert_serves(client: httpx.Client) -> None:
    answer = upload(client, "still.png", photos(1)[0])
    assert answer.status_code == 200 and answer.json()["file"] == "still.png"


def test_predict_answers_what_predict_json_prints_for_the_same_file(
    client, cnn_dir, tmp_path, monkeypatch
):
    data = photos(3)[2]
    (tmp_path / "shirt.png").write_bytes(data)
    monkeypatch.chdir(tmp_path)  # so that the CLI's "file" is the bare name an upload carries
    code, out, err = run_main(["predict", "--workdir", cnn_dir, "shirt.png", "--json"])
    assert code == 0, err
    (expected,) = json.loads(out.splitlines()[-1])["predictions"]
    answer = upload(client, "shirt.png", data)
    assert answer.status_code == 200
    assert answer.json() == expected


def test_explain_adds_the_image_every_probability_and_the_feature_maps(client, cnn_dir):
    data = photos(5)[4]
    answer = upload(client, "bag.png", data, "/api/explain").json()
    assert answer["prediction"] == upload(client, "bag.png", data).json()
    prepared = prepare_bytes(data, "bag.png")
    image = np.frombuffer(base64.b64decode(answer["image"]), np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(image, prepared.image)
    probs = np.array(answer["probabilities"])
    assert probs.shape == (10,) and abs(probs.sum() - 1) < 1e-5
    assert int(probs.argmax()) == answer["prediction"]["label"]

    _, model, params = load_model(cnn_dir)
    expected = feature_maps(model, params, prepared.image)
    assert [m["layer"] for m in answer["feature_maps"]] == list(expected) == ["conv0", "conv1"]
    for shown, maps in zip(answer["feature_maps"], expected.values()):
        assert (shown["height"], shown["width"], shown["channels"]) == maps.shape
        pixels = np.frombuffer(base64.b64decode(shown["data"]), np.uint8)
        pixels = pixels.reshape(maps.shape[2], *maps.shape[:2]).transpose(1, 2, 0)
        low, high = maps.min(axis=(0, 1)), maps.max(axis=(0, 1))
        scaled = np.where(high > low, (maps - low) / np.maximum(high - low, 1e-30), 0) * 255
        assert np.abs(pixels - scaled).max() <= 1  # each channel on its own scale, rounded


def test_model_info_describes_the_cnn_and_its_filters(client, cnn_dir):
    info = client.get("/api/model").json()
    assert info["model"] == "cnn" and info["convolutional"] and info["max_upload_bytes"] == LIMIT
    assert info["config"]["model"]["filters"] == [4, 8] and len(info["classes"]) == 10
    kernel = np.asarray(load_model(cnn_dir)[2]["conv0"]["kernel"])[:, :, 0, :]
    weights = np.array(info["filters"]["weights"])  # [filter][row][column]
    np.testing.assert_allclose(weights, kernel.transpose(2, 0, 1), atol=1e-5)
    assert info["filters"]["limit"] == pytest.approx(np.abs(kernel).max())


def test_the_page_and_its_assets_come_from_the_server(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file-input"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css"):
        assert client.get(f"/{asset}").status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere


@pytest.mark.parametrize(
    ("name", "data", "query", "status", "message"),
    [
        ("notes.png", b"this is not an image\n", "", 415, "notes.png: not an image"),
        ("empty.png", b"", "", 400, "empty.png: empty file"),
        ("big.png", b"\x89PNG" + bytes(LIMIT + 1), "", 413, f"larger than {LIMIT} bytes"),
        ("a.png", png_bytes(np.zeros((28, 28), np.uint8)), "?preprocess=x", 400, "preprocess"),
    ],
)
def test_a_bad_upload_is_a_4xx_with_one_line_and_the_server_keeps_serving(
    client, name, data, query, status, message
):
    answer = upload(client, name, data, "/api/predict" + query)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert message in error and "\n" not in error
    assert_serves(client)


def test_a_loopback_server_refuses_requests_for_other_host_names(client):
    # a page on another site that rebinds its DNS name to 127.0.0.1 sends its own Host header
    foreign = client.get("/api/model", headers={"Host": "rebound.example:80"})
    assert foreign.status_code == 400
    assert client.get("/api/model", headers={"Host": "localhost"}).status_code == 200
    assert_serves(client)


def test_requests_without_a_file_or_of_unknown_size_are_refused_too(client):
    answer = client.post("/api/predict", data={"other": "field"})
    assert answer.status_code == 400 and "'file'" in answer.json()["error"]
    answer = client.post("/api/predict", content=b"x", headers={"content-type": "text/plain"})
    assert answer.status_code == 400

    def chunks():  # no Content-Length: the limit is enforced on the bytes as they arrive
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n"
        for _ in range(LIMIT // 4096 + 2):
            yield bytes(4096)
        yield b"\r\n--b--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=b"}
    answer = client.post("/api/predict", content=chunks(), headers=headers)
    assert answer.status_code == 413 and "larger than" in answer.json()["error"]
    assert client.get("/api/nothing").json() == {"error": "Not Found"}
    assert_serves(client)


def test_fifty_concurrent_uploads_each_get_their_own_answer(server, service, client):
    files = photos(50, seed=11)
    names = [f"photo{i:02d}.png" for i in range(50)]
    predictor = service.predictor
    prepared = [prepare_bytes(data, name) for data, name in zip(files, names)]
    probs = predictor.predict_images(np.stack([p.image for p in prepared]))
    expected = [predictor.row(n, p, q) for n, p, q in zip(names, prepared, probs)]
    assert len({row["probability"] for row in expected}) > 40  # the images do differ

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
            return await asyncio.gather(
                *(c.post("/api/predict", files={"file": (n, d)}) for n, d in zip(names, files))
            )

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 50
    for answer, want in zip(answers, expected):
        got = answer.json()
        assert got["file"] == want["file"] and got["label"] == want["label"]
        assert [t["label"] for t in got["top3"]] == [t["label"] for t in want["top3"]]
        assert got["probability"] == pytest.approx(want["probability"], rel=1e-5)
    assert_serves(client)


def test_a_request_whose_client_went_away_leaves_the_model_worker_serving(service):
    image = prepare_bytes(photos(1)[0], "a.png").image
    gate = threading.Event()
    busy = service._call(gate.wait)  # holds the worker, so the next job waits in the queue
    gone = service.classify(image)
    assert gone.cancel()  # what asyncio.wrap_future does when the request is cancelled
    gate.set()
    busy.result(timeout=60)
    probs = service.classify(image).result(timeout=60)
    np.testing.assert_allclose(probs, service.predictor.predict_images(image[None])[0])


def test_a_model_without_conv_layers_says_so_and_ctrl_c_stops_it_cleanly(tmp_path):
    workdir = saved_model(tmp_path / "dense", "dense")
    running = start_server(workdir, tmp_path)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as c:
            info = c.get("/api/model").json()
            assert info["model"] == "dense" and not info["convolutional"]
            assert info["filters"] is None
            answer = upload(c, "a.png", photos(1)[0], "/api/explain").json()
            assert answer["feature_maps"] == [] and answer["prediction"]["file"] == "a.png"
    finally:
        code, stderr = running.stop(signal.SIGINT)
    assert code in (0, 130), stderr
    assert "Traceback" not in stderr and "stopped serving" in stderr
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=5):
        pass  # nothing listens there any more


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workdir", "{tmp}/nothing"], "nothing"),
        (["--workdir", "{tmp}", "--max-upload-mb", "0"], "--max-upload-mb must be positive"),
        (["--workdir", "{tmp}", "--port", "70000"], "--port must be 0..65535"),
    ],
)
def test_bad_startup_is_one_error_line_and_exit_2(argv, message, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run_main(["serve", "--port", "0", *argv])
    assert code == 2 and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("error: ") and message in line


@pytest.mark.parametrize("kind", ["file", "empty", "foreign", "symlink-loop", "edited-config"])
def test_serving_a_workdir_that_is_not_a_run_is_one_error_line(kind, tmp_path):
    code, _, err = run_main(["serve", "--port", "0", "--workdir", odd_workdir(tmp_path, kind)])
    assert code == 2 and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("error: ")


def test_missing_web_libraries_are_named_in_one_line(monkeypatch):
    monkeypatch.setattr(serve, "WEB_LIBS", ("starlette", "no_such_web_library"))
    with pytest.raises(serve.CliError, match=r"pip install 'fashion-jax\[serve\]'"):
        serve.check_web_libs()


@pytest.mark.parametrize(
    "host, hosts",
    [
        ("127.0.0.1", serve.LOOPBACK_HOSTS),
        ("localhost", serve.LOOPBACK_HOSTS),
        ("::1", serve.LOOPBACK_HOSTS),
        ("0.0.0.0", ("*",)),
        ("192.168.1.5", ("*",)),
    ],
)
def test_only_a_loopback_bind_limits_the_host_names(host, hosts):
    assert serve.allowed_hosts(host) == hosts


def test_sigterm_during_an_upload_drains_it_then_stops_cleanly(tmp_path):
    """How systemd, Docker and Kubernetes stop a server: the upload in flight when SIGTERM lands
    is still answered, then "stopped serving W" and exit 0 (uvicorn's default re-raise gave 143)."""
    workdir = saved_model(tmp_path / "dense", "dense")
    running = start_server(workdir, tmp_path)
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + photos(1)[0] + b"\r\n--B--\r\n"
    )
    head = (
        f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: multipart/form-data; boundary=B\r\n\r\n"
    ).encode()
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=60) as conn:
            conn.sendall(head + body[:100])
            time.sleep(1.0)  # the server has the request's head and part of its body
            running.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)  # it is shutting down: listening no more, draining this request
            conn.sendall(body[100:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
    finally:
        code, stderr = running.stop(signal.SIGTERM)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["file"] == "a.png"
    assert code == 0 and f"stopped serving {workdir}" in stderr, (code, stderr)
    assert "Traceback" not in stderr

"""What test_serve and test_serve_browser share: small saved models, synthetic photos as PNG bytes,
and a real `fashion-jax serve` process on a free port."""

from __future__ import annotations

import dataclasses
import io
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from conftest import synthetic_images
from PIL import Image

from fashion_jax.config import TrainConfig, model_config
from fashion_jax.model.models import build_model, init_params
from fashion_jax.storage.model_files import save_model

STARTUP_SECONDS = 180  # JAX import and the first compile, on a loaded 2-core machine


def saved_model(folder: Path, name: str, **overrides) -> Path:
    """A whole model with its seed-0 initial params: the server and the CLI must agree on any
    params, and training one would cost far more than everything these tests check."""
    config = TrainConfig(model=model_config(name, **overrides))
    save_model(folder, config, init_params(build_model(config.model), config.seed))
    return folder


def small_cnn(folder: Path) -> Path:
    return saved_model(folder, "cnn", filters=(4, 8), hidden=16)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def photos(n: int, seed: int = 7) -> list[bytes]:
    """n different 28x28 PNGs (conftest's synthetic garments)."""
    images, _ = synthetic_images(n, seed)
    return [png_bytes(image) for image in images]


@dataclasses.dataclass
class Server:
    proc: subprocess.Popen
    url: str
    stderr: Path

    def stop(self, signum: int = signal.SIGINT, timeout: float = 60) -> tuple[int, str]:
        """Send `signum`; (exit status, stderr). Killed after `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc.stdout.close()
        return code, self.stderr.read_text()


def start_server(
    workdir: Path,
    log_dir: Path,
    *flags: str,
    program: Sequence[str] = (sys.executable, "-m", "fashion_jax.cli"),
    env: dict[str, str] | None = None,
) -> Server:
    """`fashion-jax serve --workdir workdir --port 0 ...` in a process (`program` runs fashion-jax:
    test_wheel's is an installed script); returns once it has printed the address it serves on
    (it is listening by then)."""
    stderr = log_dir / f"serve-{time.monotonic_ns()}.err"
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "FASHION_JAX_DEBUG"}
    command = [*program, "serve", "--workdir", str(workdir)]
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [*command, "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("serving "):
                return Server(proc, line.rsplit(" on ", 1)[1].strip(), stderr)
    proc.kill()
    proc.wait()
    raise AssertionError(f"serve did not start: {stderr.read_text()}")

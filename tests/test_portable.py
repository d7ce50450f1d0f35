"""Where `fcntl` and `resource` do not exist (Windows): the package imports, the workdir lock still
refuses a second writer and dies with its holder, and a short fit runs, with peak RSS unknown.
Also the unit of ru_maxrss on macOS (bytes) against Linux (KiB)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_jax.training import fit_result

ROOT = Path(__file__).resolve().parents[1]
# Run first in each child: `import fcntl` and `import resource` fail from here on, as on Windows.
NO_POSIX = "import sys; sys.modules['fcntl'] = None; sys.modules['resource'] = None\n"
HOLD = NO_POSIX + (
    "import time; from pathlib import Path; from fashion_jax.storage.workdir import WorkdirLock\n"
    "WorkdirLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(120)\n"
)
REFUSE_THEN_FIT = NO_POSIX + (
    "import json; from pathlib import Path\n"
    "from conftest import synthetic_images\n"
    "from fashion_jax.config import RunOptions, TrainConfig, model_config\n"
    "from fashion_jax.data.dataset import FashionMNIST\n"
    "from fashion_jax.training.loop import fit\n"
    "from fashion_jax.storage.workdir import WorkdirError, WorkdirLock\n"
    "try:\n"
    "    WorkdirLock(Path(sys.argv[1])).acquire()\n"
    "    refusal = None\n"
    "except WorkdirError as err:\n"
    "    refusal = str(err)\n"
    "parts = [synthetic_images(n, seed) for n, seed in ((256, 0), (128, 1), (128, 2))]\n"
    "data = FashionMNIST(*parts[0], *parts[1], *parts[2], 'synthetic')\n"
    "config = TrainConfig(model=model_config('mlp'), optimizer='adam', epochs=2, seed=0)\n"
    "result = fit(config, data, Path(sys.argv[2]), RunOptions(quiet=True))\n"
    "print(json.dumps({'refusal': refusal, 'result': result.summary(),\n"
    "    'posix': [m for m in ('fcntl', 'resource') if sys.modules.get(m) is not None]}))\n"
)


def child(script: str, *args: object, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT / "tests",  # conftest's synthetic_images
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_lock_and_fit_without_fcntl_or_resource(tmp_path):
    holder = child(HOLD, tmp_path / "run")
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        fitter = child(REFUSE_THEN_FIT, tmp_path / "run", tmp_path / "fit")
        out, err = fitter.communicate(timeout=240)
        assert fitter.returncode == 0, err
        got = json.loads(out.splitlines()[-1])
        assert got["posix"] == []
        assert got["refusal"].startswith(
            f"{tmp_path / 'run'} is in use by process {holder.pid} (since "
        )
        result = got["result"]
        assert result["epochs_run"] == 2 and result["peak_rss_mb"] is None
        assert json.loads((tmp_path / "fit" / "result.json").read_text())["peak_rss_mb"] is None
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.communicate()
    again = child(HOLD, tmp_path / "run")  # no stale lock after kill -9
    try:
        assert again.stdout.readline().strip() == "locked", again.stderr.read()
    finally:
        again.kill()
        again.communicate()


@pytest.mark.parametrize(
    "platform, maxrss, mib",
    [("linux", 3 * 2**20, 3072.0), ("darwin", 3 * 2**30, 3072.0), ("freebsd14", 3 * 2**20, 3072.0)],
)
def test_peak_rss_is_mib_on_every_unix(monkeypatch, platform, maxrss, mib):
    import resource

    class Usage:
        ru_maxrss = maxrss  # KiB on Linux and the BSDs, bytes on macOS

    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(resource, "getrusage", lambda who: Usage)
    assert fit_result.peak_rss_mb() == mib


def test_peak_rss_of_this_process_is_plausible():
    mib = fit_result.peak_rss_mb()
    assert 10 < mib < 64 * 1024  # this test process: more than Python alone, less than the box

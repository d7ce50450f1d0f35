"""pip: a wheel built from the repository, installed into a fresh virtual environment without -e,
gives a working `fashion-jax` with the serve page's assets, run from a folder outside the repo.

The fresh venv sees this environment's site-packages through a .pth file, so the dependencies
need no download; fashion_jax itself must come from the wheel, and the test checks that it does.
Building the wheel is pip's isolated build, as for any user: it gets setuptools from the index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest
from conftest import require_real_data
from serve_helpers import start_server

from fashion_jax.data.dataset import SYSTEM_DIR

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "fashion_jax" / "serve" / "web"
BUILD_INPUTS = ("pyproject.toml", "README.md", "fashion_jax")  # all that setuptools reads
WHERE = """
import importlib.resources, json, fashion_jax
web = importlib.resources.files("fashion_jax.serve") / "web"
print(json.dumps({"module": fashion_jax.__file__, "web": sorted(p.name for p in web.iterdir()),
                  "index": (web / "index.html").is_file()}))
"""


def run(argv: list[str | os.PathLike], cwd: Path, env: dict[str, str]) -> str:
    """Run argv; its stdout. A failure shows the command's stderr."""
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done.stdout


def build_wheel(tmp: Path) -> Path:
    """`pip wheel` on a copy of the build inputs: an in-tree build would leave build/ and
    *.egg-info in the repository. pip isolates the build, as it does for any user."""
    source, out = tmp / "source", tmp / "dist"
    source.mkdir()
    skip = shutil.ignore_patterns("__pycache__")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=skip)
        else:
            shutil.copy2(ROOT / name, source / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, source]
    run(pip_wheel, tmp, clean_env())
    (wheel,) = out.glob("fashion_jax-*.whl")
    return wheel


def make_venv(folder: Path) -> Path:
    """A venv without pip whose only extra path is this environment's site-packages; its python.

    A plain path line in a .pth adds the folder to sys.path without running the .pth files in it,
    so an editable install of fashion_jax there (its finder is started by such a .pth) stays off.
    """
    run([sys.executable, "-m", "venv", "--without-pip", folder], folder.parent, clean_env())
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(run([python, "-c", where], folder, clean_env()).strip())
    (site / "dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return python


def clean_env() -> dict[str, str]:
    """Our environment, less what would put the source tree on the path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FASHION_JAX_DEBUG")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the venv's python, its fashion-jax script), the wheel installed with the outer pip."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    python = make_venv(tmp / "venv")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    run([*pip, "--no-index", wheel], tmp, clean_env())
    return python, python.parent / ("fashion-jax.exe" if os.name == "nt" else "fashion-jax")


def test_the_package_and_its_page_come_from_the_wheel(installed, tmp_path):
    python, _ = installed
    where = json.loads(run([python, "-c", WHERE], tmp_path, clean_env()))
    module = Path(where["module"]).resolve()
    assert module.is_relative_to(python.parent.parent.resolve()), module
    assert not module.is_relative_to(ROOT), module
    assert where["index"]
    assert where["web"] == sorted(p.name for p in WEB.iterdir() if p.is_file())


@pytest.mark.realdata
def test_the_installed_command_runs_outside_the_repository(installed, tmp_path):
    require_real_data(system_dir_only=True)
    _, fashion_jax = installed
    env = clean_env() | {"FASHION_JAX_DATA": str(SYSTEM_DIR)}
    assert "train" in run([fashion_jax, "--help"], tmp_path, env)
    shapes = json.loads(run([fashion_jax, "shapes", "--model", "cnn", "--json"], tmp_path, env))
    assert shapes["output"] == [10] and shapes["walk"][0]["shape"] == [28, 28, 1]
    train = [fashion_jax, "train", "--model", "dense", "--epochs", "1", "--subset", "256"]
    result = json.loads(run([*train, "--json", "--quiet"], tmp_path, env).splitlines()[-1])
    assert result["epochs_run"] == 1 and 0.1 < result["test_accuracy"] <= 1
    workdir = tmp_path / result["workdir"]  # the default, runs/default, where the command ran
    assert workdir == tmp_path / "runs" / "default" and (workdir / "result.json").is_file()
    server = start_server(workdir, tmp_path, program=[str(fashion_jax)], env=env)
    try:
        for name in ("", "app.js", "style.css"):
            page = httpx.get(f"{server.url}/{name}", timeout=30)
            assert page.status_code == 200
            assert page.content == (WEB / (name or "index.html")).read_bytes()
    finally:
        server.stop()

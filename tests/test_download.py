"""Downloading the data when no local copy exists (download.py), over real HTTP from a server on
127.0.0.1 that serves the real files and faulty variants of them. Nothing leaves the machine."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_real_data
from mirror import FAULTY, STALL_SECONDS, official, serving

from fashion_jax import cli
from fashion_jax.data import dataset as data
from fashion_jax.data import download
from fashion_jax.data.idx import DataError

pytestmark = pytest.mark.realdata
ROOT = Path(__file__).resolve().parents[1]
FIRST = "train-images-idx3-ubyte.gz"
TIMEOUT = 0.5


@pytest.fixture(scope="module")
def server():
    require_real_data(system_dir_only=True)
    with serving() as httpd:
        yield httpd


@pytest.fixture
def no_local_copy(monkeypatch, tmp_path):
    """No --data-dir, $FASHION_JAX_DATA, system folder or TFDS; the cache under tmp_path."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "no-system")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no-tfds"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    return tmp_path / "cache-home" / "fashion_jax" / "data"


def test_the_cache_folder_is_xdg_on_linux(monkeypatch, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("the XDG rule is Linux's")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert download.cache_dir() == tmp_path / "fashion_jax" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert download.cache_dir() == Path.home() / ".cache" / "fashion_jax" / "data"


def test_missing_data_is_downloaded_once_into_the_cache(server, no_local_copy, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, f"{server.url}/good/")
    before = len(server.paths)
    start = time.perf_counter()
    assert data.resolve_source(download=True, progress=False) == ("cache", no_local_copy)
    seconds = time.perf_counter() - start
    print(f"full download from the local mirror: {seconds:.2f} s")
    assert len(server.paths) - before == 4
    assert sorted(p.name for p in no_local_copy.iterdir()) == sorted(download.GZ_SHA256)
    assert all(official(p) for p in no_local_copy.iterdir())
    # A later run finds the cache, checks the SHA-256 of what it loads and asks the network nothing.
    ds = data.load_dataset()
    assert ds.sizes() == {"train": 48000, "val": 12000, "test": 10000}
    assert ds.source == f"cache:{no_local_copy}"
    assert len(server.paths) - before == 4


def test_the_cache_comes_after_the_system_folder_and_before_tfds(no_local_copy, tmp_path):
    for name in download.GZ_SHA256:  # only names are looked at when choosing a source
        for folder in (no_local_copy, tmp_path / "no-system"):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"")
    (tmp_path / "no-tfds" / "fashion_mnist").mkdir(parents=True)
    assert data.resolve_source()[0] == "system"
    for name in download.GZ_SHA256:
        (tmp_path / "no-system" / name).unlink()
    assert data.resolve_source() == ("cache", no_local_copy)


def test_mirrors_are_tried_in_turn(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "cache_dir", lambda: tmp_path)
    out = download.fetch(sources=[f"{server.url}/missing/", f"{server.url}/good/"])
    assert out["to"] == str(tmp_path)
    assert [f["from"] for f in out["files"]] == [
        f"{server.url}/good/{name}" for name in download.GZ_SHA256
    ]
    assert out["downloaded"] == sum(size for size, _ in download.GZ_SHA256.values())
    # Files already there and whole are kept, not fetched again; a wrong one is replaced.
    (tmp_path / FAULTY).write_bytes(b"not the labels")
    again = download.fetch(sources=[f"{server.url}/good/"])
    assert [f["from"] is None for f in again["files"]] == [True, False, True, True]
    assert official(tmp_path / FAULTY)


def test_a_wrong_file_in_a_users_folder_is_refused_not_deleted(server, tmp_path):
    (tmp_path / FAULTY).write_bytes(b"the user's own labels")
    with pytest.raises(DataError, match="is not the official file; move it away"):
        download.fetch(tmp_path, sources=[f"{server.url}/good/"])
    assert [p.name for p in tmp_path.iterdir()] == [FAULTY]
    assert (tmp_path / FAULTY).read_bytes() == b"the user's own labels"


@pytest.mark.parametrize(
    "mode, cause",
    [
        ("404", "HTTP 404 Not Found"),
        ("500", "HTTP 500 Internal Server Error"),
        ("wrong", "wrong SHA-256: got 29491 bytes with "),
        ("truncated", "truncated body (14745 bytes came, 14746 more were announced)"),
        ("stall-headers", "timed out (nothing received for 0.5 s)"),
        ("stall-body", "timed out (nothing received for 0.5 s)"),
    ],
)
def test_a_failure_is_one_line_naming_url_and_cause_and_keeps_nothing(
    server, tmp_path, mode, cause
):
    url = f"{server.url}/{mode}/{FAULTY}"
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        download.fetch(tmp_path, sources=[f"{server.url}/{mode}/"], timeout=TIMEOUT)
    assert time.perf_counter() - start < STALL_SECONDS  # bounded by the timeout, not the server
    message = str(err.value)
    print(f"{mode}: {message}")
    assert "\n" not in message
    assert f"{url}: {cause}" in message
    assert message.endswith("nothing was kept")
    # The file fetched before the failure is whole and verified; nothing else is there.
    assert [p.name for p in tmp_path.iterdir()] == [FIRST]
    assert official(tmp_path / FIRST)


def test_no_server_is_one_line_and_keeps_nothing(tmp_path):
    with pytest.raises(DataError) as err:
        download.fetch(tmp_path, sources=["http://127.0.0.1:9/"], timeout=TIMEOUT)
    assert f"http://127.0.0.1:9/{FIRST}: cannot connect (Connection refused)" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_offline_never_touches_the_network(server, no_local_copy, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, f"{server.url}/good/")
    monkeypatch.setenv(download.OFFLINE_ENV, "1")
    before = len(server.paths)
    with pytest.raises(DataError, match="fashion-jax data --download") as err:
        data.load_dataset()
    assert "apt-get install -y dataset-fashion-mnist" in str(err.value)
    with pytest.raises(DataError, match=r"FASHION_JAX_OFFLINE: downloads are off") as err:
        download.fetch()
    assert "--data-dir" in str(err.value) and str(no_local_copy) in str(err.value)
    assert len(server.paths) == before
    assert not no_local_copy.exists()
    # Offline with every file there already: nothing to fetch, so no error.
    monkeypatch.delenv(download.OFFLINE_ENV)
    download.fetch()
    monkeypatch.setenv(download.OFFLINE_ENV, "1")
    assert download.fetch()["downloaded"] == 0


KILLABLE_FETCH = (
    "import sys; from fashion_jax.data import download\n"
    "download.fetch(sys.argv[1], sources=[sys.argv[2]], progress=False, timeout=60)\n"
)


def test_a_killed_download_leaves_nothing_taken_for_data(server, tmp_path):
    fetcher = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_FETCH, str(tmp_path), f"{server.url}/stall-body/"],
        cwd=ROOT,
    )
    part = tmp_path / f".{FAULTY}.{fetcher.pid}.part"
    try:
        deadline = time.monotonic() + 60
        while not part.is_file():  # made once the first file is in place; then the stall
            assert time.monotonic() < deadline and fetcher.poll() is None
            time.sleep(0.02)
    finally:
        fetcher.kill()  # kill -9: no cleanup runs
        fetcher.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [part.name, FIRST]
    assert data.find_file(tmp_path, FAULTY.removesuffix(".gz")) is None
    assert not download.complete(tmp_path)
    # A later fetch completes; the dead download's part goes once it is an hour old.
    download.fetch(tmp_path, sources=[f"{server.url}/good/"])
    assert part.is_file()  # it might still be some live process's
    old = time.time() - download.STALE_PART_SECONDS - 1
    os.utime(part, (old, old))
    download.fetch(tmp_path, sources=[f"{server.url}/good/"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(download.GZ_SHA256)
    assert all(official(p) for p in tmp_path.iterdir())


# ---------------------------------------------------------------- the command line


def run_process(
    args: list[str], env: dict[str, str], prefix: tuple[str, ...] = (), **kw
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "fashion_jax.cli", *args, "--no-compile-cache"],
        env=env,
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def cli_env(tmp_path: Path, mirror: str) -> dict[str, str]:
    """The system folder hidden, an empty cache, TFDS absent, the local mirror."""
    drop = {data.ENV_VAR, download.OFFLINE_ENV, "FASHION_JAX_DEBUG"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        FASHION_JAX_SYSTEM_DATA=str(tmp_path / "no-system"),
        XDG_CACHE_HOME=str(tmp_path / "cache-home"),
        TFDS_DATA_DIR=str(tmp_path / "no-tfds"),
        HOME=str(tmp_path),
        FASHION_JAX_MIRROR=mirror,
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    return env


def test_the_command_line_downloads_and_reports_in_json(server, tmp_path):
    cache = tmp_path / "cache-home" / "fashion_jax" / "data"
    got = run_process(["data", "--download", "--json"], cli_env(tmp_path, f"{server.url}/good/"))
    assert got.returncode == 0, got.stderr
    assert got.stderr == ""  # --json: errors only
    out = json.loads(got.stdout.splitlines()[-1])
    assert out["to"] == str(cache)
    assert out["downloaded"] == 30878551
    assert out["files"][0] == {
        "name": FIRST,
        "bytes": 26421856,
        "from": f"{server.url}/good/{FIRST}",
    }
    assert sorted(p.name for p in cache.iterdir()) == sorted(download.GZ_SHA256)


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """main() in this process, as test_cli does: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([*map(str, argv), "--no-compile-cache"])
    return code, out.getvalue(), err.getvalue()


def test_any_data_command_downloads_what_is_missing_unless_offline(
    server, no_local_copy, monkeypatch, tmp_path
):
    monkeypatch.setenv(download.MIRROR_ENV, f"{server.url}/good/")
    before = len(server.paths)
    code, _, err = run_main(["data", "--offline"])
    assert code == 2
    assert err.startswith("error: fashion-mnist: no Fashion-MNIST data found; download it with ")
    assert len(err.splitlines()) == 1 and len(server.paths) == before

    code, out, err = run_main(["data", "--json", "--out", tmp_path / "s.png"])
    assert code == 0, err
    assert err == ""  # --json: no progress bar
    assert json.loads(out.splitlines()[-1])["source"] == f"cache:{no_local_copy}"
    assert len(server.paths) - before == 4


def test_the_command_line_names_the_url_and_cause(server, no_local_copy, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, f"{server.url}/500/")
    code, _, err = run_main(["data", "--download"])
    assert code == 2
    assert err == (
        f"error: download of {FAULTY}: {server.url}/500/{FAULTY}: "
        "HTTP 500 Internal Server Error; nothing was kept\n"
    )
    assert [p.name for p in no_local_copy.iterdir()] == [FIRST]


def test_a_full_disk_is_one_line_and_keeps_nothing(server, tmp_path):
    import resource

    def small_files() -> None:  # writes past 1 MB fail (EFBIG) as on a full disk (ENOSPC)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    target = tmp_path / "data"
    env = cli_env(tmp_path, f"{server.url}/good/")
    argv = ["data", "--download", "--data-dir", str(target)]
    got = run_process(argv, env, preexec_fn=small_files)
    assert got.returncode == 2
    assert got.stderr == (
        f"error: {server.url}/good/{FIRST}: cannot save into {target} (File too large)\n"
    )
    assert list(target.iterdir()) == []


def read_only(folder: Path) -> tuple[tuple[str, ...], str]:
    """A command prefix under which `folder` is read-only, and the error's cause: a read-only bind
    mount in a private mount namespace (it binds root too), else the folder's write bits."""
    mount = ("unshare", "-rm", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder))
    with contextlib.suppress(OSError):
        if subprocess.run([*mount, "true"], capture_output=True).returncode == 0:
            return mount, "Read-only file system"
    if os.geteuid() == 0:
        message = "root writes past permission bits, and there is no unshare to mount read-only"
        if os.environ.get("CI"):  # CI runs as root with unshare: a skip there would hide the test
            pytest.fail(message)
        pytest.skip(message)
    folder.chmod(0o555)
    return (), "Permission denied"


def test_a_read_only_folder_is_one_line_and_keeps_nothing(server, tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    prefix, cause = read_only(target)
    env = cli_env(tmp_path, f"{server.url}/good/")
    got = run_process(["data", "--download", "--data-dir", str(target)], env, prefix)
    target.chmod(0o755)
    assert got.returncode == 2, got.stderr
    assert got.stderr == f"error: {server.url}/good/{FIRST}: cannot save into {target} ({cause})\n"
    assert list(target.iterdir()) == []

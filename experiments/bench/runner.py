"""Running the benchmark: one fresh child process per run, timed, with its peak RSS, compilation
cache and the trained run that evaluate and predict read; repeats interleaved across workloads."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments.bench.report import fmt
from experiments.bench.spec import ROOT, Options, Row, Run, Workload

# ------------------------------------------------------------------------------ running one job ---


def child_env(package_root: Path = ROOT) -> dict[str, str]:
    """The child's environment: its fashion_jax first (a --baseline export holds only the package),
    then this checkout, whose `experiments` package the `python -m experiments.bench...` children
    run (the child's cwd is package_root, which `python -m` puts first on sys.path)."""
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "jax"  # ~/.keras/keras.json may name TensorFlow, which is not installed
    paths = dict.fromkeys((str(package_root), str(ROOT), env.get("PYTHONPATH")))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _kill_group(pid: int, fired: threading.Event) -> None:
    fired.set()
    # the child leads its own session: this reaches its workers, nothing else
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_process(
    argv: list[str], timeout: float, package_root: Path = ROOT, env: dict[str, str] | None = None
) -> tuple[int, float, float, str, str, bool]:
    """(exit code, launch-to-exit seconds, child peak RSS MB, stdout, stderr, timed out)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=package_root,
            env=env or child_env(package_root),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        fired = threading.Event()
        timer = threading.Timer(timeout, _kill_group, (proc.pid, fired))
        timer.start()
        try:
            # wait4, not Popen.wait: it also hands back this child's own rusage (RUSAGE_CHILDREN
            # would be the maximum over every child so far).
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            _kill_group(proc.pid, threading.Event())
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it has been reaped
        out.seek(0)
        err.seek(0)
        return (
            proc.returncode,
            wall,
            usage.ru_maxrss / 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            fired.is_set(),
        )


def last_json(stdout: str) -> dict | None:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    try:
        res = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
    return res if isinstance(res, dict) else None


def one_line(text: str, limit: int = 160) -> str:
    """The last non-empty line (a traceback's last line names the error), safe inside a markdown
    cell."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = (lines[-1] if lines else "no output").replace("|", "/")
    return line if len(line) <= limit else line[: limit - 1] + "…"


STATS_FILE = "bench_stats.json"  # what cli_stats.py writes in the run's private folder


def run_once(w: Workload, repeat: int, opts: Options) -> Run:
    with tempfile.TemporaryDirectory(prefix=f"bench-{w.name}-") as tmp:
        run = Run(w.name, repeat, w.argv(opts, Path(tmp)), load_1min=os.getloadavg()[0])
        try:
            run.argv = with_fixture(run.argv, w.package_root, opts)
            env = run_env(w, opts, Path(tmp))
            rc, wall, rss, out, err, timed_out = run_process(
                run.argv, opts.timeout, w.package_root, env
            )
            stats = read_stats(Path(tmp) / STATS_FILE)
        except (OSError, FixtureError) as e:
            run.error = one_line(f"{type(e).__name__}: {e}")
            return run
    result = last_json(out) if w.json_out else ({} if rc == 0 else None)
    if result is not None and stats is not None:
        result["bench_stats"] = stats
    run.returncode, run.wall_seconds, run.rss_mb, run.result = rc, wall, rss, result
    if timed_out:
        run.error = f"timeout after {opts.timeout:.0f} s"
    elif rc != 0:
        run.error = f"exit {rc}: {one_line(err)}"
    elif run.result is None:
        run.error = "no JSON object on the last stdout line"
    elif run.result.get("skipped"):
        run.skipped = str(run.result["skipped"])
    else:
        _apply_parse(w, run, wall)
    return run


def run_env(w: Workload, opts: Options, tmp: Path) -> dict[str, str]:
    """The child's environment: its package first, and its compilation cache as `w.cache` says."""
    env = child_env(w.package_root)
    env["FASHION_JAX_BENCH_STATS"] = str(tmp / STATS_FILE)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # an inherited folder would outrank the row's own
    if w.cache == "off":
        env["FASHION_JAX_NO_COMPILE_CACHE"] = "1"
        return env
    env.pop("FASHION_JAX_NO_COMPILE_CACHE", None)
    folder = (opts.scratch or tmp) / "cache" / (w.cache_key or w.name)
    if w.cache == "cold":
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    env["XDG_CACHE_HOME"] = str(folder)  # the CLI's cache is $XDG_CACHE_HOME/fashion_jax
    return env


def read_stats(path: Path) -> dict | None:
    try:
        stats = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return stats if isinstance(stats, dict) else None


class FixtureError(RuntimeError):
    """The trained run that evaluate and predict read could not be made."""


_FIXTURES: dict[Path, dict[str, str] | str] = {}  # package root -> placeholders, or the error


def fixture(package_root: Path, opts: Options) -> dict[str, str]:
    """{run}: a dense model trained for one epoch by that package; {image}: one test image (.npy).

    Made once per package, so a --baseline export reads a run it wrote itself."""
    if package_root not in _FIXTURES:
        base = opts.scratch or Path(tempfile.mkdtemp(prefix="bench-fixture-"))
        folder = base / "fixtures" / str(len(_FIXTURES))
        run, image = folder / "run", folder / "image.npy"
        env = {**child_env(package_root), "FASHION_JAX_NO_COMPILE_CACHE": "1"}
        train = [sys.executable, "-m", "fashion_jax.cli", "train", "--model", "dense"]
        train += ["--epochs", "1", "--workdir", str(run), "--quiet"]
        train += ["--subset", str(opts.subset)] if opts.subset else []
        save = "import sys, numpy as np; from fashion_jax.data.dataset import load_split; "
        save += "np.save(sys.argv[1], load_split('test')[0][0])"
        _FIXTURES[package_root] = {"{run}": str(run), "{image}": str(image)}
        for cmd in (train, [sys.executable, "-c", save, str(image)]):
            done = subprocess.run(
                cmd, cwd=package_root, env=env, capture_output=True, text=True, timeout=opts.timeout
            )
            if done.returncode != 0:
                _FIXTURES[package_root] = f"fixture: {one_line(done.stderr)}"
                break
    made = _FIXTURES[package_root]
    if isinstance(made, str):
        raise FixtureError(made)
    return made


def with_fixture(argv: list[str], package_root: Path, opts: Options) -> list[str]:
    if not any("{run}" in a or "{image}" in a for a in argv):
        return argv
    places = fixture(package_root, opts)
    out = []
    for a in argv:
        for key, value in places.items():
            a = a.replace(key, value)
        out.append(a)
    return out


def _apply_parse(w: Workload, run: Run, wall: float) -> None:
    try:
        for key, value in w.parse(run.result, wall).items():
            setattr(run, key, value)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        run.error = one_line(f"bad JSON: {type(e).__name__}: {e}")


def rows_from_saved(runs: Sequence[dict], workloads: Sequence[Workload]) -> list[Row]:
    """Rows of a saved run (bench.json's "runs"), each parsed again by its workload's current
    parser: a report's wording or targets can change without measuring again."""
    rows = {w.name: Row(w) for w in workloads}
    for fields in runs:
        run = Run(**fields)
        row = rows.get(run.workload)
        if row is None:
            continue
        if run.error is None and run.skipped is None and run.result and run.wall_seconds:
            _apply_parse(row.workload, run, run.wall_seconds)
        row.runs.append(run)
    return [row for row in rows.values() if row.runs]


def run_bench(
    workloads: Sequence[Workload], opts: Options, log: Callable[[str], None] = print
) -> list[Row]:
    rows = [Row(w) for w in workloads]
    total, done = opts.repeats * len(rows), 0
    for row in rows:  # untimed: they fill the file and compilation caches the row is meant to find
        for i in range(row.workload.warmup):
            warm = run_once(row.workload, -1 - i, opts)
            log(f"[warm-up] {row.workload.name}: {_run_summary(warm)}")
    for repeat in range(opts.repeats):  # interleaved: noise lands on every implementation alike
        for row in rows:
            try:
                run = run_once(row.workload, repeat, opts)
            except Exception as e:  # a harness bug in one run must not lose the others' figures
                run = Run(
                    row.workload.name,
                    repeat,
                    [],
                    error=one_line(f"harness: {type(e).__name__}: {e}"),
                )
            row.runs.append(run)
            done += 1
            log(f"[{done}/{total}] {run.workload} #{repeat + 1}: {_run_summary(run)}")
    return rows


def _run_summary(run: Run) -> str:
    if run.error or run.skipped:
        return run.error or f"skipped: {run.skipped}"
    compiled = f", compile {run.compile_seconds:.2f} s" if run.compile_seconds is not None else ""
    return (
        f"{fmt(run.seconds)} s{compiled}, acc {fmt(run.accuracy, '.4f')}, "
        f"RSS {fmt(run.rss_mb, '.0f')} MB"
    )

"""Side-by-side benchmark: fashion_jax against PyTorch, Keras and scikit-learn on the chapter's
workloads.

    python experiments/bench.py [--repeats 3] [--subset N] [--only NAME[,NAME]]
                                [--baseline GIT_REF] [--out experiments/BENCH.md]

Every run is a fresh subprocess, so each pays its own imports and compiles and has its own peak RSS
(the child's ru_maxrss, read with os.wait4: one measure for every implementation). Repeats are
interleaved (ours, torch, keras, ours, torch, keras, ...) so machine noise falls on all alike. A
workload that fails, times out or has no peer installed becomes a marked row; the harness itself
keeps going.

--baseline GIT_REF also runs each of our workloads with the package as it was at GIT_REF (exported
to a temporary folder with `git archive`), interleaved with the current one: the "ours/baseline"
column is a before/after ratio measured side by side. The `predict` start-to-answer row always has
such a twin, at BEFORE_FAST_START (the code before the start-up work of issue 15).

Compilation cache: the epoch, CV and fast-preset rows run without JAX's persistent cache
(FASHION_JAX_NO_COMPILE_CACHE=1), as every row did before the cache existed. The whole-process
rows set it per row: "cold" (a fresh, empty cache folder), then "warm" (the same folder, just
filled); their compile time comes from jax.monitoring (experiments/cli_stats.py).

Writes a markdown table to --out (default experiments/BENCH.md) and the raw runs to --json-out
(default: <folder of --out>/out/bench.json).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "experiments" / "peers.py"
DEFAULT_OUT = ROOT / "experiments" / "BENCH.md"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "keras", "scikit-learn", "psutil")

CLI_STATS = ROOT / "experiments" / "cli_stats.py"
BEFORE_FAST_START = "5b21e68"  # the code before issue 15's start-up work: predict's baseline
TASKS: dict[str, str] = {
    "cnn": "CNN, 1 epoch (Adam, batch 32)",
    "dense": "Dense softmax, 5 epochs (RMSprop, batch 32)",
    "dense_fit": "Dense softmax, 5 epochs: whole fit call (ours also validates, checkpoints)",
    "cv": "SGD logistic regression, 5-fold CV on 60,000",
    "fast": "fast preset: start to exit, test acc",
    "train_process": "`train` dense 5 epochs: whole process",
    "cv_process": "`cv` logreg 5 folds: whole process",
    "evaluate_process": "`evaluate` on test: whole process",
    "predict_process": "`predict` one image: whole process",
    "predict": "`predict` one image, start to answer (warm caches)",
    "help": "`--help`: start to exit",
}
PEER_IMPLS = ("torch", "keras", "sklearn", "baseline")  # one ratio column each: ours / peer
CACHE_MODES = ("off", "cold", "warm")


@dataclass(frozen=True)
class Options:
    repeats: int = 3
    subset: int | None = None
    timeout: float = 1800.0
    scratch: Path | None = None  # compilation caches and the trained run predict reads


@dataclass(frozen=True)
class Workload:
    name: str  # what --only takes
    task: str  # key of TASKS: rows of one task are compared with each other
    impl: str  # "ours" or one of PEER_IMPLS
    argv: Callable[[Options, Path], list[str]]  # the command, given a private scratch folder
    parse: Callable[
        [dict, float], dict
    ]  # (last-line JSON, launch-to-exit seconds) -> seconds/compile/accuracy
    package_root: Path = ROOT  # where its fashion_jax is imported from (a --baseline export)
    label: str | None = None  # the implementation column, when the impl name is not enough
    json_out: bool = True  # the last stdout line is a JSON object (False: --help, exit 0 is all)
    cache: str = "off"  # CACHE_MODES: no persistent cache, a fresh one, or the one filled before
    cache_key: str | None = None  # the cache folder a "cold" row empties and its "warm" twin reuses
    warmup: int = 0  # untimed runs before the first repeat (file and compilation caches)


@dataclass
class Run:
    workload: str
    repeat: int
    argv: list[str]
    returncode: int | None = None
    wall_seconds: float | None = None
    rss_mb: float | None = None
    workers_rss_mb: float | None = (
        None  # summed peak RSS of worker processes, reported by the workload itself
    )
    load_1min: float | None = (
        None  # the machine's load average at launch: these machines are shared and noisy
    )
    result: dict | None = None
    seconds: float | None = None
    compile_seconds: float | None = None
    accuracy: float | None = None
    note: str | None = None
    skipped: str | None = None
    error: str | None = None


# -------------------------------------------------------------------------------- the workloads ---


def _ours(*args: str, train: bool = True) -> Callable[[Options, Path], list[str]]:
    def argv(opts: Options, tmp: Path) -> list[str]:
        cmd = [sys.executable, "-m", "fashion_jax.cli", *args, "--json"]
        # train: a private --workdir so runs never resume each other's checkpoints, and --quiet
        # because the peers run with verbose=0 too. cv takes neither.
        cmd += ["--workdir", str(tmp), "--quiet"] if train else []
        return cmd + (["--subset", str(opts.subset)] if opts.subset else [])

    return argv


def _peer(name: str, *extra: str) -> Callable[[Options, Path], list[str]]:
    def argv(opts: Options, tmp: Path) -> list[str]:
        return [sys.executable, str(PEERS), name, *extra] + (
            ["--subset", str(opts.subset)] if opts.subset else []
        )

    return argv


def _cli(
    *args: str, stats: bool = True, subset: bool = False, json_out: bool = True
) -> Callable[[Options, Path], list[str]]:
    """A whole `fashion-jax` process. In `args`, {tmp} is the run's private folder and {run},
    {image} the trained run and the test image of `fixture`. With `stats` it runs through
    cli_stats.py, which records the compile time of any command."""

    def argv(opts: Options, tmp: Path) -> list[str]:
        head = [str(CLI_STATS)] if stats else ["-m", "fashion_jax.cli"]
        cmd = [sys.executable, *head, *(a.replace("{tmp}", str(tmp)) for a in args)]
        cmd += ["--json"] if json_out else []
        return cmd + (["--subset", str(opts.subset)] if subset and opts.subset else [])

    return argv


def _parse_ours_train(epochs: int) -> Callable[[dict, float], dict]:
    # Steady time = the epochs' wall time (train, validate, checkpoint). fit() compiles every
    # program it runs before the first epoch starts, and reports that apart as compile_seconds.
    def parse(res: dict, wall: float) -> dict:
        epoch_s = [float(s) for s in res["epoch_seconds"]]
        note = f"ran {len(epoch_s)} of {epochs} epochs" if len(epoch_s) != epochs else None
        return {
            "seconds": sum(epoch_s),
            "compile_seconds": _float_or_none(res.get("compile_seconds")),
            "accuracy": float(res["val_accuracy"]),
            "note": note,
        }

    return parse


def _parse_ours_cv(res: dict, wall: float) -> dict:
    # The CV time includes compiles, as sklearn's wall time includes its process-pool start-up.
    return {
        "seconds": float(res["seconds"]),
        "compile_seconds": _float_or_none(res.get("compile_seconds")),
        "accuracy": float(res["mean_accuracy"]),
    }


def _parse_ours_fast(res: dict, wall: float) -> dict:
    # "Time to 92%" is what a user waits for: interpreter start, imports, data, compile, training,
    # evaluation.
    return {
        "seconds": wall,
        "compile_seconds": _float_or_none(res.get("compile_seconds")),
        "accuracy": float(res["test_accuracy"]),
    }


def _parse_peer(res: dict, wall: float) -> dict:
    return {
        "seconds": float(res["seconds"]),
        "compile_seconds": _float_or_none(res.get("compile_seconds")),
        "accuracy": float(res["val_accuracy"]),
        # sklearn fits in joblib worker processes, whose memory its own RSS does not include
        "workers_rss_mb": _float_or_none(res.get("workers_peak_rss_mb")),
    }


def _parse_peer_whole(res: dict, wall: float) -> dict:
    # Keras's whole fit call, its compile included: what `ours_dense_fit` times around our fit.
    return {**_parse_peer(res, wall), "seconds": float(res["total_seconds"])}


def _parse_process(res: dict, wall: float) -> dict:
    # Launch to exit, as a user waits for it; the compile time is what cli_stats.py recorded.
    stats = res.get("bench_stats") or {}
    accuracy = next(
        (res[k] for k in ("val_accuracy", "mean_accuracy", "accuracy") if k in res), None
    )
    hits, misses = stats.get("cache_hits"), stats.get("cache_misses")
    return {
        "seconds": wall,
        "compile_seconds": _float_or_none(stats.get("compile_seconds")),
        "accuracy": _float_or_none(accuracy),
        "note": None if hits is None else f"cache: {hits} hits, {misses} misses",
    }


def _cold_and_warm(command: str, *args: str, subset: bool = False) -> tuple[Workload, Workload]:
    """`command` in a fresh compilation cache, then again in the cache the first run filled."""
    task, argv = f"{command}_process", _cli(command, *args, subset=subset)
    return (
        Workload(
            f"cold_{command}",
            task,
            "ours",
            argv,
            _parse_process,
            label="fashion_jax, empty compilation cache",
            cache="cold",
            cache_key=command,
        ),
        Workload(
            f"warm_{command}",
            task,
            "ours",
            argv,
            _parse_process,
            label="fashion_jax, cache filled by the run before",
            cache="warm",
            cache_key=command,
        ),
    )


def _help(*args: str) -> Workload:
    name = "_".join(["ours_help", *(a for a in args if not a.startswith("-"))])
    return Workload(
        name,
        "help",
        "ours",
        _cli(*args, "--help", stats=False, json_out=False),
        lambda res, wall: {"seconds": wall},
        label=f"fashion-jax {' '.join((*args, '--help'))}",
        json_out=False,
    )


# Listed in the interleaving order: ours first, then its peers, task by task.
WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "ours_cnn",
        "cnn",
        "ours",
        _ours(
            "train",
            "--model",
            "cnn",
            "--optimizer",
            "adam",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--patience",
            "0",
        ),
        _parse_ours_train(1),
    ),
    Workload("torch_cnn", "cnn", "torch", _peer("torch_cnn"), _parse_peer),
    # The other settings tried; the ours/torch ratio is taken against the fastest torch row.
    Workload(
        "torch_cnn_channels_last",
        "cnn",
        "torch",
        _peer("torch_cnn", "--channels-last"),
        _parse_peer,
    ),
    Workload(
        "torch_cnn_compile", "cnn", "torch", _peer("torch_cnn", "--torch-compile"), _parse_peer
    ),
    Workload("keras_cnn", "cnn", "keras", _peer("keras_cnn"), _parse_peer),
    # --patience 0 as for the CNN, so early stopping cannot shorten the 5 epochs the peer runs.
    Workload(
        "ours_dense",
        "dense",
        "ours",
        _ours(
            "train", "--model", "dense", "--epochs", "5", "--batch-size", "32", "--patience", "0"
        ),
        _parse_ours_train(5),
    ),
    # The same fit writing only its final params (--checkpoints end): what Keras's fit does, which
    # saves nothing.
    Workload(
        "ours_dense_end",
        "dense",
        "ours",
        _ours(
            "train",
            "--model",
            "dense",
            "--epochs",
            "5",
            "--batch-size",
            "32",
            "--patience",
            "0",
            "--checkpoints",
            "end",
        ),
        _parse_ours_train(5),
    ),
    Workload("keras_dense", "dense", "keras", _peer("keras_dense"), _parse_peer),
    # The whole fit call on both sides, timed in Python around it, compile included. Keras fits as
    # the chapter's section 6 does: no validation_data (its val accuracy is measured after the
    # timed call). Ours does more inside its call: a validation pass every epoch, the per-epoch
    # checkpoints (its default), the test evaluation and curves.png. Ours with the compilation
    # cache (filled by an untimed warm-up run, as by any earlier run on this machine) and with an
    # empty one.
    Workload(
        "ours_dense_fit",
        "dense_fit",
        "ours",
        _peer("ours_dense_fit"),
        _parse_peer,
        label="fashion_jax fit, compilation cache filled",
        cache="warm",
        cache_key="dense_fit",
        warmup=1,
    ),
    Workload(
        "ours_dense_fit_cold",
        "dense_fit",
        "ours",
        _peer("ours_dense_fit"),
        _parse_peer,
        label="fashion_jax fit, empty compilation cache",
        cache="cold",
        cache_key="dense_fit_cold",
    ),
    Workload("keras_dense_fit", "dense_fit", "keras", _peer("keras_dense"), _parse_peer_whole),
    Workload(
        "ours_cv",
        "cv",
        "ours",
        _ours("cv", "--model", "logreg", "--folds", "5", train=False),
        _parse_ours_cv,
    ),
    Workload("sklearn_cv", "cv", "sklearn", _peer("sklearn_cv"), _parse_peer),
    Workload("ours_fast", "fast", "ours", _ours("train", "--preset", "fast"), _parse_ours_fast),
    # Whole processes, each command twice: first with an empty compilation cache, then with it.
    *_cold_and_warm(
        "train",
        "--model",
        "dense",
        "--epochs",
        "5",
        "--batch-size",
        "32",
        "--patience",
        "0",
        "--workdir",
        "{tmp}/run",
        "--quiet",
        subset=True,
    ),
    *_cold_and_warm("cv", "--model", "logreg", "--folds", "5", subset=True),
    *_cold_and_warm("evaluate", "--workdir", "{run}", "--split", "test"),
    *_cold_and_warm("predict", "--workdir", "{run}", "{image}"),
    # One image, process start to answer, caches warm (an untimed run first); its twin runs the
    # package at BEFORE_FAST_START on a run that package trained.
    Workload(
        "ours_predict",
        "predict",
        "ours",
        _cli("predict", "--workdir", "{run}", "{image}", stats=False),
        _parse_process,
        cache="warm",
        cache_key="predict",
        warmup=1,
    ),
    _help(),
    _help("train"),
    _help("predict"),
)


# ------------------------------------------------------------------------------ running one job ---


def child_env(package_root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "jax"  # ~/.keras/keras.json may name TensorFlow, which is not installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root), env.get("PYTHONPATH")) if p)
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
        save = "import sys, numpy as np; from fashion_jax.data import load_split; "
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


def _float_or_none(x: Any) -> float | None:
    return None if x is None else float(x)


# ---------------------------------------------------------------------------------- aggregating ---


@dataclass
class Row:
    workload: Workload
    runs: list[Run] = field(default_factory=list)

    @property
    def ok(self) -> list[Run]:
        return [
            r for r in self.runs if r.error is None and r.skipped is None and r.seconds is not None
        ]

    @property
    def median(self) -> float | None:
        return statistics.median(r.seconds for r in self.ok) if self.ok else None

    def stat(self, attr: str, fn: Callable = statistics.median) -> float | None:
        values = [getattr(r, attr) for r in self.ok if getattr(r, attr) is not None]
        return fn(values) if values else None

    @property
    def problem(self) -> str | None:
        """Why the row has no figures: a skip note or the first error (None when at least one run
        worked)."""
        if self.ok:
            return None
        skips = [r.skipped for r in self.runs if r.skipped]
        if skips:
            return f"skipped: {skips[0]}"
        errors = [r.error for r in self.runs if r.error]
        return f"error: {errors[0]}" if errors else "no runs"

    def notes(self) -> list[str]:
        notes = sorted({r.note for r in self.ok if r.note})
        workers = self.stat("workers_rss_mb", max)
        if workers:
            notes.append(f"+{workers:.0f} MB peak RSS in worker processes")
        load = max((r.load_1min for r in self.ok if r.load_1min is not None), default=0.0)
        if load > busy_load():
            notes.append(f"busy machine: load {load:.1f} at launch")
        failed = [r for r in self.runs if r.error]
        if self.ok and failed:
            notes.append(f"{len(failed)}/{len(self.runs)} runs failed: {failed[0].error}")
        return notes


def busy_load() -> float:
    """The 1-minute load average above which other work shares the machine. The run just before
    (up to one process per core) still counts for about a minute, hence the one spare."""
    return (os.cpu_count() or 1) + 1.0


def ratio(ours: Row, peer: Row | None) -> float | None:
    if peer is None or ours.median is None or peer.median is None or peer.median <= 0:
        return None
    return ours.median / peer.median


def find_peer(rows: Sequence[Row], task: str, impl: str) -> Row | None:
    """The `impl` row of `task`; of several (torch's settings), the fastest one that ran."""
    found = [r for r in rows if r.workload.task == task and r.workload.impl == impl]
    timed = [r for r in found if r.median is not None]
    if timed:
        return min(timed, key=lambda r: r.median)
    return found[0] if found else None


# What each of our workloads has to reach. A check is (label, function of (row, all rows) -> bool or
# None).
Check = tuple[str, Callable[[Row, Sequence[Row]], bool | None]]


def _ratio_at_most(impl: str, limit: float) -> Check:
    def check(row: Row, rows: Sequence[Row]) -> bool | None:
        r = ratio(row, find_peer(rows, row.workload.task, impl))
        return None if r is None else r <= limit

    return f"≤{limit:g}× {impl}", check


def _rss_at_most(mb: float) -> Check:
    return f"RSS ≤{mb / 1024:g} GB", lambda row, rows: _cmp(
        row.stat("rss_mb", max), lambda v: v <= mb
    )


def _seconds_at_most(s: float) -> Check:
    return f"≤{s:g} s", lambda row, rows: _cmp(row.median, lambda v: v <= s)


def _accuracy_at_least(acc: float) -> Check:
    # Every repeat must get there, so the worst one is checked.
    return f"acc ≥{acc:g}", lambda row, rows: _cmp(row.stat("accuracy", min), lambda v: v >= acc)


def _cmp(value: float | None, test: Callable[[float], bool]) -> bool | None:
    return None if value is None else test(value)


def _compile_vs_cold(limit: float) -> Check:
    """A warm row's compile time against its cold twin's (warm_x against cold_x)."""

    def check(row: Row, rows: Sequence[Row]) -> bool | None:
        cold_name = "cold_" + row.workload.name.removeprefix("warm_")
        cold = next((r for r in rows if r.workload.name == cold_name), None)
        warm_s, cold_s = row.stat("compile_seconds"), cold and cold.stat("compile_seconds")
        return None if warm_s is None or not cold_s else warm_s <= limit * cold_s

    return f"compile ≤{limit:g}× cold", check


TARGETS: dict[str, list[Check]] = {
    "ours_cnn": [_ratio_at_most("torch", 0.4), _ratio_at_most("keras", 0.3), _rss_at_most(2048)],
    "ours_dense": [_ratio_at_most("keras", 0.3)],
    "ours_dense_end": [_ratio_at_most("keras", 0.3)],
    "ours_cv": [_ratio_at_most("sklearn", 0.1)],
    "ours_fast": [_seconds_at_most(60), _accuracy_at_least(0.92)],
    "ours_dense_fit": [_ratio_at_most("keras", 0.5)],
    "ours_predict": [_ratio_at_most("baseline", 0.8)],
    **{f"warm_{c}": [_compile_vs_cold(0.2)] for c in ("train", "cv", "evaluate", "predict")},
    **{
        name: [_seconds_at_most(0.5)]
        for name in ("ours_help", "ours_help_train", "ours_help_predict")
    },
}


def target_cell(row: Row, rows: Sequence[Row]) -> str:
    marks = {True: "PASS", False: "FAIL", None: "n/a"}
    return "; ".join(
        f"{label} {marks[check(row, rows)]}" for label, check in TARGETS.get(row.workload.name, [])
    )


# ------------------------------------------------------------------------------------ rendering ---

HEADER = [
    "workload",
    "implementation",
    "median s",
    "min–max s",
    "compile s",
    "val acc",
    "peak RSS MB",
    *(f"ours/{p}" for p in PEER_IMPLS),
    "target",
    "notes",
]


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def impl_label(row: Row) -> str:
    if row.workload.label:
        return row.workload.label
    if row.workload.impl == "ours":
        return f"fashion_jax {_version('fashion-jax') or ''}".strip()
    peers = [r.result.get("peer") for r in row.runs if r.result and r.result.get("peer")]
    return peers[0] if peers else row.workload.impl


def table_row(row: Row, rows: Sequence[Row]) -> list[str]:
    w = row.workload
    first = [f"{TASKS[w.task]} (`{w.name}`)", impl_label(row)]
    if row.problem:
        return first + [row.problem] + ["—"] * (len(HEADER) - 4) + [""]
    ratios = [_ratio_cell(row, rows, p) for p in PEER_IMPLS]
    acc = _fmt(row.stat("accuracy"), ".4f") + (" (test)" if w.task == "fast" else "")
    return first + [
        _fmt(row.median),
        f"{_fmt(row.stat('seconds', min))}–{_fmt(row.stat('seconds', max))}",
        _fmt(row.stat("compile_seconds")),
        acc,
        _fmt(row.stat("rss_mb", max), ".0f"),
        *ratios,
        target_cell(row, rows),
        "; ".join(row.notes()),
    ]


def _ratio_cell(row: Row, rows: Sequence[Row], impl: str) -> str:
    if row.workload.impl != "ours":
        return ""
    peer = find_peer(rows, row.workload.task, impl)
    if peer is None:
        return ""
    r = ratio(row, peer)
    return f"{r:.2f}×" if r is not None else "n/a"


def markdown(rows: Sequence[Row], meta: dict) -> str:
    lines = [
        "# fashion_jax side-by-side benchmark",
        "",
        f"- date: {meta['date']}",
        f"- devices: `{meta['devices']}`",
        f"- CPUs: {meta['cpu_count']}",
        f"- platform: {meta['platform']}, Python {meta['python']}",
        "- packages: "
        + ", ".join(f"{k} {v or 'not installed'}" for k, v in meta["packages"].items()),
        f"- command: `{meta['command']}`",
        f"- repeats: {meta['repeats']}"
        + (
            f", subset: {meta['subset']} images (smoke run, figures not comparable)"
            if meta["subset"]
            else ""
        ),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(table_row(r, rows)) + " |" for r in rows]
    lines += ["", *METHOD_NOTES]
    return "\n".join(lines) + "\n"


METHOD_NOTES = [
    "How to read this:",
    "- Each run is a fresh process; repeats are interleaved across workloads."
    " Median, min and max are over repeats.",
    '- "median s" is steady time where the compile is known separately'
    " (ours from the CLI; Keras estimated as the"
    " first-step gap less one steady step), whole time otherwise (torch, sklearn)."
    " Ratios are ours/peer on that column;"
    " ratios under 1 mean ours is faster.",
    "- Ours train, validate and checkpoint every epoch"
    " (`ours_dense_end`: checkpoint once, after the last epoch)."
    " The CNN peers train, validate and save the best weights every epoch,"
    " as the chapter's fit does; the dense"
    " peer trains only, as the chapter's section 6 does.",
    "- CV time includes compiles (ours) and the process pool (sklearn)."
    " The fast preset is launch-to-exit wall time"
    " of the whole process, measured by this harness.",
    '- "busy machine" marks a row whose runs started at a 1-minute load average'
    " above the core count plus one"
    " (the previous run alone can leave about one per core for a minute).",
    "- peak RSS is the child's ru_maxrss (os.wait4), the maximum over repeats."
    " sklearn's joblib workers are separate"
    " processes: their summed peak RSS is in the notes.",
    "- The epoch, CV and fast-preset rows run without the persistent compilation cache, as before"
    " it existed; the rows below set it per row.",
    "- PyTorch's CNN runs at three settings (default, channels_last, torch.compile);"
    " ours/torch is against the fastest.",
    '- "whole fit call": Python timing around one `fit` in a child process (experiments/peers.py),'
    " compile included on both sides; ours also validates and checkpoints every epoch, and runs"
    " once with a cache filled by an untimed warm-up run, once with an empty cache.",
    '- "whole process" rows: launch to exit, each command first with an empty compilation cache,'
    " then with the cache that run filled; compile s is what jax.monitoring reports as XLA compiles"
    " or cache reads (experiments/cli_stats.py); target: the second run's ≤0.2× the first's.",
    "- predict start to answer: one image, after an untimed run (file and compilation caches warm);"
    f" the baseline is the package at {BEFORE_FAST_START} reading a run it trained itself.",
]


# ------------------------------------------------------------------------------------- metadata ---


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def jax_devices() -> str:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "import jax; print(jax.devices())"],
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"error: {one_line(str(e))}"
    return proc.stdout.strip() if proc.returncode == 0 else f"error: {one_line(proc.stderr)}"


def metadata(opts: Options) -> dict:
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "devices": jax_devices(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "command": shlex.join(sys.orig_argv),
        "repeats": opts.repeats,
        "subset": opts.subset,
    }


# ----------------------------------------------------------------------------------- the driver ---


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
        f"{_fmt(run.seconds)} s{compiled}, acc {_fmt(run.accuracy, '.4f')}, "
        f"RSS {_fmt(run.rss_mb, '.0f')} MB"
    )


def write_outputs(rows: Sequence[Row], meta: dict, md_path: Path, json_path: Path) -> None:
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(rows, meta))
    raw = {
        "meta": meta,
        "runs": [asdict(r) for row in rows for r in row.runs],
        "summary": [dict(zip(HEADER, table_row(r, rows))) for r in rows],
    }
    json_path.write_text(json.dumps(raw, indent=2) + "\n")


def select(only: str | None) -> list[Workload]:
    if not only:
        return list(WORKLOADS)
    wanted = {n.strip() for n in only.split(",") if n.strip()}
    unknown = wanted - {w.name for w in WORKLOADS}
    if unknown:
        raise SystemExit(
            f"unknown workload(s) {sorted(unknown)}; choose from {[w.name for w in WORKLOADS]}"
        )
    return [
        w for w in WORKLOADS if w.name in wanted
    ]  # keep the interleaving order, whatever order was asked


def export(ref: str, folder: Path) -> str:
    """The package as it was at git `ref`, extracted into `folder`; the short commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", commit, "fashion_jax"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return commit


def twin(w: Workload, ref: str, commit: str, folder: Path, why: str = "") -> Workload:
    """`w` run with the package exported at `ref` into `folder`, in a cache of its own."""
    return replace(
        w,
        name="base_" + w.name.removeprefix("ours_"),
        impl="baseline",
        package_root=folder,
        label=f"fashion_jax at {ref} ({commit}){why}",
        cache_key=f"base_{w.cache_key or w.name}",
    )


def with_baseline(workloads: Sequence[Workload], ref: str, folder: Path) -> list[Workload]:
    """Each of our workloads followed by its twin running the package exported from git `ref`."""
    commit = export(ref, folder)
    out: list[Workload] = []
    for w in workloads:
        out.append(w)
        if w.impl == "ours" and w.name not in FIXED_BASELINES:
            out.append(twin(w, ref, commit, folder))
    return out


# Rows whose target is a before/after ratio against one commit: always run with that twin.
FIXED_BASELINES = {"ours_predict": BEFORE_FAST_START}


def with_fixed_baselines(workloads: Sequence[Workload], folder: Path) -> list[Workload]:
    out: list[Workload] = []
    for w in workloads:
        out.append(w)
        ref = FIXED_BASELINES.get(w.name)
        if ref is not None:
            try:
                commit = export(ref, folder / ref)
            except (OSError, subprocess.CalledProcessError) as e:  # no git, or no such commit
                print(f"baseline {ref} unavailable: {one_line(str(e))}", file=sys.stderr)
                continue
            out.append(twin(w, ref, commit, folder / ref, " (before issue 15)"))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--subset", type=int, default=None, help="pass --subset N to every workload (smoke tests)"
    )
    p.add_argument(
        "--only", default=None, help="comma-separated: " + ",".join(w.name for w in WORKLOADS)
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the markdown report")
    p.add_argument(
        "--json-out",
        type=Path,
        default=None,
        help="raw results (default: <out folder>/out/bench.json)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before one run is killed")
    p.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also run our workloads with the package at this commit, interleaved (before/after)",
    )
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = select(args.only)
    with tempfile.TemporaryDirectory(prefix="bench-scratch-") as scratch:
        opts = Options(args.repeats, args.subset, args.timeout, scratch=Path(scratch))
        meta = metadata(opts)
        workloads = with_fixed_baselines(workloads, Path(scratch) / "fixed")
        if args.baseline:
            workloads = with_baseline(workloads, args.baseline, Path(scratch) / "baseline")
            meta["baseline"] = args.baseline
        rows = run_bench(workloads, opts, log=lambda s: print(s, file=sys.stderr, flush=True))
    json_path = args.json_out or args.out.parent / "out" / "bench.json"
    write_outputs(rows, meta, args.out, json_path)
    print(f"wrote {args.out} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

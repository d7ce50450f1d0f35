"""The benchmark's data model: its options, a workload, one run of it and a table row of runs.

Shared by the workload list (workloads.py), the runner (runner.py), the report (report.py) and the
command line (bench.py).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: fashion_jax/ and experiments/
# The modules the children run as `python -m`: their cwd and PYTHONPATH put ROOT on sys.path.
PEERS = "experiments.bench.peers"
CLI_STATS = "experiments.bench.cli_stats"
EXPLAIN_CHECKS = "experiments.research.explain_checks"
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
    "explain": "explain one image, all four methods, warm call (chapter CNN)",
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

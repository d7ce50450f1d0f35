"""Smoke tests of the benchmark harness (experiments/bench/bench.py).
No timing assertions: the machines are noisy.

The harness must work whether or not the peers (torch, keras, scikit-learn) are installed: a missing
peer becomes a row with a skip note, and a failing workload a row with an error, never a crash.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from experiments.bench.bench import select
from experiments.bench.report import find_peer, ratio, target_cell, write_outputs
from experiments.bench.runner import (
    _FIXTURES,
    FixtureError,
    child_env,
    rows_from_saved,
    run_bench,
    run_env,
    with_fixture,
)
from experiments.bench.spec import Options, Row, Run, Workload
from experiments.bench.workloads import WORKLOADS, _parse_peer, _parse_peer_whole, _parse_process

ROOT = Path(__file__).resolve().parent.parent

META = {  # what bench.metadata() records, in short
    "date": "d",
    "devices": "cpu",
    "cpu_count": 2,
    "platform": "p",
    "python": "3",
    "packages": {},
    "command": "c",
    "repeats": 2,
    "subset": None,
}

TABLE_HEADER = (
    "| workload | implementation | median s | min–max s | compile s | val acc | peak RSS MB |"
)


def _rows(md: str, name: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("|") and f"(`{name}`)" in line]


@pytest.mark.realdata
def test_harness_smoke_on_a_subset(tmp_path: Path) -> None:
    """The real command line, on 256 images, with the two quickest peers
    (a few seconds each on 2 cores)."""
    out = tmp_path / "BENCH.md"
    cmd = [
        sys.executable,
        "-m",
        "experiments.bench.bench",
        "--subset",
        "256",
        "--repeats",
        "1",
        "--only",
        "sklearn_cv,keras_dense",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]

    md = out.read_text()
    assert TABLE_HEADER in md
    for name in ("sklearn_cv", "keras_dense"):
        rows = _rows(md, name)
        assert len(rows) == 1, md
        # Either real figures or a skip note when the peer is not installed; never an error.
        assert "error:" not in rows[0], rows[0]
    assert "devices:" in md and "command:" in md

    raw = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert sorted(r["workload"] for r in raw["runs"]) == ["keras_dense", "sklearn_cv"]


def test_failures_and_skips_become_rows(tmp_path: Path) -> None:
    """A crashing workload, one without JSON, and a skipped peer:
    all three rows are written, nothing raises."""
    py = sys.executable

    def fixed(code: str):
        return lambda opts, tmp: [py, "-c", code]

    crash = Workload(
        "ours_cnn", "cnn", "ours", fixed("raise SystemExit('no cli here')"), _parse_peer
    )
    silent = Workload("keras_cnn", "cnn", "keras", fixed("print('hello')"), _parse_peer)
    skip_code = "import json; print(json.dumps({'skipped': 'torch not installed'}))"
    skip = Workload("torch_cnn", "cnn", "torch", fixed(skip_code), _parse_peer)
    rows = run_bench([crash, silent, skip], Options(repeats=2, timeout=60), log=lambda s: None)

    md_path, json_path = tmp_path / "B.md", tmp_path / "out" / "b.json"
    write_outputs(rows, META, md_path, json_path)
    md = md_path.read_text()
    assert "error: exit 1: no cli here" in _rows(md, "ours_cnn")[0]
    assert "error: no JSON object" in _rows(md, "keras_cnn")[0]
    assert "skipped: torch not installed" in _rows(md, "torch_cnn")[0]
    assert len(json.loads(json_path.read_text())["runs"]) == 6


def test_ratios_and_targets() -> None:
    """ours/peer ratios and the PASS/FAIL marks come from the medians of the successful runs."""
    ours, torch_, keras_ = (
        w for w in WORKLOADS if w.name in ("ours_cnn", "torch_cnn", "keras_cnn")
    )

    def row(w, seconds: list[float], rss: float = 500.0):
        return Row(
            w,
            [
                Run(w.name, i, [], seconds=s, accuracy=0.9, rss_mb=rss)
                for i, s in enumerate(seconds)
            ],
        )

    rows = [row(ours, [9.0, 10.0, 11.0]), row(torch_, [30.0, 20.0, 25.0]), row(keras_, [40.0])]
    assert ratio(rows[0], rows[1]) == pytest.approx(0.4)
    assert ratio(rows[0], rows[2]) == pytest.approx(0.25)
    cell = target_cell(rows[0], rows)
    assert "≤0.4× torch PASS" in cell and "≤0.3× keras PASS" in cell and "RSS ≤2 GB PASS" in cell

    rows[0] = row(ours, [20.0], rss=3000.0)
    cell = target_cell(rows[0], rows)
    assert "≤0.4× torch FAIL" in cell and "RSS ≤2 GB FAIL" in cell


def test_only_rejects_unknown_names() -> None:
    with pytest.raises(SystemExit):
        select("ours_cnn,nope")
    assert [w.name for w in select("keras_cnn,ours_cnn")] == ["ours_cnn", "keras_cnn"]


def test_torch_ratio_is_against_the_fastest_torch_setting() -> None:
    by_name = {w.name: w for w in WORKLOADS}

    def row(name: str, seconds: float | None):
        runs = [] if seconds is None else [Run(name, 0, [], seconds=seconds, accuracy=0.9)]
        return Row(by_name[name], runs)

    rows = [
        row("ours_cnn", 10.0),
        row("torch_cnn", 40.0),
        row("torch_cnn_channels_last", 25.0),
        row("torch_cnn_compile", None),  # failed: never the peer
    ]
    assert find_peer(rows, "cnn", "torch") is rows[2]
    assert ratio(rows[0], find_peer(rows, "cnn", "torch")) == pytest.approx(0.4)


def test_process_rows_read_the_compile_stats_and_warm_is_checked_against_cold() -> None:
    parsed = _parse_process(
        {
            "accuracy": 0.8,
            "bench_stats": {
                "compile_seconds": 1.5,
                "trace_seconds": 0.25,
                "cache_hits": 0,
                "cache_misses": 4,
            },
        },
        7.0,
    )
    assert parsed == {
        "seconds": 7.0,
        "compile_seconds": 1.5,
        "accuracy": 0.8,
        "note": "JAX cache: 0 hits, 4 misses; tracing and lowering 0.25 s",
    }
    by_name = {w.name: w for w in WORKLOADS}

    def row(name: str, compile_s: float):
        run = Run(name, 0, [], seconds=5.0, compile_seconds=compile_s)
        return Row(by_name[name], [run])

    cold, warm = row("cold_predict", 2.0), row("warm_predict", 0.3)
    assert "compile ≤0.2× cold PASS" in target_cell(warm, [cold, warm])
    warm = row("warm_predict", 0.5)
    assert "compile ≤0.2× cold FAIL" in target_cell(warm, [cold, warm])
    assert "n/a" in target_cell(warm, [warm])  # no cold twin ran


def test_whole_fit_rows_compare_keras_whole_fit() -> None:
    keras = {"seconds": 2.0, "compile_seconds": 0.5, "total_seconds": 3.6, "val_accuracy": 0.85}
    assert _parse_peer_whole(keras, 9.0)["seconds"] == 3.6
    assert _parse_peer(keras, 9.0)["seconds"] == 2.0


def test_cache_modes_give_each_row_its_folder(tmp_path: Path) -> None:
    by_name = {w.name: w for w in WORKLOADS}
    opts = Options(scratch=tmp_path)
    off = run_env(by_name["ours_dense"], opts, tmp_path / "run")
    assert off["FASHION_JAX_NO_COMPILE_CACHE"] == "1"

    cold_env = run_env(by_name["cold_train"], opts, tmp_path / "run")
    folder = Path(cold_env["XDG_CACHE_HOME"])
    assert "FASHION_JAX_NO_COMPILE_CACHE" not in cold_env and folder.is_dir()
    (folder / "entry").write_text("compiled")
    warm_env = run_env(by_name["warm_train"], opts, tmp_path / "run")
    assert warm_env["XDG_CACHE_HOME"] == str(folder) and (folder / "entry").exists()
    run_env(by_name["cold_train"], opts, tmp_path / "run")
    assert not (folder / "entry").exists()  # the next cold run starts empty
    other = run_env(by_name["cold_cv"], opts, tmp_path / "run")["XDG_CACHE_HOME"]
    assert other != str(folder)


def test_placeholders_name_the_trained_run_and_help_rows_need_no_json(tmp_path: Path) -> None:
    root = tmp_path / "package"
    _FIXTURES[root] = {"{run}": "/r", "{image}": "/i.npy"}
    argv = with_fixture(["predict", "--workdir", "{run}", "{image}"], root, Options())
    assert argv == ["predict", "--workdir", "/r", "/i.npy"]
    _FIXTURES[root] = "fixture: no data"
    with pytest.raises(FixtureError):
        with_fixture(["{run}"], root, Options())

    py = sys.executable
    help_row = replace(
        next(w for w in WORKLOADS if w.name == "ours_help"),
        argv=lambda opts, tmp: [py, "-c", "print('usage: fashion-jax')"],
    )
    stats_code = (
        "import json, os; json.dump({'compile_seconds': 0.25, 'cache_hits': 3, 'cache_misses': 0},"
        " open(os.environ['FASHION_JAX_BENCH_STATS'], 'w')); print(json.dumps({'accuracy': 0.5}))"
    )
    process_row = replace(
        next(w for w in WORKLOADS if w.name == "warm_evaluate"),
        argv=lambda opts, tmp: [py, "-c", stats_code],
    )
    rows = run_bench(
        [help_row, process_row],
        Options(repeats=1, timeout=60, scratch=tmp_path),
        log=lambda s: None,
    )
    assert rows[0].problem is None and rows[0].median is not None
    run = rows[1].runs[0]
    assert (run.compile_seconds, run.accuracy, run.note) == (
        0.25,
        0.5,
        "JAX cache: 3 hits, 0 misses",
    )


def test_cli_stats_writes_the_compile_stats_and_keeps_the_exit_status(tmp_path: Path) -> None:
    for argv, status in ((["shapes", "--json"], 0), (["shapes", "--input", "x"], 2)):
        out = tmp_path / f"stats-{status}.json"
        env = {**child_env(), "FASHION_JAX_BENCH_STATS": str(out)}
        done = subprocess.run(
            [sys.executable, "-m", "experiments.bench.cli_stats", *argv],
            cwd=tmp_path,  # not the repository root: PYTHONPATH (child_env) must find experiments
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == status, done.stderr
        if status == 0:
            stats = json.loads(out.read_text())
            assert set(stats) == {"compile_seconds", "trace_seconds", "cache_hits", "cache_misses"}


def test_a_saved_run_is_reported_again_with_the_current_parsers(tmp_path) -> None:
    by_name = {w.name: w for w in WORKLOADS}
    stats = {"compile_seconds": 0.02, "trace_seconds": 0.1, "cache_hits": 1, "cache_misses": 0}
    run = Run("warm_predict", 0, ["x"], returncode=0, wall_seconds=2.5)
    # program_hits: a stat of the removed program cache, in bench.json files written before; ignored
    run.result = {"bench_stats": {**stats, "program_hits": 1}}
    failed = Run("warm_predict", 1, ["x"], returncode=1, wall_seconds=0.1, error="exit 1: boom")
    json_path = tmp_path / "bench.json"
    write_outputs([Row(by_name["warm_predict"], [run, failed])], META, tmp_path / "B.md", json_path)
    saved = json.loads(json_path.read_text())["runs"]
    saved[0]["note"] = "stale wording"  # what an older parser wrote: parsed again, not kept
    (row,) = rows_from_saved(saved, WORKLOADS)
    assert [r.repeat for r in row.runs] == [0, 1] and row.runs[1].error == "exit 1: boom"
    assert (row.median, row.runs[0].compile_seconds) == (2.5, 0.02)
    assert row.runs[0].note == "JAX cache: 1 hits, 0 misses; tracing and lowering 0.10 s"
    assert rows_from_saved(saved, [by_name["ours_cnn"]]) == []  # rows not asked for are left out

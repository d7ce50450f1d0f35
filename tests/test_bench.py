"""Smoke tests of the benchmark harness (experiments/bench.py).
No timing assertions: the machines are noisy.

The harness must work whether or not the peers (torch, keras, scikit-learn) are installed: a missing
peer becomes a row with a skip note, and a failing workload a row with an error, never a crash.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "experiments" / "bench.py"
TABLE_HEADER = (
    "| workload | implementation | median s | min–max s | compile s | val acc | peak RSS MB |"
)


def _load_bench() -> ModuleType:
    # experiments/ is not a package: load the script as a module to drive its functions in-process.
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load_bench()


def _rows(md: str, name: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("|") and f"(`{name}`)" in line]


@pytest.mark.realdata
def test_harness_smoke_on_a_subset(tmp_path: Path) -> None:
    """The real command line, on 256 images, with the two quickest peers
    (a few seconds each on 2 cores)."""
    out = tmp_path / "BENCH.md"
    cmd = [
        sys.executable,
        str(BENCH),
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


def test_failures_and_skips_become_rows(bench: ModuleType, tmp_path: Path) -> None:
    """A crashing workload, one without JSON, and a skipped peer:
    all three rows are written, nothing raises."""
    py = sys.executable

    def fixed(code: str):
        return lambda opts, tmp: [py, "-c", code]

    crash = bench.Workload(
        "ours_cnn", "cnn", "ours", fixed("raise SystemExit('no cli here')"), bench._parse_peer
    )
    silent = bench.Workload("keras_cnn", "cnn", "keras", fixed("print('hello')"), bench._parse_peer)
    skip_code = "import json; print(json.dumps({'skipped': 'torch not installed'}))"
    skip = bench.Workload("torch_cnn", "cnn", "torch", fixed(skip_code), bench._parse_peer)
    rows = bench.run_bench(
        [crash, silent, skip], bench.Options(repeats=2, timeout=60), log=lambda s: None
    )

    meta = {
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
    md_path, json_path = tmp_path / "B.md", tmp_path / "out" / "b.json"
    bench.write_outputs(rows, meta, md_path, json_path)
    md = md_path.read_text()
    assert "error: exit 1: no cli here" in _rows(md, "ours_cnn")[0]
    assert "error: no JSON object" in _rows(md, "keras_cnn")[0]
    assert "skipped: torch not installed" in _rows(md, "torch_cnn")[0]
    assert len(json.loads(json_path.read_text())["runs"]) == 6


def test_ratios_and_targets(bench: ModuleType) -> None:
    """ours/peer ratios and the PASS/FAIL marks come from the medians of the successful runs."""
    ours, torch_, keras_ = (
        w for w in bench.WORKLOADS if w.name in ("ours_cnn", "torch_cnn", "keras_cnn")
    )

    def row(w, seconds: list[float], rss: float = 500.0):
        return bench.Row(
            w,
            [
                bench.Run(w.name, i, [], seconds=s, accuracy=0.9, rss_mb=rss)
                for i, s in enumerate(seconds)
            ],
        )

    rows = [row(ours, [9.0, 10.0, 11.0]), row(torch_, [30.0, 20.0, 25.0]), row(keras_, [40.0])]
    assert bench.ratio(rows[0], rows[1]) == pytest.approx(0.4)
    assert bench.ratio(rows[0], rows[2]) == pytest.approx(0.25)
    cell = bench.target_cell(rows[0], rows)
    assert "≤0.4× torch PASS" in cell and "≤0.3× keras PASS" in cell and "RSS ≤2 GB PASS" in cell

    rows[0] = row(ours, [20.0], rss=3000.0)
    cell = bench.target_cell(rows[0], rows)
    assert "≤0.4× torch FAIL" in cell and "RSS ≤2 GB FAIL" in cell


def test_only_rejects_unknown_names(bench: ModuleType) -> None:
    with pytest.raises(SystemExit):
        bench.select("ours_cnn,nope")
    assert [w.name for w in bench.select("keras_cnn,ours_cnn")] == ["ours_cnn", "keras_cnn"]

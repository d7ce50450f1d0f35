"""Shared plumbing for the chapter's experiment sections (experiments/chapter/sNN_*.py).

Every section exposes `run(out_dir: Path, quick: bool) -> dict` with
    {"rows": [{"section", "what", "ours", "reference", "seconds", ...}],
     "figures": [...], "notes": [...]}
`out_dir` is the report root: figures go to out_dir/figures/<section>/ (committed for the real
report) and training workdirs to out_dir/out/<name>/ (git-ignored). Figure paths are returned
relative to out_dir.

Nothing here re-implements the library: data, training, checkpoints and plots all come from
fashion_jax.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXPERIMENTS = Path(__file__).resolve().parent
REAL_OUT = EXPERIMENTS  # RESULTS.md, figures/ (committed) and out/ (ignored) of the real report
QUICK_OUT = EXPERIMENTS / "out" / "quick"

# Quick mode (CI smoke test): small slices of the real data, so every section runs end to end in
# seconds.
QUICK_TRAIN, QUICK_VAL, QUICK_TEST = 2000, 1000, 1000
# The report's own figures (s07, s08) at the resolution of the committed ones; the library's default
# is 100.
FIGURE_DPI = 90


def default_out(quick: bool) -> Path:
    return QUICK_OUT if quick else REAL_OUT


def figure_dir(out_dir: Path, section: str) -> Path:
    path = Path(out_dir) / "figures" / section
    path.mkdir(parents=True, exist_ok=True)
    return path


def work_dir(out_dir: Path, name: str) -> Path:
    """A training workdir under out_dir/out/ (git-ignored); s10's CNN lives in
    work_dir(out, "cnn")."""
    path = Path(out_dir) / "out" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def rel(out_dir: Path, path: str | Path) -> str:
    return Path(path).resolve().relative_to(Path(out_dir).resolve()).as_posix()


def row(
    section: str,
    what: str,
    ours: Any,
    reference: Any,
    seconds: float,
    ok: bool | None = None,
    **extra: Any,
) -> dict:
    """One table row. `ok` is whether a stated target was met (None: no target, or quick mode)."""
    return {
        "section": section,
        "what": what,
        "ours": fmt(ours),
        "reference": fmt(reference),
        "seconds": round(float(seconds), 2),
        "ok": ok,
        **extra,
    }


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """`with timer() as t: ...; t()` gives the seconds so far (frozen when the block ends)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


@functools.lru_cache(maxsize=2)
def dataset(quick: bool):
    """The chapter's 48,000 / 12,000 / 10,000 split; quick: the first 2,000 / 1,000 / 1,000 of
    it."""
    from fashion_jax.data.dataset import FashionMNIST, load_dataset

    if not quick:
        return load_dataset()
    ds = load_dataset(subset=QUICK_TRAIN)
    return FashionMNIST(
        ds.train_x,
        ds.train_y,
        ds.val_x[:QUICK_VAL],
        ds.val_y[:QUICK_VAL],
        ds.test_x[:QUICK_TEST],
        ds.test_y[:QUICK_TEST],
        ds.source + " (quick slice)",
    )


def fit(config, data, workdir: Path):
    """training.loop.fit with the settings every section wants: a fresh run, no progress bar."""
    from fashion_jax.config import RunOptions
    from fashion_jax.training.loop import fit as library_fit

    return library_fit(config, data, workdir, RunOptions(overwrite=True, quiet=True))


def evaluate(model, params, images, labels, batch_size: int = 1000) -> dict[str, float]:
    """Loss and accuracy of host arrays with the library's own eval step (the one fit uses)."""
    from fashion_jax.training.evaluate import evaluate_arrays

    return evaluate_arrays(model, params, images, labels, batch_size)


def write_json(path: Path, payload: Any) -> Path:
    """The library's atomic JSON writer; the folder is created, and values JSON lacks become
    strings."""
    from fashion_jax.files import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, payload, default=str)


def main(run: Callable[[Path, bool], dict], doc: str | None = None) -> None:
    """`python -m experiments.chapter.sNN_x [--quick] [--out-dir DIR]`: run one section alone,
    print its rows."""
    parser = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None
    )
    parser.add_argument(
        "--quick", action="store_true", help="small data slices and few epochs (smoke test)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="report root (default: experiments/chapter/, or experiments/chapter/out/quick)",
    )
    args = parser.parse_args()
    out_dir = args.out_dir or default_out(args.quick)
    with timer() as t:
        result = run(out_dir, args.quick)
    for r in result["rows"]:
        mark = {True: "ok", False: "SHORT", None: ""}[r.get("ok")]
        print(
            f"{r['section']:4} | {r['what']} | {r['ours']} | "
            f"{r['reference']} | {r['seconds']:.1f}s {mark}"
        )
    for f in result.get("figures", []):
        print(f"figure: {Path(out_dir) / f}")
    for n in result.get("notes", []):
        print(f"note: {n}")
    print(f"{t():.1f}s", file=sys.stderr)

"""Side-by-side benchmark: fashion_jax against PyTorch, Keras and scikit-learn on the chapter's
workloads.

    python -m experiments.bench.bench [--repeats 3] [--subset N] [--only NAME[,NAME]]
                                      [--baseline GIT_REF] [--out experiments/bench/BENCH.md]

(from the repository root; `make bench` runs it with the bench extra installed).

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
filled); their compile time comes from jax.monitoring (experiments/bench/cli_stats.py).

Writes a markdown table to --out (default experiments/bench/BENCH.md) and the raw runs to --json-out
(default: <folder of --out>/out/bench.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from experiments.bench.report import version, write_outputs
from experiments.bench.runner import child_env, one_line, rows_from_saved, run_bench
from experiments.bench.spec import BEFORE_FAST_START, ROOT, Options, Workload
from experiments.bench.workloads import WORKLOADS

DEFAULT_OUT = ROOT / "experiments" / "bench" / "BENCH.md"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "keras", "scikit-learn", "psutil")


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
        "packages": {p: version(p) for p in PACKAGES},
        "command": shlex.join(sys.orig_argv),
        "repeats": opts.repeats,
        "subset": opts.subset,
    }


# ----------------------------------------------------------------------------------- the driver ---


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
    p.add_argument(
        "--report-from",
        type=Path,
        metavar="BENCH_JSON",
        help="measure nothing: write the report again from a saved bench.json's runs",
    )
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = select(args.only)
    if args.report_from:
        saved = json.loads(args.report_from.read_text())
        with tempfile.TemporaryDirectory(prefix="bench-scratch-") as scratch:
            workloads = with_fixed_baselines(workloads, Path(scratch) / "fixed")
        rows = rows_from_saved(saved["runs"], workloads)
        write_outputs(rows, saved["meta"], args.out, args.json_out or args.report_from)
        print(f"wrote {args.out} from {args.report_from}")
        return 0
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

"""
Soak test of the simulated-device all-reduce hang (docs/SCALING.md): run the reproducer many times.

    python -m experiments.soak.hang [--runs 50] [--timeout 300] [--tree DIR] [--out FILE]

The reproducer is `fashion-jax train --model cnn --devices 2 --batch-size 32 --subset 2000
--epochs 2` on 2 simulated CPU devices, for each of RMSprop and Adam, each with and without
--quiet. Before the fix it aborted in XLA after 40 s ("Termination timeout for all reduce").
Runs go one at a time, the four configurations in turn (so a cut-short soak still covers each),
each with its own time limit. Training uses 2,000 real rows as in the reproducer; validation and
test use 500 rows each (a folder of the first real rows), which keeps a run short without changing
the training loop. Every run uses JAX's persistent compilation cache (the CLI's default), so only
the first run of a configuration compiles.

--tree runs another checkout of the package (e.g. the tree before the fix, from
`git worktree add`); the default is a frozen copy of this one taken at the start.
Prints a line per run, then the table of ran / hung / failed counts and seconds; --out also writes
the table (Markdown) and every run (JSON lines, next to it) as the soak goes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fashion_jax
from fashion_jax.data.dataset import FILES, load_split

CONFIGS = [
    ("rmsprop", True),
    ("rmsprop", False),
    ("adam", True),
    ("adam", False),
]
TRAIN = "--model cnn --devices 2 --batch-size 32 --subset 2000 --epochs 2 --checkpoints end"
HUNG_MARKS = ("Termination timeout", "all reduce")  # XLA's abort after its 40 s rendezvous limit


def small_data(folder: Path) -> Path:
    """The first 2,500 real training rows (2,000 train + 500 val after the split), 500 test."""
    for split, n in (("train", 2500), ("test", 500)):
        x, y = load_split(split)
        for name, array in zip(FILES[split], (x[:n], y[:n])):
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
                d.to_bytes(4, "big") for d in array.shape
            )
            data = header + array.astype("uint8").tobytes()
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
    return folder


def child_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env.update(
        XLA_FLAGS=" ".join(flags + ["--xla_force_host_platform_device_count=2"]),
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(tree),
    )
    return env


def one_run(optimizer: str, quiet: bool, args, data: Path, work: Path, env: dict) -> dict:
    cmd = [sys.executable, "-m", "fashion_jax.cli", "train", *TRAIN.split()]
    cmd += ["--optimizer", optimizer, "--workdir", str(work), "--overwrite"]
    cmd += ["--data-dir", str(data), "--no-verify"] + (["--quiet"] if quiet else [])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=env, cwd=work.parent, capture_output=True, text=True, timeout=args.timeout
        )
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:  # killed by subprocess.run
        rc, err = None, exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
    seconds = time.perf_counter() - t0
    # XLA warns after 20 s in a stuck rendezvous and aborts at 40 s; a run that only hit our time
    # limit (a slow machine) without that warning is a failure, not the hang.
    if rc == 0:
        outcome = "ran"
    elif any(mark in err for mark in HUNG_MARKS):
        outcome = "hung"
    else:
        outcome = "failed"
    stuck = next((ln for ln in err.splitlines() if any(m in ln for m in HUNG_MARKS)), "")
    last = stuck or next((ln for ln in reversed(err.splitlines()) if ln.strip()), "")
    last = f"timed out after {args.timeout:.0f}s; {last}" if rc is None else last
    return {"config": name(optimizer, quiet), "outcome": outcome, "rc": rc,
            "seconds": round(seconds, 1), "last_stderr": "" if rc == 0 else last[:200]}  # fmt: skip


def name(optimizer: str, quiet: bool) -> str:
    return f"{optimizer}{' --quiet' if quiet else ''}"


def table(runs: list[dict]) -> str:
    lines = ["| configuration | runs | ran | hung | failed | median s | max s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for optimizer, quiet in CONFIGS:
        mine = [r for r in runs if r["config"] == name(optimizer, quiet)]
        if not mine:
            continue
        count = {k: sum(r["outcome"] == k for r in mine) for k in ("ran", "hung", "failed")}
        secs = [r["seconds"] for r in mine]
        lines.append(
            f"| {name(optimizer, quiet)} | {len(mine)} | {count['ran']} | {count['hung']} | "
            f"{count['failed']} | {statistics.median(secs):.1f} | {max(secs):.1f} |"
        )
    total = {k: sum(r["outcome"] == k for r in runs) for k in ("ran", "hung", "failed")}
    counts = f"{total['ran']} | {total['hung']} | {total['failed']}"
    lines.append(f"| all | {len(runs)} | {counts} | | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--runs", type=int, default=50, help="runs per configuration")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--tree", type=Path, help="folder holding the fashion_jax package to run")
    parser.add_argument("--out", type=Path, help="write the Markdown table here (+ .jsonl)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-hang-") as tmp:
        scratch = Path(tmp)
        tree = args.tree
        if tree is None:  # a frozen copy: edits to the checkout during the soak do not leak in
            tree = scratch / "tree"
            shutil.copytree(Path(fashion_jax.__file__).parent, tree / "fashion_jax")
        (scratch / "data").mkdir()
        data = small_data(scratch / "data")
        env, runs = child_env(tree.resolve()), []
        if args.out:
            args.out.with_suffix(".jsonl").write_text("")
        print(f"package: {tree}  configurations: {len(CONFIGS)} x {args.runs} runs", flush=True)
        for _ in range(args.runs):
            for optimizer, quiet in CONFIGS:
                work = scratch / "work"
                shutil.rmtree(work, ignore_errors=True)
                run = one_run(optimizer, quiet, args, data, work, env)
                runs.append(run)
                print(f"{len(runs):4d} {run['config']:16s} {run['outcome']:6s} "
                      f"{run['seconds']:6.1f}s {run['last_stderr']}", flush=True)  # fmt: skip
                if args.out:
                    args.out.write_text(table(runs) + "\n")
                    with args.out.with_suffix(".jsonl").open("a") as f:
                        f.write(json.dumps(run) + "\n")
    print(table(runs))
    return 0 if all(r["outcome"] == "ran" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

"""
Run the chapter's experiments, section by section, and regenerate RESULTS.md (`make experiments`).

    python -m experiments.chapter.run_all [--quick] [--only s04,s06] [--out-dir DIR] [--out PATH]

from the repository root. Every section (experiments/chapter/sNN_*.py) runs in order, timed, in
this one process; a section that fails becomes an error row and the others still run (the exit
status is 1 at the end if any failed). The raw results go to DIR/out/results.json and RESULTS.md
is rendered from that file alone.

DIR (the report root) defaults to experiments/chapter/: figures in experiments/chapter/figures/
(committed), training workdirs and results.json in experiments/chapter/out/ (git-ignored), the
report in experiments/chapter/RESULTS.md.
--quick (CI smoke test: small data slices, few epochs) defaults DIR to
experiments/chapter/out/quick, so it never overwrites the real report. --only runs some sections
and merges them into an existing results.json of the same mode, so the report still shows every
section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from experiments.chapter import common as C

SECTIONS = (
    "s01_data",
    "s04_cv",
    "s06_dense",
    "s07_mlp_optimizers",
    "s08_dropout",
    "s09_early_stopping",
    "s10_cnn",
    "s11_shapes",
    "s12_visualise",
    "s13_xor",
    "s14_entropy",
)
TABLE_HEADER = "| section | what we ran | our number | chapter's / Keras's number | seconds |"
REAL_REPORT = C.REAL_OUT / "RESULTS.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="small data slices and few epochs (CI smoke test)"
    )
    p.add_argument("--only", help="comma-separated sections, e.g. s04,s06 (default: all, in order)")
    p.add_argument(
        "--out-dir",
        type=Path,
        help="report root: figures/, out/ (default: experiments/chapter/, "
        "or experiments/chapter/out/quick with --quick)",
    )
    p.add_argument("--out", type=Path, help="the markdown report (default: OUT_DIR/RESULTS.md)")
    return p.parse_args(argv)


def select(only: str | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = []
    for w in wanted:
        matches = [s for s in SECTIONS if s == w or s.split("_")[0] == w]
        if not matches:
            raise SystemExit(
                f"error: unknown section {w!r}; "
                f"choose from {', '.join(s.split('_')[0] for s in SECTIONS)}"
            )
        chosen += [m for m in matches if m not in chosen]
    return [s for s in SECTIONS if s in chosen]  # always in chapter order: s12 needs s10's workdir


def run_section(module_name: str, out_dir: Path, quick: bool, run_id: str) -> dict[str, Any]:
    short = module_name.split("_")[0]
    entry: dict[str, Any] = {
        "module": module_name,
        "section": short,
        "title": module_name,
        "rows": [],
        "figures": [],
        "notes": [],
        "error": None,
        "run": run_id,
    }
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"experiments.chapter.{module_name}")
        entry["section"], entry["title"] = module.SECTION, module.TITLE
        shutil.rmtree(
            Path(out_dir) / "figures" / module.SECTION, ignore_errors=True
        )  # no stale figures
        result = module.run(Path(out_dir), quick)
        entry["rows"] = list(result["rows"])
        entry["figures"] = list(result.get("figures", []))
        entry["notes"] = list(result.get("notes", []))
        missing = [f for f in entry["figures"] if not (Path(out_dir) / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"section reported figures it did not write: {', '.join(missing)}"
            )
    except Exception as err:  # one failing section must not stop the others
        traceback.print_exc()
        entry["error"] = f"{type(err).__name__}: {err}".strip().splitlines()[0][:300]
    entry["seconds"] = round(time.perf_counter() - start, 2)
    if entry["error"]:
        entry["rows"].append(
            C.row(
                entry["section"],
                f"error in {module_name}",
                entry["error"],
                "—",
                entry["seconds"],
                ok=False,
            )
        )
    return entry


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    import jax

    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "versions": versions,
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.id} ({d.device_kind})" for d in devices],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def merge(previous: dict | None, new_entries: list[dict], quick: bool) -> list[dict]:
    kept = (
        {e["module"]: e for e in (previous or {}).get("sections", [])}
        if previous and previous.get("quick") == quick
        else {}
    )
    kept.update({e["module"]: e for e in new_entries})
    return [kept[m] for m in SECTIONS if m in kept]


def cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(results: dict, md_path: Path, out_dir: Path) -> str:
    env = results["environment"]
    v = env["versions"]
    total = sum(e["seconds"] for e in results["sections"])
    mode = (
        "quick (small data slices, few epochs: a smoke test, not the chapter's numbers)"
        if results["quick"]
        else "full (the chapter's settings on the real data)"
    )
    lines = [
        "# The chapter as experiments: results"
        + (" (quick smoke run)" if results["quick"] else ""),
        "",
        "> Generated by `make experiments` (`python -m experiments.chapter.run_all`) from "
        "`out/results.json`. "
        "Never edit by hand: rerun it.",
        "",
        f"- Date: {results['generated_at']} (command: `{results['command']}`)",
        f"- JAX {v['jax']} (jaxlib {v['jaxlib']}, flax {v['flax']}, optax {v['optax']}, orbax "
        f"{v['orbax-checkpoint']}), backend {env['backend']}, "
        f"devices: {', '.join(env['devices'])}; "
        f"{env['cpu_count']} CPU cores, load average at start {env['load_average_at_start'][0]} "
        "(a shared machine: seconds are noisy)",
        f"- Total time: {total:.0f} s ({total / 60:.1f} min) "
        f"over {len(results['sections'])} sections",
        f"- Mode: {mode}",
    ]
    runs = sorted({e["run"] for e in results["sections"]})
    if len(runs) > 1:  # --only merged some sections into an earlier report
        lines.append(
            "- Sections come from more than one run (--only): "
            + "; ".join(
                f"{r}: {', '.join(e['section'] for e in results['sections'] if e['run'] == r)}"
                for r in runs
            )
        )
    lines += [
        "",
        "✓ met the stated target or check, ✗ fell short; no mark: no target.",
        "",
        TABLE_HEADER,
        "|---|---|---|---|---|",
    ]
    short = []
    for entry in results["sections"]:
        for r in entry["rows"]:
            mark = {True: " ✓", False: " ✗"}.get(r.get("ok"), "")
            lines.append(
                f"| {cell(r['section'])} | {cell(r['what'])} | {cell(r['ours'])}{mark} | "
                f"{cell(r['reference'])} | {r['seconds']:.1f} |"
            )
            if r.get("ok") is False:
                short.append(
                    f"{r['section']}: {r['what']}: {r['ours']} (reference {r['reference']})"
                )
    lines += [
        "",
        "**Short of a target:** " + ("none." if not short else ""),
        *[f"- {s}" for s in short],
        "",
    ]
    for entry in results["sections"]:
        lines += [f"## {entry['section']}: {entry['title']} ({entry['seconds']:.1f} s)", ""]
        if entry["error"]:
            lines += [f"**Failed:** `{entry['error']}`", ""]
        for fig in entry["figures"]:
            link = Path(os.path.relpath(out_dir / fig, md_path.parent)).as_posix()
            lines += [f"![{entry['section']}: {Path(fig).stem}]({link})", ""]
        for note in entry["notes"]:
            if "\n" in note:
                head, _, body = note.partition("\n")
                lines += [head, "", "```", body, "```", ""]
            else:
                lines.append(f"- {note}")
        if entry["notes"] and "\n" not in entry["notes"][-1]:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = (args.out_dir or C.default_out(args.quick)).resolve()
    md_path = (args.out or out_dir / "RESULTS.md").resolve()
    if args.quick and md_path == REAL_REPORT.resolve():
        raise SystemExit(
            f"error: --quick never writes the real report {REAL_REPORT}; pick another --out"
        )
    modules = select(args.only)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "out" / "results.json"
    previous = json.loads(results_path.read_text()) if args.only and results_path.exists() else None

    # Quick mode compiles at XLA's default level: --xla_backend_optimization_level=0 halved its CPU
    # time but (jaxlib 0.10.2) miscompiled the CNN's conv0 gradient, so s10's loss went NaN at its
    # third step.
    run_id = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    env = environment()
    entries = []
    for name in modules:
        print(f"[{name}] running ...", file=sys.stderr, flush=True)
        entry = run_section(name, out_dir, args.quick, run_id)
        status = f"FAILED: {entry['error']}" if entry["error"] else "ok"
        print(f"[{name}] {entry['seconds']:.1f} s {status}", file=sys.stderr, flush=True)
        entries.append(entry)

    results = {
        "generated_at": run_id,
        "command": " ".join(
            [
                "python",
                "-m",
                "experiments.chapter.run_all",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "quick": args.quick,
        "environment": env,
        "report": str(md_path),
        "sections": merge(previous, entries, args.quick),
    }
    C.write_json(results_path, results)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render(results, md_path, out_dir))
    failed = [e["module"] for e in entries if e["error"]]
    total = sum(e["seconds"] for e in entries)
    print(
        f"wrote {md_path} and {results_path}; {len(entries)} sections in {total:.0f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

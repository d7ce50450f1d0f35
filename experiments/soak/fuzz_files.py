"""A long fuzz campaign over every kind of file fashion_jax reads: cases tried and failures found.

    PYTHONPATH=. python experiments/soak/fuzz_files.py --minutes 10 [--kinds png npy ...]
        [--seed 1] [--save-failures DIR]

Each case mutates a real seed file (tests/fuzz_targets.py: byte flips, truncation, extreme header
fields, duplication, nesting, and per-kind structure: a .npy header, a zip's directory, a .keras's
inner config.json or weights, an IDX header, multipart parts) and feeds it to its reader as
fashion_jax meets it (predict, import, evaluate --data-dir, a workdir's config.json, the page's
upload). A failure is any other outcome than a clean result or one line of bad input, or a case
over fuzz_targets.TIME_LIMIT seconds or MEMORY_LIMIT bytes. The last stdout line is the summary
(JSON): per kind, cases, results and the worst time and memory; failures are listed above it, and
a progress line every minute. The time is shared round-robin between the kinds. With
--save-failures, each case is written there before it runs (in-flight-KIND.bin), so a case that
hangs inside a C library (libhdf5, see docs/RELIABILITY.md) is left behind.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import fuzz_targets as ft  # noqa: E402


def campaign(kinds: list[str], seconds: float, seed: int, save: Path | None) -> dict:
    rng = random.Random(seed)
    seeds = ft.seeds()
    client = ft.stub_client()
    tally: dict[str, collections.Counter] = {k: collections.Counter() for k in kinds}
    worst = {k: {"seconds": 0.0, "extra_mb": 0.0} for k in kinds}
    failures: list[dict] = []
    deadline = time.monotonic() + seconds
    report = time.monotonic() + 60
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        while time.monotonic() < deadline:
            for kind in kinds:
                mutators = ft.mutators(kind)
                name = rng.choice(sorted(mutators))
                data = mutators[name](seeds[kind], lambda lo, hi: rng.randint(lo, hi))
                if save is not None:  # a case that never returns (a hang in C) is left here
                    save.mkdir(parents=True, exist_ok=True)
                    (save / f"in-flight-{kind}.bin").write_bytes(data)
                out = ft.outcome(kind, data, Path(tmp), client)
                tally[kind][out["result"]] += 1
                tally[kind][f"by {name}"] += 1
                worst[kind]["seconds"] = max(worst[kind]["seconds"], round(out["seconds"], 3))
                extra = round(out["extra"] / 2**20, 1)
                worst[kind]["extra_mb"] = max(worst[kind]["extra_mb"], extra)
                if out["result"] == "FAIL":
                    failures.append({"kind": kind, "mutator": name, "detail": out["detail"]})
                    print(json.dumps(failures[-1]), flush=True)
                    if save is not None:
                        (save / f"{kind}-{len(failures)}.bin").write_bytes(data)
            if time.monotonic() > report:  # counts so far, in case the campaign never ends
                report += 60
                counts = {
                    k: sum(v for n, v in c.items() if not n.startswith("by "))
                    for k, c in tally.items()
                }
                print(json.dumps({"progress": counts}), flush=True)
    per_kind = {
        k: {"cases": sum(v for key, v in tally[k].items() if not key.startswith("by ")),
            **dict(tally[k]), **worst[k]}
        for k in kinds
    }  # fmt: skip
    return {"seed": seed, "seconds": seconds, "failures": len(failures), "kinds": per_kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kinds", nargs="*", default=sorted(ft.STRUCTURED))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--save-failures", type=Path, default=None)
    args = parser.parse_args()
    unknown = set(args.kinds) - set(ft.STRUCTURED)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {sorted(ft.STRUCTURED)}")
    summary = campaign(args.kinds, args.minutes * 60, args.seed, args.save_failures)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()

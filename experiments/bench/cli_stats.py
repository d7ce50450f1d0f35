"""Run `fashion-jax ARGS...` and write what it compiled to $FASHION_JAX_BENCH_STATS (JSON).

    FASHION_JAX_BENCH_STATS=stats.json python -m experiments.bench.cli_stats \
        predict --workdir W x.npy

The benchmark's cold/warm-cache rows run each command through this wrapper: JAX reports every
compile through jax.monitoring, whichever command ran it and whichever fashion_jax version (a
--baseline export too), so the compile time of evaluate and predict, which print none, is known.
  compile_seconds  the backend compiles: XLA's compile, or on a cache hit the cache read
  trace_seconds    tracing and lowering to StableHLO (a JAX cache hit still pays these)
  cache_hits, cache_misses  persistent compilation cache lookups (JAX's)
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter

from jax import monitoring

DURATIONS = {
    "/jax/core/compile/backend_compile_duration": "compile_seconds",
    "/jax/core/compile/jaxpr_trace_duration": "trace_seconds",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "trace_seconds",
}
EVENTS = {
    "/jax/compilation_cache/cache_hits": "cache_hits",
    "/jax/compilation_cache/cache_misses": "cache_misses",
}


def main(argv: list[str]) -> int:
    totals: Counter = Counter({name: 0 for name in (*DURATIONS.values(), *EVENTS.values())})

    def duration(event: str, seconds: float, **_: object) -> None:
        if event in DURATIONS:
            totals[DURATIONS[event]] += seconds

    def count(event: str, **_: object) -> None:
        if event in EVENTS:
            totals[EVENTS[event]] += 1

    monitoring.register_event_duration_secs_listener(duration)
    monitoring.register_event_listener(count)
    from fashion_jax.cli import main as cli_main  # imported once the listeners are in place

    rc = cli_main(argv)
    out = os.environ.get("FASHION_JAX_BENCH_STATS")
    if out:
        with open(out, "w") as f:
            json.dump(dict(totals), f)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

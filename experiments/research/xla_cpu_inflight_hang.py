"""
The smallest reproducer of the XLA:CPU hang behind docs/SCALING.md's simulated-device note.

    python -m experiments.research.xla_cpu_inflight_hang             # hangs, XLA aborts after ~40 s
    python -m experiments.research.xla_cpu_inflight_hang --window 8  # runs: at most 8 in flight

Plain JAX, no fashion_jax: a data-parallel step (a mean over a batch sharded across 2 simulated CPU
devices, so its gradient needs an all-reduce) dispatched in a loop without waiting for results.
After ~32 calls, XLA's per-device limit on programs in flight (PjRt's
max_inflight_computations_per_device, 32) blocks the next launch, and one device's part of an
earlier step never starts while the other waits in the all-reduce: "Termination timeout for all
reduce ... of 40 seconds exceeded", exit 134. --window N waits for the call made N calls earlier
before dispatching the next, which is what fashion_jax's fit loop does (steps.InFlight).
Seen with jax/jaxlib 0.10.2 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import collections
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"  # before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--window", type=int, default=0, help="calls in flight at most; 0: any")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    w = jax.device_put(np.zeros((784, 512), np.float32), NamedSharding(mesh, P()))
    x = jax.device_put(np.ones((64, 784), np.float32), NamedSharding(mesh, P("data")))

    @jax.jit
    def step(w, x):
        return w - 0.1 * jax.grad(lambda w: jnp.mean(jnp.tanh(x @ w)))(w)

    pending: collections.deque = collections.deque()
    for _ in range(args.steps):
        w = step(w, x)
        pending.append(w)
        if args.window and len(pending) > args.window:
            pending.popleft().block_until_ready()
        elif not args.window:
            pending.clear()
    w.block_until_ready()
    print(f"ok: {args.steps} steps on 2 devices")


if __name__ == "__main__":
    main()

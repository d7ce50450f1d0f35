"""Data parallelism with JAX's own runtime: a 1-D `data` mesh, a sharded batch, replicated state.

The train step does not change: XLA partitions the same jitted program once the batch carries a
`data`-axis sharding and everything else is replicated; the gradient all-reduce follows from that.
Across hosts, `jax.distributed.initialize` joins the processes into one set of global devices and
every process runs the same program; each device gathers only its slice of the global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fashion_jax.config import ConfigError

ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Join a multi-host run when flags or the standard JAX_* variables ask for one; True if joined."""
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
    if not coordinator:
        return False
    num_processes = num_processes if num_processes is not None else int(os.environ.get(ENV_NUM_PROCESSES, "0") or 0)
    process_id = process_id if process_id is not None else int(os.environ.get(ENV_PROCESS_ID, "-1"))
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(f"multi-host needs --num-processes >= 1 and 0 <= --process-id < it; "
                          f"got {num_processes} and {process_id}")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    return True


def is_leader() -> bool:
    """Only process 0 writes logs, history and plots; every process takes part in checkpoints."""
    return jax.process_index() == 0


@dataclass(frozen=True)
class Placement:
    """Where arrays live: one device (mesh None) or replicated state and a data-sharded batch."""
    mesh: Mesh | None = None

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def replicate(self, tree: Any) -> Any:
        if self.mesh is None:
            return jax.device_put(tree)
        sharding = NamedSharding(self.mesh, P())
        return jax.tree.map(lambda x: _put_global(np.asarray(x), sharding), tree)

    def constrain_batch(self, x: jax.Array) -> jax.Array:
        if self.mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, P("data")))


def _put_global(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # Every process holds the same host value, so each contributes its local replicas of it.
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def placement(devices: int | None, batch_size: int) -> Placement:
    """All devices JAX finds by default (None), or the first `devices`; 1 means no mesh."""
    available = jax.devices()
    count = len(available) if devices is None else devices
    if count < 1 or count > len(available):
        raise ConfigError(f"--devices must be between 1 and {len(available)}, got {count}")
    if count == 1:
        return Placement()
    if batch_size % count:
        raise ConfigError(f"--batch-size {batch_size} must divide by the device count {count} "
                          f"(try {batch_size - batch_size % count or count})")
    return Placement(Mesh(np.array(available[:count]), ("data",)))

"""Data parallelism with JAX's own runtime: a 1-D `data` mesh, a sharded batch, replicated state.

The train step does not change: XLA partitions the same jitted program once the batch carries a
`data`-axis sharding and everything else is replicated; the gradient all-reduce follows from that.
Across hosts, `jax.distributed.initialize` joins the processes into one set of global devices and
every process runs the same program; each device gathers only its slice of the global batch.
On CPU the cross-process collectives are Gloo over TCP (JAX's default,
`jax_cpu_collectives_implementation`).

Multi-process rules the fit loop follows: every process loads the same data and derives the same
order from the seed (on its own CPU device: `jax.local_devices(backend="cpu")`, never
`jax.devices()`, whose first device belongs to process 0); every process calls the Orbax saves (each
writes its shards, process 0 the metadata); only process 0 (`is_leader`) writes config.json,
history, plots and result.json; the workdir is shared (the same path on every host, on a shared
filesystem); `barrier` orders the leader's writes against the other processes' reads of the workdir,
and `any_process` turns a local decision (a signal) into one that all processes take at the same
step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fashion_jax.config import ConfigError
from fashion_jax.runtime import clusters
from fashion_jax.runtime.clusters import CLUSTER_CHOICES

ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
)
ENV_INIT_TIMEOUT = (
    "FASHION_JAX_INIT_TIMEOUT"  # seconds to wait for every process to join (default 300)
)


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int | None = None,
    cluster: str = "auto",
) -> bool:
    """Join a multi-host run when flags, the standard JAX_* variables or a cluster launcher (SLURM's
    srun, Open MPI's mpirun, a Kubernetes Indexed Job: clusters.detect) ask for one; True if joined.

    Flags win over the variables, and both over detection; cluster="none" turns detection off.
    Must run before anything touches a JAX device. A process that cannot reach the coordinator
    within `timeout_s` (default $FASHION_JAX_INIT_TIMEOUT or 300) is aborted by JAX itself.
    """
    if cluster not in CLUSTER_CHOICES:
        raise ConfigError(f"--cluster must be one of {', '.join(CLUSTER_CHOICES)}, got {cluster!r}")
    timeout_s = timeout_s if timeout_s is not None else _env_int(ENV_INIT_TIMEOUT, 300)
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
    if coordinator:
        return _join_explicit(coordinator, num_processes, process_id, timeout_s)
    if num_processes is not None or process_id is not None:
        raise ConfigError(
            f"--num-processes and --process-id need --coordinator HOST:PORT (or ${ENV_COORDINATOR})"
        )
    launcher = clusters.detect(os.environ) if cluster == "auto" else None
    if launcher is None:
        return False
    where = f"the {launcher.processes or 'Kubernetes'}-process {launcher.name} run"
    _join(f"cannot join {where} as process {launcher.process_id}",
          cluster_detection_method=launcher.name, initialization_timeout=timeout_s)  # fmt: skip
    return True


def _join_explicit(coordinator: str, num_processes: int | None, process_id: int | None,
                   timeout_s: int) -> bool:  # fmt: skip
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--coordinator must be HOST:PORT (the address of process 0), got {coordinator!r}"
        )
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES, 0)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID, -1)
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(
            f"multi-host needs --num-processes >= 1 and 0 <= --process-id < it; "
            f"got {num_processes} and {process_id}"
        )
    if jax.distributed.is_initialized():
        if (jax.process_count(), jax.process_index()) != (num_processes, process_id):
            raise ConfigError(
                f"jax.distributed is already initialized as process {jax.process_index()} "
                f"of {jax.process_count()}"
            )
        return True
    what = f"cannot join the {num_processes}-process run at {coordinator} as process {process_id}"
    _join(what, coordinator_address=coordinator, num_processes=num_processes,
          process_id=process_id, initialization_timeout=timeout_s)  # fmt: skip
    return True


def _join(what: str, **kwargs: object) -> None:
    try:
        jax.distributed.initialize(**kwargs)
    except (
        RuntimeError
    ) as err:  # e.g. JAX's backends already started (an unreachable coordinator aborts)
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{what}: {first}") from None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name} must be an integer, got {value!r}") from None


def barrier(name: str) -> None:
    """Every process waits here until all have arrived; a no-op in a single-process run.

    `name` must be the same string, reached in the same order, on every process.
    """
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"fashion_jax:{name}")


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any one; `flag` itself in a single-process run.

    For decisions that must be the same everywhere, such as stopping after a SIGTERM that reached
    only some processes: a process that stops alone leaves the others waiting in a collective.
    Every process must call it at the same point (it is a collective).
    """
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.asarray([bool(flag)]))))


def to_host(tree: Any) -> Any:
    """NumPy copies of a tree of arrays that may span other processes' devices (replicated or
    sharded)."""

    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(jax.device_get(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)


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
    """All devices JAX finds by default (None), or the first `devices`; 1 means no mesh.

    In a multi-process run the mesh spans every device of every process, so `devices` may only
    be None or that global count.
    """
    available = jax.devices()
    count = len(available) if devices is None else devices
    if count < 1 or count > len(available):
        raise ConfigError(
            f"--devices must be between 1 and {len(available)} (the devices JAX found), got {count}"
        )
    if jax.process_count() > 1 and count != len(available):
        raise ConfigError(
            f"--devices {count}: a {jax.process_count()}-process run uses all {len(available)} "
            f"devices of all processes; leave --devices out"
        )
    if count == 1:
        return Placement()
    if batch_size % count:
        raise ConfigError(
            f"--batch-size {batch_size} must divide by the device count {count} "
            f"(try {batch_size - batch_size % count or count})"
        )
    return Placement(Mesh(np.array(available[:count]), ("data",)))

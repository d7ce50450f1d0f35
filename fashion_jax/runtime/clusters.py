"""Which launcher started this process as one of several: SLURM's srun, Open MPI's mpirun, or a
Kubernetes Indexed Job. JAX's own cluster detection then joins the run (distributed.initialize).

Detection is deliberately narrower than JAX's: a process joins only when its launcher says it
started more than one, so a single-task allocation, or a shell that inherited a stray SLURM_JOB_ID,
trains alone at once instead of waiting minutes for partners that never come.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass

from fashion_jax.config import ConfigError

# srun sets all of these for each task of a job step. A shell inside an allocation (salloc, the
# sbatch script itself) has SLURM_JOB_ID and SLURM_NTASKS but no step variables, so it runs alone.
SLURM_STEP_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                   "SLURM_LOCALID")  # fmt: skip
# mpirun (Open MPI 4, ORTE) gives each rank the launcher's URI, from which JAX takes the
# coordinator's address, and the world size and rank.
OMPI_URI, OMPI_SIZE, OMPI_RANK = (
    "OMPI_MCA_orte_hnp_uri",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
)
# An Indexed Job's pod knows its index; JAX asks the Kubernetes API for the others.
K8S_HOST, K8S_INDEX = "KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX"
CLUSTER_CHOICES = ("auto", "none")


@dataclass(frozen=True)
class Launcher:
    name: str  # JAX's cluster detection method: "slurm", "ompi" or "k8s"
    processes: int | None  # how many processes it started (None: JAX learns it from Kubernetes)
    process_id: int


def detect(environ: Mapping[str, str]) -> Launcher | None:
    """The launcher that started this process as one of several; None: the process runs alone."""
    return _slurm(environ) or _open_mpi(environ) or _kubernetes(environ)


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise ConfigError(f"${name} must be an integer, got {environ[name]!r}") from None


def _slurm(environ: Mapping[str, str]) -> Launcher | None:
    if not all(name in environ for name in SLURM_STEP_VARS):
        return None
    tasks = _int(environ, "SLURM_NTASKS")
    return Launcher("slurm", tasks, _int(environ, "SLURM_PROCID")) if tasks > 1 else None


def _open_mpi(environ: Mapping[str, str]) -> Launcher | None:
    if OMPI_SIZE not in environ or _int(environ, OMPI_SIZE) < 2:
        return None
    if OMPI_URI not in environ:  # Open MPI 5 (PMIx) no longer exports ORTE's URI
        raise ConfigError(
            "started by an mpirun that gives no coordinator address (Open MPI 5?); pass "
            "--coordinator HOST:PORT of rank 0, --num-processes and --process-id, or --cluster none"
        )
    return Launcher("ompi", _int(environ, OMPI_SIZE), _int(environ, OMPI_RANK))


def _kubernetes(environ: Mapping[str, str]) -> Launcher | None:
    if K8S_HOST not in environ or K8S_INDEX not in environ:
        return None
    if importlib.util.find_spec("kubernetes") is None:
        raise ConfigError(
            "a Kubernetes Indexed Job was detected but the kubernetes package is missing: "
            "pip install 'fashion-jax[k8s]', or pass --cluster none to train alone"
        )
    return Launcher("k8s", None, _int(environ, K8S_INDEX))

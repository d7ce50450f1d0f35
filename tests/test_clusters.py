"""clusters: which launcher started this process as one of several (the detection matrix)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from test_distributed import TOL, child_env, max_abs_diff, run_pair

from fashion_jax.config import ConfigError
from fashion_jax.runtime import distributed
from fashion_jax.runtime.clusters import Launcher, detect
from fashion_jax.runtime.numerics import leaf_name
from fashion_jax.storage.model_files import load_model
from fashion_jax.storage.run_files import read_history
from fashion_jax.storage.workdir import WorkdirLock

SRUN_TASK = {  # what srun sets for task 1 of a 2-task step (besides much else)
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "node[001-002]",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
}
MPIRUN_RANK = {  # Open MPI 4 (ORTE), rank 1 of 4
    "OMPI_MCA_orte_hnp_uri": "1234567890.0;tcp://10.0.0.1,192.168.0.1:41234",
    "OMPI_COMM_WORLD_SIZE": "4",
    "OMPI_COMM_WORLD_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
}
K8S_POD = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "JOB_COMPLETION_INDEX": "3"}
HAS_K8S = importlib.util.find_spec("kubernetes") is not None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        (SRUN_TASK, Launcher("slurm", 2, 1)),
        ({**SRUN_TASK, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, None),  # a single-task step
        ({"SLURM_JOB_ID": "4242"}, None),  # a stray job id inherited by a shell
        (
            {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_NODELIST": "node001"},
            None,
        ),  # salloc
        (MPIRUN_RANK, Launcher("ompi", 4, 1)),
        ({**MPIRUN_RANK, "OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0"}, None),
        ({"JOB_COMPLETION_INDEX": "3"}, None),  # an index without a Kubernetes API to ask
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, None),  # a plain pod, not an Indexed Job
    ],
)
def test_detection_matrix(environ, expected):
    assert detect(environ) == expected


def test_open_mpi_5_without_a_coordinator_uri_is_a_clear_error():
    environ = {k: v for k, v in MPIRUN_RANK.items() if k != "OMPI_MCA_orte_hnp_uri"}
    with pytest.raises(ConfigError, match="--coordinator HOST:PORT of rank 0"):
        detect(environ)


@pytest.fixture(params=["missing", "installed"])
def kubernetes_package(request, monkeypatch, tmp_path):
    """Both worlds on any machine: the package hidden from the import system, or a stand-in that
    the import system finds (detect only asks whether it is importable)."""
    if request.param == "missing":
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == "kubernetes" else real_find_spec(name, *a),
        )
    elif not HAS_K8S:
        (tmp_path / "kubernetes").mkdir()
        (tmp_path / "kubernetes" / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(tmp_path))
    return request.param


def test_an_indexed_job_is_detected_or_says_what_to_install(kubernetes_package):
    if kubernetes_package == "installed":
        assert detect(K8S_POD) == Launcher("k8s", None, 3)
    else:
        with pytest.raises(ConfigError, match=r"fashion-jax\[k8s\]"):
            detect(K8S_POD)


def test_a_malformed_count_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"\$SLURM_NTASKS must be an integer, got 'two'"):
        detect({**SRUN_TASK, "SLURM_NTASKS": "two"})


# ------------------------------------------------------------------ srun, simulated: two processes


def srun_env(job_id: int, task: int, devices: int = 2) -> dict[str, str]:
    """What srun gives task `task` of a 2-task step on this host, plus `devices` CPU devices."""
    return child_env(devices, SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost",
                     SLURM_NTASKS="2", SLURM_PROCID=str(task), SLURM_LOCALID=str(task),
                     SLURM_STEP_NUM_NODES="1", FASHION_JAX_INIT_TIMEOUT="120")  # fmt: skip


def mpirun_env(job_id: int, rank: int, devices: int = 2) -> dict[str, str]:
    """What Open MPI 4's mpirun gives rank `rank` of 2 on this host (JAX reads only these)."""
    uri = f"{job_id * 4096}.0;tcp://127.0.0.1:41000"  # JAX's port: 61440 + job_id % 4096
    return child_env(devices, OMPI_MCA_orte_hnp_uri=uri, OMPI_COMM_WORLD_SIZE="2",
                     OMPI_COMM_WORLD_RANK=str(rank), OMPI_COMM_WORLD_LOCAL_RANK=str(rank),
                     FASHION_JAX_INIT_TIMEOUT="120")  # fmt: skip


def free_job_id() -> int:
    """A job id whose coordinator port (JAX, for both launchers: 61440 + id % 4096) is free now."""
    for port in random.Random().sample(range(61440, 65536), 64):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return 4096 * 7 + (port - 61440)
    raise AssertionError("no free port in 61440-65535")


LAUNCHERS = {"srun": srun_env, "mpirun": mpirun_env}


def launch_pair(
    tmp_path: Path, argv: list[str], launcher: str = "srun"
) -> list[tuple[int, str, str]]:
    """`fashion-jax ARGV` as the two processes `launcher` would start, and their outcomes."""
    job_id, env = free_job_id(), LAUNCHERS[launcher]
    cmd = [sys.executable, "-m", "fashion_jax.cli", *argv]
    results, _ = run_pair([cmd, cmd], [env(job_id, 0), env(job_id, 1)], tmp_path, 300)
    return results


def training(data_dir: Path, workdir: Path, *extra: str) -> list[str]:
    return ["train", "--model", "mlp", "--dropout", "0.3", "--batch-size", "64", "--seed", "5",
            "--epochs", "2", "--data-dir", str(data_dir), "--no-verify", "--json", "--quiet",
            "--workdir", str(workdir), *extra]  # fmt: skip


def param_arrays(workdir: Path) -> dict[str, np.ndarray]:
    params = load_model(workdir)[2]
    return {leaf_name(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.fixture(scope="module")
def alone(tmp_path_factory, synthetic_idx_dir) -> Path:
    """The same training as one process on one device: the reference."""
    workdir = tmp_path_factory.mktemp("alone") / "one"
    done = subprocess.run(
        [sys.executable, "-m", "fashion_jax.cli", *training(synthetic_idx_dir, workdir)],
        env=child_env(1), capture_output=True, text=True, timeout=300, cwd=workdir.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["processes"], summary["devices"]) == (1, 1)
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_two_launched_processes_form_one_run_that_trains_like_one_process(
    launcher, tmp_path, synthetic_idx_dir, alone
):
    workdir = tmp_path / launcher
    results = launch_pair(tmp_path, training(synthetic_idx_dir, workdir), launcher)
    for rc, _, err in results:
        assert rc == 0, err[-2000:]
    summaries = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    assert [(s["processes"], s["devices"]) for s in summaries] == [(2, 4), (2, 4)]
    rows = [read_history(folder / "history.jsonl") for folder in (workdir, alone)]
    loss_diff = max(abs(a[k] - b[k]) for a, b in zip(*rows) for k in ("loss", "val_loss"))
    param_diff = max_abs_diff(param_arrays(workdir), param_arrays(alone))
    print(f"{launcher}-simulated 2 processes x 2 devices vs 1 process: "
          f"max param diff {param_diff:.3g}, max loss diff {loss_diff:.3g}")  # fmt: skip
    assert len(rows[0]) == len(rows[1]) == 2
    assert loss_diff <= TOL and param_diff <= TOL


@pytest.mark.slow
def test_a_second_srun_on_a_locked_workdir_is_refused_in_one_line_by_every_task(
    tmp_path, synthetic_idx_dir
):
    workdir = tmp_path / "run"
    with WorkdirLock(workdir):
        results = launch_pair(tmp_path, training(synthetic_idx_dir, workdir))
    errors = []
    for rc, _, err in results:
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert rc == 2 and "Traceback" not in err and len(lines) == 1, err[-2000:]
        errors.append(lines[0])
    assert errors[0].startswith(f"error: {workdir} is in use by process {os.getpid()} (since ")
    assert errors[1] == f"error: {workdir} is in use by another run (process 0 was refused)"
    assert not (workdir / "config.json").exists()


def test_a_stray_slurm_job_id_trains_alone_at_once(tmp_path, synthetic_idx_dir):
    # An interactive shell inside an allocation: job variables, but no srun step variables.
    env = child_env(1, SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_NODELIST="localhost")
    argv = ["train", "--model", "dense", "--epochs", "1", "--data-dir", str(synthetic_idx_dir),
            "--no-verify", "--json", "--quiet", "--workdir", str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "fashion_jax.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["processes"] == 1


def test_cluster_none_and_flags_win_over_detection(monkeypatch):
    joined = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: joined.append(kw))
    for name, value in SRUN_TASK.items():
        monkeypatch.setenv(name, value)
    assert distributed.initialize(cluster="none") is False and joined == []
    distributed.initialize(cluster="auto", timeout_s=7)
    assert joined[-1] == {"cluster_detection_method": "slurm", "initialization_timeout": 7}
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    distributed.initialize("10.1.2.3:1234", 3, 2, timeout_s=7, cluster="auto")
    assert joined[-1] == {"coordinator_address": "10.1.2.3:1234", "num_processes": 3,
                          "process_id": 2, "initialization_timeout": 7}  # fmt: skip
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.9.9.9:99")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    distributed.initialize(timeout_s=7)
    assert joined[-1]["coordinator_address"] == "10.9.9.9:99" and len(joined) == 3

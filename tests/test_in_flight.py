"""The fit loop never runs more than MAX_CALLS_IN_FLIGHT train calls ahead of the devices.

XLA's PjRt client blocks the launch of a 33rd in-flight program on a device, and on XLA:CPU with
several devices that block can deadlock a step's gradient all-reduce: XLA aborts the process after
40 s ("Termination timeout for all reduce"; docs/SCALING.md). The end-to-end case trains a CNN on 2
simulated CPU devices for 63 steps with nothing else syncing the loop; without the bound it aborted
in every run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

from fashion_jax.config import RunOptions, TrainConfig, model_config
from fashion_jax.data.dataset import FashionMNIST
from fashion_jax.training import steps
from fashion_jax.training.loop import fit


class Marker:
    def __init__(self, name: str, waited: list[str]):
        self.name, self._waited = name, waited

    def block_until_ready(self) -> Marker:
        self._waited.append(self.name)
        return self


def test_in_flight_waits_for_the_oldest_call_past_the_limit():
    waited: list[str] = []
    window = steps.InFlight(limit=3)
    for i in range(3):
        window.add(Marker(f"call{i}", waited))
    assert waited == [] and len(window) == 3  # up to the limit, the host never waits
    window.add(Marker("call3", waited))
    assert waited == ["call0"] and len(window) == 3
    window.add(Marker("call4", waited))
    assert waited == ["call0", "call1"]  # always the oldest, one per new call


def test_the_default_limit_stays_far_below_xlas_32_per_device():
    assert 1 <= steps.MAX_CALLS_IN_FLIGHT <= 16
    assert steps.InFlight().limit == steps.MAX_CALLS_IN_FLIGHT


def synthetic(n_train: int, n_val: int, seed: int = 0) -> FashionMNIST:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_train + n_val, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n_train + n_val).astype(np.uint8)
    return FashionMNIST(x[:n_train], y[:n_train], x[n_train:], y[n_train:], x[:0], y[:0], "synth")


def test_every_train_call_of_fit_goes_through_the_bound(monkeypatch, tmp_path):
    added: list[int] = []
    real_add = steps.InFlight.add
    monkeypatch.setattr(steps.InFlight, "add", lambda self, m: (added.append(1), real_add(self, m)))
    # a dense model on CPU: 100-step scans plus single steps, so both kinds of call are counted
    config = TrainConfig(model=model_config("logreg"), epochs=2, batch_size=2, seed=1)
    result = fit(config, synthetic(250, 20), tmp_path / "run", RunOptions(quiet=True))
    per_epoch = 125 // 100 + 125 % 100  # one scan of 100, then 25 single steps
    assert result.epochs_run == 2 and len(added) == 2 * per_epoch


# 2,000 rows in batches of 32: 63 train calls in an epoch, one per step (a CNN on CPU), and no host
# sync inside the epoch, so an unbounded loop queues far more than 32 calls per device.
TWO_DEVICES = textwrap.dedent("""
    import sys
    import jax
    from fashion_jax.config import RunOptions, TrainConfig, model_config
    from fashion_jax.training.loop import fit
    sys.path.insert(0, sys.argv[2])
    from test_in_flight import synthetic

    assert len(jax.devices()) == 2, jax.devices()
    config = TrainConfig(model=model_config("cnn", filters=(8, 16), hidden=32),
                         optimizer="rmsprop", epochs=1, batch_size=32)
    result = fit(config, synthetic(2000, 64), sys.argv[1],
                 RunOptions(quiet=True, devices=2, checkpoints="end"))
    print("epochs", result.epochs_run)
""")


def test_two_cpu_devices_train_past_xlas_in_flight_limit(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=2"])
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [sys.executable, "-c", TWO_DEVICES, str(tmp_path / "run"), tests_dir],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    tail = "\n".join(proc.stderr.splitlines()[-8:])
    deadlocked = "all reduce" in proc.stderr  # XLA's message when it gives up on the rendezvous
    assert not deadlocked, f"the gradient all-reduce deadlocked:\n{tail}"
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{tail}"
    assert proc.stdout.split()[-2:] == ["epochs", "1"]

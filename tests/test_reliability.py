"""Crash and signal safety of `fashion-jax train`, end to end in subprocesses on real data.

A run killed with SIGKILL at any moment (mid-epoch, between epochs, during a checkpoint write),
or stopped by SIGINT/SIGTERM, and then resumed with --resume, must leave exactly the same bits as
an uninterrupted run: best params, newest full state, history.jsonl and result.json metrics
(`fashion_jax.storage.workdir.fingerprint`). experiments/soak/resume.py does the same at random
moments.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import require_real_data

from experiments.soak.resume import STEPS_PER_EPOCH, train_args
from fashion_jax.storage.model_files import load_model
from fashion_jax.storage.workdir import fingerprint

# About 10 training processes on the real data; `make test` runs them.
pytestmark = [pytest.mark.slow, pytest.mark.realdata]

TRAIN = train_args(2)  # the soak's run, two epochs
EPOCH = STEPS_PER_EPOCH
TIMEOUT = 300


PAUSED_SAVE = Path(__file__).with_name("paused_save.py")  # the save-holding hook, tests only


def command(workdir: Path, *extra: str, hold: str | None = None) -> list[str]:
    """The train command; hold="STEP:SECONDS" runs it under tests/paused_save.py."""
    launcher = [str(PAUSED_SAVE), hold] if hold else ["-m", "fashion_jax.cli"]
    return [sys.executable, *launcher, "train", *TRAIN, "--workdir", str(workdir), *extra]


def start(
    workdir: Path, *extra: str, hold: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        command(workdir, *extra, hold=hold),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | (env or {}),
    )


def finish(workdir: Path) -> None:
    done = subprocess.run(
        command(workdir, "--resume"), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-2000:]


def steps_in(folder: Path) -> list[int]:
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    )


def tmp_dirs(folder: Path) -> list[str]:
    return (
        [p.name for p in folder.iterdir() if ".orbax-checkpoint-tmp" in p.name]
        if folder.is_dir()
        else []
    )


def history_rows(workdir: Path) -> int:
    path = workdir / "history.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def wait_until(proc: subprocess.Popen, ready, what: str, timeout: float = TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-1500:]}"
            )
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def sigkill(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the process finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run's fingerprint."""
    require_real_data()
    workdir = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(command(workdir), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert steps_in(workdir / "checkpoints") == [2 * EPOCH - 5, 2 * EPOCH]
    return fingerprint(workdir)


def test_sigkill_mid_epoch_between_epochs_and_during_a_save_then_resume_is_bitwise_exact(
    reference, tmp_path
):
    workdir = tmp_path / "run"
    ckpts, best = workdir / "checkpoints", workdir / "best"

    # 1. --resume on an empty workdir starts fresh; killed in the first epoch, after a mid-epoch
    # checkpoint (each train call slowed by 20 ms: no save held, but the epoch's last 45 steps
    # take ~1 s, so the kill lands before the epoch ends however fast the saves commit).
    proc = start(workdir, "--resume", hold="0:0:0.02")
    wait_until(proc, lambda: any(0 < s < EPOCH for s in steps_in(ckpts)), "a mid-epoch checkpoint")
    sigkill(proc)
    assert history_rows(workdir) == 0 and max(steps_in(ckpts)) < EPOCH

    # 2. Resumed mid-epoch (position and running sums from the checkpoint); killed between epochs.
    proc = start(workdir, "--resume")
    wait_until(proc, lambda: history_rows(workdir) == 1, "the first epoch's history row")
    sigkill(proc)

    # 3. Killed while the epoch-2 end state is being written (held in its tmp folder by the test
    #    hook) and after best/2 was committed: best/ is one epoch ahead of the newest intact state.
    proc = start(workdir, "--resume", hold=f"{2 * EPOCH}:60")
    wait_until(
        proc,
        lambda: (
            f"{2 * EPOCH}.orbax-checkpoint-tmp" in tmp_dirs(ckpts)
            and steps_in(best) == [2]
            and history_rows(workdir) == 2
        ),
        "the held epoch-2 save with best/2 committed",
    )
    sigkill(proc)
    assert max(steps_in(ckpts)) < 2 * EPOCH and steps_in(best) == [2]
    assert (
        history_rows(workdir) == 2
    )  # written right after the save was issued: ahead of the checkpoint

    # 4. Resume to the end: redoes the rest of epoch 2, rewrites best/2, history.jsonl from the
    # checkpoint.
    finish(workdir)
    assert not tmp_dirs(ckpts) and not tmp_dirs(best)
    assert fingerprint(workdir) == reference


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_saves_prints_the_resume_command_and_exits_128_plus_signum(
    reference, tmp_path, signum
):
    workdir = tmp_path / "run"
    proc = start(workdir)
    wait_until(proc, lambda: bool(steps_in(workdir / "checkpoints")), "the first checkpoint")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 128 + signum, err[-2000:]
    last = err.strip().splitlines()[-1]
    # Which epoch the signal lands in depends on the machine: saves are committed from a helper
    # thread while training goes on, so the first checkpoint may appear when epoch 2 has begun.
    assert (
        re.match(r"interrupted: stopped in epoch [12] at step \d+;", last)
        and "resume with: fashion-jax train" in last
    )
    assert last.endswith("--resume") and "Traceback" not in err
    step = int(last.split(" at step ")[1].split(";")[0])
    assert steps_in(workdir / "checkpoints")[-1] == step and not tmp_dirs(workdir / "checkpoints")
    finish(workdir)
    assert fingerprint(workdir) == reference


def test_second_ctrl_c_exits_at_once_and_corrupts_nothing(reference, tmp_path):
    workdir = tmp_path / "run"
    # Hold every save from step 105 on, so the second Ctrl-C lands while the stop's save is in
    # flight.
    proc = start(workdir, hold="105:60")
    wait_until(
        proc,
        lambda: "105.orbax-checkpoint-tmp" in tmp_dirs(workdir / "checkpoints"),
        "the held save",
    )
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10  # at once, not after the 60 s hold
    assert proc.returncode == 130
    assert 105 not in steps_in(workdir / "checkpoints")  # the half-written step is not a step
    finish(workdir)
    assert fingerprint(workdir) == reference


def test_one_writer_per_workdir_while_readers_always_see_a_committed_checkpoint(
    reference, tmp_path
):
    workdir, release = tmp_path / "run", tmp_path / "release"
    # The save of step 150 (epoch 1's end) is held (up to 60 s) until the test creates `release`:
    # the trainer stays alive, lock held, while the second writers try and the readers read.
    proc = start(workdir, hold=f"{EPOCH}:60", env={"PAUSED_SAVE_RELEASE": str(release)})
    wait_until(proc, lambda: steps_in(workdir / "checkpoints"), "the first checkpoint")
    holder = (workdir / ".lock").read_text().split()
    assert holder[0] == str(proc.pid)
    seconds = [  # every kind of second writer, side by side
        subprocess.Popen(
            command(workdir, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for extra in (["--resume"], ["--overwrite"], [])
    ]
    for second in seconds:
        _, err = second.communicate(timeout=TIMEOUT)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert second.returncode == 2 and "Traceback" not in err, err
        assert errors == [f"error: {workdir} is in use by process {proc.pid} (since {holder[1]})"]
    assert proc.poll() is None, "the trainer ended before the second writers were refused"
    held = f"{EPOCH}.orbax-checkpoint-tmp"
    wait_until(
        proc,
        lambda: steps_in(workdir / "best") and held in tmp_dirs(workdir / "checkpoints"),
        "best/1 committed and step 150's save held",
    )
    reads_while_held = 0
    while proc.poll() is None:  # a reader takes no lock and never sees half a save
        was_held = held in tmp_dirs(workdir / "checkpoints")
        _, _, params = load_model(workdir)
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))
        if was_held and not release.exists():
            reads_while_held += 1
            if reads_while_held == 2:  # then the save commits while the reads go on
                release.touch()
    assert proc.returncode == 0, proc.stderr.read()[-1500:]
    assert reads_while_held == 2
    assert fingerprint(workdir) == reference  # the refused writers changed nothing

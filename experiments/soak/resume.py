"""
Soak test of exact resume: SIGKILL `fashion-jax train` at random moments, resume, compare bitwise.

    python -m experiments.soak.resume [--kills 20] [--seed S]

One reference run goes uninterrupted. Then each trial trains the same run in a fresh workdir,
kills it (SIGKILL) once or twice, and resumes with --resume until it finishes; its fingerprint
(best params, newest full state, history.jsonl, result.json metrics; see
fashion_jax.storage.workdir.fingerprint) must equal the reference's. Kill moments rotate over:
  random    a uniform delay over the whole run, start-up included;
  training  a uniform delay after the first checkpoint exists;
  save      while a randomly chosen checkpoint step is being written (its tmp folder exists), or
            right after it if the write was too quick to see;
  paused    a save of an epoch end held by the tests/paused_save.py hook between its last byte
            and its atomic rename, after best/ of that epoch had time to commit: best/ is then ahead
            of the newest intact state, and the resumed run must redo the epoch and rewrite best/;
and every third trial is killed a second time while it resumes.
All processes run a frozen copy of the package taken at the start.
Prints a line per trial, then "exact resumes: K/N" and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fashion_jax.storage.workdir import fingerprint

EPOCHS, STEPS_PER_EPOCH = 3, 150


def train_args(epochs: int) -> list[str]:
    """The small real run this soak and tests/test_reliability.py kill and resume: 1200 rows /
    batch 8 = 150 steps an epoch (one 100-step scan plus 50 single steps on CPU), a checkpoint
    every 5 steps, dropout so that the per-step keys matter."""
    return ["--model", "mlp", "--dropout", "0.3", "--subset", "1200", "--epochs", str(epochs),
            "--batch-size", "8", "--checkpoint-every", "5", "--quiet", "--json"]  # fmt: skip


TRAIN = train_args(EPOCHS)


PAUSED_SAVE = Path(__file__).resolve().parents[2] / "tests" / "paused_save.py"


def train_cmd(workdir: Path, *extra: str, hold: str | None = None) -> list[str]:
    """The train command; hold="STEP:SECONDS" runs it under the save-holding hook
    (tests/paused_save.py)."""
    launcher = [HOOK[0], hold] if hold else ["-m", "fashion_jax.cli"]
    return [sys.executable, *launcher, "train", *TRAIN, "--workdir", str(workdir), *extra]


# Every process runs a frozen copy of the package and the hook (see snapshot_package): in a shared
# checkout, an edit landing mid-soak would otherwise make later trials differ from the reference.
ENV: dict[str, str] = dict(os.environ)
# `python -m fashion_jax.cli` puts its cwd first on sys.path, so a child's cwd must not hold the
# live package: not the repository root this script is started from, but the soak's own folder.
CWD: list[str] = [os.getcwd()]
HOOK: list[str] = [str(PAUSED_SAVE)]


def snapshot_package(root: Path) -> None:
    import fashion_jax

    src = root / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(
        Path(fashion_jax.__file__).parent,
        src / "fashion_jax",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    HOOK[0] = str(shutil.copy2(PAUSED_SAVE, src / PAUSED_SAVE.name))
    ENV["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
    CWD[0] = str(root)


def start(workdir: Path, hold: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        train_cmd(workdir, "--resume", hold=hold),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=CWD[0],
    )


def tmp_dirs(workdir: Path) -> list[str]:
    return [
        p.name
        for folder in ("checkpoints", "best")
        if (workdir / folder).is_dir()
        for p in (workdir / folder).iterdir()
        if ".orbax-checkpoint-tmp" in p.name
    ]


def wait_for(proc: subprocess.Popen, ready, timeout: float, poll: float = 0.005) -> bool:
    """Poll until ready() is true (True) or the process ends or time runs out (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if ready():
            return True
        time.sleep(poll)
    return False


def snapshot(workdir: Path) -> dict:
    steps = lambda f: (
        sorted(int(p.name) for p in (workdir / f).iterdir() if p.name.isdigit())
        if (workdir / f).is_dir()
        else []
    )
    history = workdir / "history.jsonl"
    return {
        "latest": steps("checkpoints"),
        "best": steps("best"),
        "tmp": tmp_dirs(workdir),
        "history_rows": len(history.read_text().splitlines()) if history.is_file() else 0,
    }


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL; False if the process had already finished."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def checkpoint_steps() -> list[int]:
    """Every step the run saves: every 5 steps from the end of the first 100-step call, and epoch
    ends."""
    return sorted(
        {e * STEPS_PER_EPOCH + p for e in range(EPOCHS) for p in range(100, STEPS_PER_EPOCH + 1, 5)}
        | {e * STEPS_PER_EPOCH for e in range(1, EPOCHS + 1)}
    )


def run_trial(
    workdir: Path, mode: str, rng: random.Random, run_seconds: float, second_kill: bool
) -> dict:
    step = (
        STEPS_PER_EPOCH * rng.randint(1, EPOCHS) if mode == "paused" else None
    )  # the epoch end to hold
    proc = start(workdir, hold=f"{step}:30" if step else None)
    ckpts = workdir / "checkpoints"
    if mode == "random":  # anywhere, start-up included
        delay = rng.uniform(0.5, run_seconds)
        wait_for(proc, lambda: False, delay)
        what = f"after {delay:.1f}s"
    elif mode == "training":  # anywhere between the first checkpoint and the (estimated) end
        t_start = time.monotonic()
        wait_for(proc, lambda: bool(snapshot(workdir)["latest"]), run_seconds * 3)
        delay = rng.uniform(0.0, max(0.2, run_seconds - (time.monotonic() - t_start)))
        wait_for(proc, lambda: False, delay)
        what = f"{delay:.1f}s after the first checkpoint"
    elif (
        mode == "save"
    ):  # while a chosen step is being written (or, if its tmp folder was missed, just after)
        step = rng.choice(checkpoint_steps())
        wait_for(
            proc,
            lambda: (
                f"{step}.orbax-checkpoint-tmp" in tmp_dirs(workdir) or (ckpts / str(step)).is_dir()
            ),
            run_seconds * 3,
            poll=0.001,
        )
        what = (
            f"during the save of step {step}"
            if f"{step}.orbax-checkpoint-tmp" in tmp_dirs(workdir)
            else f"just after the save of step {step}"
        )
    else:  # a save held before its rename, after best/ of that epoch had time to commit
        wait_for(
            proc,
            lambda: any(name.startswith(f"{step}.") for name in tmp_dirs(workdir)),
            run_seconds * 3,
        )
        linger = rng.uniform(0.0, 2.0)
        wait_for(proc, lambda: False, linger)
        what = f"{linger:.1f}s into the held save of step {step}"
    kills = [{"when": what, "killed": kill(proc), **snapshot(workdir)}]
    if (
        second_kill and kills[0]["killed"]
    ):  # crash again while resuming: the resume itself must be crash-safe
        proc = start(workdir)
        delay = rng.uniform(0.5, run_seconds)
        wait_for(proc, lambda: False, delay)
        kills.append(
            {"when": f"resume, after {delay:.1f}s", "killed": kill(proc), **snapshot(workdir)}
        )
    final = subprocess.run(
        train_cmd(workdir, "--resume"), capture_output=True, text=True, env=ENV, cwd=CWD[0]
    )
    return {
        "mode": mode,
        "kills": kills,
        "rc": final.returncode,
        "stderr": final.stderr.strip().splitlines()[-1:] if final.returncode else [],
        "fingerprint": fingerprint(workdir) if final.returncode == 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--kills",
        type=int,
        default=20,
        help="run trials until this many of them had a SIGKILL land (a kill that comes after the "
        "process already finished does not count; its trial is still compared)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the kill moments")
    parser.add_argument(
        "--root", help="folder for the workdirs (default: a temporary folder, removed after)"
    )
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(args.root or tempfile.mkdtemp(prefix="soak_resume_")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    snapshot_package(root)
    t0 = time.monotonic()
    ref_dir = root / "reference"
    shutil.rmtree(ref_dir, ignore_errors=True)
    ref = subprocess.run(train_cmd(ref_dir), capture_output=True, text=True, env=ENV, cwd=CWD[0])
    if ref.returncode != 0:
        print(f"reference run failed: {ref.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    run_seconds = time.monotonic() - t0
    reference = fingerprint(ref_dir)
    modes = ["random", "training", "save", "paused"]
    trials: list[dict] = []
    landed = lambda t: any(k["killed"] for k in t["kills"])
    while sum(map(landed, trials)) < args.kills:
        i = len(trials)
        workdir = root / f"trial{i:03d}"
        shutil.rmtree(workdir, ignore_errors=True)
        trial = run_trial(
            workdir, modes[i % len(modes)], rng, run_seconds, second_kill=(i % 3 == 2)
        )
        trial["exact"] = trial["fingerprint"] == reference
        if not trial["exact"] and trial["fingerprint"]:
            trial["differs"] = [k for k in reference if reference[k] != trial["fingerprint"][k]]
        trials.append(trial)
        kills = "; ".join(
            f"{k['when']}{'' if k['killed'] else ' (had already finished)'}, latest {k['latest']}, "
            f"best {k['best']}, tmp {len(k['tmp'])}, history {k['history_rows']}"
            for k in trial["kills"]
        )
        print(
            f"trial {i + 1:2d} {trial['mode']:8s} "
            f"{'EXACT' if trial['exact'] else 'DIFFERENT'}  {kills}"
            + (f"  rc {trial['rc']} {trial['stderr']}" if trial["rc"] else "")
            + (f"  differs: {trial['differs']}" if trial.get("differs") else ""),
            flush=True,
        )
        if trial["exact"]:
            shutil.rmtree(workdir, ignore_errors=True)
    counted = [t for t in trials if landed(t)]
    n, exact = len(counted), sum(t["exact"] for t in counted)
    all_exact = all(t["exact"] for t in trials)  # a trial whose kill came too late must match too
    print(f"exact resumes: {exact}/{n}")
    print(
        json.dumps(
            {
                "exact": exact,
                "killed_trials": n,
                "trials": len(trials),
                "kills": sum(k["killed"] for t in trials for k in t["kills"]),
                "seed": args.seed,
                "modes": {m: sum(t["mode"] == m for t in counted) for m in modes},
                "killed_during_a_save": sum(
                    bool(k["tmp"]) for t in trials for k in t["kills"] if k["killed"]
                ),
                "reference_seconds": round(run_seconds, 1),
                "seconds": round(time.monotonic() - t0, 1),
                "failed": [i + 1 for i, t in enumerate(trials) if not t["exact"]],
            }
        )
    )
    if all_exact and not args.root:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all_exact else 1


if __name__ == "__main__":
    sys.exit(main())

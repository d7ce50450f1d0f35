"""Soak test of exact resume: SIGKILL `fashion-jax train` at random moments, resume, compare bitwise.

    python experiments/soak_resume.py [--kills 20] [--seed S]

One reference run goes uninterrupted. Then each trial trains the same run in a fresh workdir,
kills it (SIGKILL) once or more, and resumes with --resume until it finishes; its fingerprint
(best params, newest full state, history.jsonl, result.json metrics; see
fashion_jax.resume.fingerprint) must equal the reference's. Kill moments rotate over:
  random    a uniform delay over the whole run, start-up included;
  save      the first moment a *.orbax-checkpoint-tmp* folder appears (a save in flight);
  paused    a save held open by the FASHION_JAX_TEST_SAVE_PAUSE hook, so the kill lands between the
            save's last byte and its atomic rename; an epoch-end step, so best/ is ahead of it;
and one trial in three is killed a second time while it resumes.
The paused mode is the "best/ ahead of the latest state" case: best/<epoch> commits while the
latest save of that epoch is held, so the resumed run must redo the epoch and rewrite best/.
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

from fashion_jax.checkpoint import SAVE_PAUSE_ENV
from fashion_jax.resume import fingerprint

# Small real run with mid-epoch checkpoints: 1200 rows / batch 8 = 150 steps per epoch, one 100-step
# scan plus 50 single steps on CPU, a checkpoint every 5 steps, dropout so the keys matter.
TRAIN = ["--model", "mlp", "--dropout", "0.3", "--subset", "1200", "--epochs", "3", "--batch-size", "8",
         "--checkpoint-every", "5", "--quiet", "--json"]
STEPS_PER_EPOCH = 150


def train_cmd(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fashion_jax.cli", "train", *TRAIN, "--workdir", str(workdir), *extra]


def start(workdir: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(train_cmd(workdir, "--resume"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def tmp_dirs(workdir: Path) -> list[str]:
    return [p.name for folder in ("checkpoints", "best") if (workdir / folder).is_dir()
            for p in (workdir / folder).iterdir() if ".orbax-checkpoint-tmp" in p.name]


def wait_for(proc: subprocess.Popen, ready, timeout: float, poll: float = 0.005) -> bool:
    """Poll until ready() is true (True) or the process ends or time runs out (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if ready():
            return True
        time.sleep(poll)
    return False


def snapshot(workdir: Path) -> dict:
    steps = lambda f: sorted(int(p.name) for p in (workdir / f).iterdir() if p.name.isdigit()) if (workdir / f).is_dir() else []
    history = workdir / "history.jsonl"
    return {"latest": steps("checkpoints"), "best": steps("best"), "tmp": tmp_dirs(workdir),
            "history_rows": len(history.read_text().splitlines()) if history.is_file() else 0}


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL; False if the process had already finished."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def run_trial(workdir: Path, mode: str, rng: random.Random, run_seconds: float, second_kill: bool) -> dict:
    env = {}
    if mode == "paused":
        step = STEPS_PER_EPOCH * rng.choice([1, 2])
        env = {SAVE_PAUSE_ENV: f"{step}:30"}
    proc = start(workdir, env)
    if mode == "random":
        delay = rng.uniform(0.5, run_seconds)
        wait_for(proc, lambda: False, delay)
        what = f"after {delay:.1f}s"
    elif mode == "save":
        target, seen = rng.randint(1, 30), set()  # about 36 saves in a run; kill in the target-th one seen

        def in_target_save() -> bool:
            now = tmp_dirs(workdir)
            seen.update(now)
            return bool(now) and len(seen) >= target

        caught = wait_for(proc, in_target_save, run_seconds * 2, poll=0.002)
        what = f"during save #{len(seen)} seen" if caught else "no save caught"
    else:
        wait_for(proc, lambda: any(name.startswith(f"{step}.") for name in tmp_dirs(workdir)), run_seconds * 3)
        linger = rng.uniform(0.0, 2.0)  # long enough, mostly, for best/ of that epoch to be committed
        wait_for(proc, lambda: False, linger)
        what = f"{linger:.1f}s into the held save of step {step}"
    kills = [{"when": what, "killed": kill(proc), **snapshot(workdir)}]
    if second_kill:  # crash again while resuming: the resume itself must be crash-safe
        proc = start(workdir)
        delay = rng.uniform(0.5, run_seconds / 2)
        wait_for(proc, lambda: False, delay)
        kills.append({"when": f"resume, after {delay:.1f}s", "killed": kill(proc), **snapshot(workdir)})
    final = subprocess.run(train_cmd(workdir, "--resume"), capture_output=True, text=True)
    return {"mode": mode, "kills": kills, "rc": final.returncode,
            "stderr": final.stderr.strip().splitlines()[-1:] if final.returncode else [],
            "fingerprint": fingerprint(workdir) if final.returncode == 0 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="number of trials (each kills at least once)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the kill moments")
    parser.add_argument("--root", help="folder for the workdirs (default: a temporary folder, removed after)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(args.root or tempfile.mkdtemp(prefix="soak_resume_"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ref_dir = root / "reference"
    shutil.rmtree(ref_dir, ignore_errors=True)
    ref = subprocess.run(train_cmd(ref_dir), capture_output=True, text=True)
    if ref.returncode != 0:
        print(f"reference run failed: {ref.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    run_seconds = time.monotonic() - t0
    reference = fingerprint(ref_dir)
    modes = ["random", "save", "paused"]
    exact, trials = 0, []
    for i in range(args.kills):
        workdir = root / f"trial{i:03d}"
        shutil.rmtree(workdir, ignore_errors=True)
        trial = run_trial(workdir, modes[i % 3], rng, run_seconds, second_kill=(i % 3 == 1))
        trial["exact"] = trial["fingerprint"] == reference
        if not trial["exact"] and trial["fingerprint"]:
            trial["differs"] = [k for k in reference if reference[k] != trial["fingerprint"][k]]
        exact += trial["exact"]
        trials.append(trial)
        kills = "; ".join(f"{k['when']}{'' if k['killed'] else ' (had finished)'}, latest {k['latest']}, "
                          f"best {k['best']}, tmp {len(k['tmp'])}, history {k['history_rows']}" for k in trial["kills"])
        print(f"trial {i + 1:2d} {trial['mode']:6s} {'EXACT' if trial['exact'] else 'DIFFERENT'}  {kills}"
              + (f"  rc {trial['rc']} {trial['stderr']}" if trial["rc"] else "")
              + (f"  differs: {trial['differs']}" if trial.get("differs") else ""), flush=True)
        if trial["exact"]:
            shutil.rmtree(workdir, ignore_errors=True)
    n = len(trials)
    killed = sum(k["killed"] for t in trials for k in t["kills"])
    print(f"exact resumes: {exact}/{n}")
    print(json.dumps({"exact": exact, "trials": n, "kills": killed, "seed": args.seed,
                      "modes": {m: sum(t["mode"] == m for t in trials) for m in modes},
                      "reference_seconds": round(run_seconds, 1), "seconds": round(time.monotonic() - t0, 1),
                      "failed": [i + 1 for i, t in enumerate(trials) if not t["exact"]]}))
    if exact == n and not args.root:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if exact == n else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run `fashion-jax` with one checkpoint save held open: a test hook that lives in the tests only.

    python tests/paused_save.py STEP:SECONDS[:CALL_DELAY] train ...

The finished save of checkpoints/STEP waits SECONDS in its *.orbax-checkpoint-tmp* folder before
Orbax's atomic rename, so a test can SIGKILL the process exactly while that save is in flight.
If $PAUSED_SAVE_RELEASE names a file, the wait ends as soon as that file exists: a test that has
seen what it needs lets the save go on instead of sitting out the rest of SECONDS.
CALL_DELAY (seconds) slows every train call down, so that a test killing the process in the
middle of an epoch gets there before the epoch ends, however fast the machine.
Used by tests/test_reliability.py and experiments/soak/resume.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from orbax.checkpoint.path import atomicity

from fashion_jax.training import steps


def hold_save(step: str, seconds: float) -> None:
    """Patch Orbax's atomic rename so that checkpoints/<step> is renamed only after `seconds`."""
    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    release = os.environ.get("PAUSED_SAVE_RELEASE")

    async def paused_finalize(self):
        final = self.get_final()
        if final.name == step and final.parent.name == "checkpoints":
            end = time.monotonic() + seconds
            while time.monotonic() < end and not (release and Path(release).exists()):
                await asyncio.sleep(0.02)
        await finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = paused_finalize


def slow_calls(seconds: float) -> None:
    """Sleep `seconds` after each dispatched train call (steps.InFlight.add sees every one)."""
    add = steps.InFlight.add

    def slow_add(self, marker):
        add(self, marker)
        time.sleep(seconds)

    steps.InFlight.add = slow_add


if __name__ == "__main__":
    step, seconds, *delay = sys.argv[1].split(":")
    hold_save(step, float(seconds))
    if delay:
        slow_calls(float(delay[0]))
    from fashion_jax.cli import main

    sys.exit(main(sys.argv[2:]))

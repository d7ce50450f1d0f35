"""Run `fashion-jax` with one checkpoint save held open: a test hook that lives in the tests only.

    python tests/paused_save.py STEP:SECONDS train ...

The finished save of checkpoints/STEP waits SECONDS in its *.orbax-checkpoint-tmp* folder before
Orbax's atomic rename, so a test can SIGKILL the process exactly while that save is in flight.
Used by tests/test_reliability.py and experiments/soak_resume.py.
"""

from __future__ import annotations

import asyncio
import sys

from orbax.checkpoint.path import atomicity


def hold_save(step: str, seconds: float) -> None:
    """Patch Orbax's atomic rename so that checkpoints/<step> is renamed only after `seconds`."""
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def paused_finalize(self):
        final = self.get_final()
        if final.name == step and final.parent.name == "checkpoints":
            await asyncio.sleep(seconds)
        await finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = paused_finalize


if __name__ == "__main__":
    step, seconds = sys.argv[1].split(":")
    hold_save(step, float(seconds))
    from fashion_jax.cli import main

    sys.exit(main(sys.argv[2:]))

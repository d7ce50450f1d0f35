"""One helper thread that runs the checkpoint saves, in order, while the fit loop trains on.

Orbax's own async save still spends tens of milliseconds of the caller's time per call (threads,
folders, metadata) before its background part; at two saves an epoch that was a large part of a
small model's fit. The caller copies the arrays to the host first (the next step donates the
device buffers), hands the save here, and goes on. The first failure is raised by the next
`submit` and by every `drain`, and each save queued after it is dropped, so nothing newer than a
failed save is ever written.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class SaveQueue:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fashion-jax-save")
        self._pending: list[Future] = []
        self._error: BaseException | None = None  # the first failure, set on the helper thread

    def submit(self, save: Callable[..., Any], *args: Any) -> None:
        """Queue `save(*args)`; raise instead if an earlier save has failed."""
        if self._error is not None:
            self.drain()
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(self._run, save, args))

    def _run(self, save: Callable[..., Any], args: tuple) -> None:
        if self._error is not None:
            return  # after a failed save, a newer one would leave a gap in the run's history
        try:
            save(*args)
        except BaseException as err:
            self._error = err

    def drain(self) -> None:
        """Wait for every queued save; raise the first failure (again, if it was raised before)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread once the queued saves are done (or dropped); never raises."""
        self._pool.shutdown(wait=True)

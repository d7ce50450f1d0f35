"""`in_background(fn, *args)`: one call on its own helper thread, its outcome as a Future.

fit uses it for work whose result is needed only later, next to work that mostly waits or releases
the GIL: curves.png is drawn while the last saves are committed and the test split is evaluated.
The caller's `result()` re-raises any error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


def in_background(fn: Callable[..., Any], *args: Any, name: str = "fashion-jax-helper") -> Future:
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # handed to whoever calls result()
            future.set_exception(err)

    # a daemon: a caller that fails before result() must not keep the process alive
    threading.Thread(target=run, name=name, daemon=True).start()
    return future

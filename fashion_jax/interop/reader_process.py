"""HDF5 files are read in a child process, so that a crafted file costs the child, not the user's
command.

libhdf5 is C: a damaged header can make it dereference a bad pointer (SIGSEGV, found by fuzzing a
Keras .h5) or loop, which no check in Python can catch before the call. The child is a spawned
Python that imports only the reader (h5py and NumPy, no JAX), caps its own memory, and answers
over a pipe; it is started on the first read and reused. A child that dies or runs past
MAX_READ_SECONDS is one line for the caller, and the next read starts a fresh child.
"""

from __future__ import annotations

import importlib
import multiprocessing
import traceback
from typing import Any

from fashion_jax.errors import FashionJaxError

# Reading a Keras file of the chapter's size takes well under a second once the child runs; the
# child's own start (a Python, NumPy and h5py) takes 0.3-2 s on a loaded 2-core machine.
MAX_READ_SECONDS = 60.0
_worker: dict[str, Any] = {}


class ReadFailed(FashionJaxError, ValueError):
    """The child died or hung reading the file."""


def call(target: str, *args: Any) -> Any:
    """`module:function(*args)` run in the reader child; its result, or its bad-input error raised
    here as ReadFailed's sibling the function chose (its message kept), or ReadFailed."""
    conn = _connection()
    try:
        conn.send((target, args))
        if not conn.poll(MAX_READ_SECONDS):
            _stop()
            raise ReadFailed(
                f"reading it took longer than MAX_READ_SECONDS ({MAX_READ_SECONDS:g} s)"
            )
        status, value = conn.recv()
    except (EOFError, OSError):
        code = _stop()
        raise ReadFailed(
            f"the HDF5 library crashed reading it (exit status {code}): a damaged or crafted file"
        ) from None
    if status == "ok":
        return value
    if status == "refused":
        raise ReadFailed(value)
    raise RuntimeError(f"the reader process failed:\n{value}")  # our bug: its traceback


def _connection() -> Any:
    process = _worker.get("process")
    if process is None or not process.is_alive():
        context = multiprocessing.get_context("spawn")  # no fork of a threaded JAX process
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs,), daemon=True, name="h5-reader")
        process.start()
        theirs.close()
        _worker.update(process=process, conn=ours)
    return _worker["conn"]


def _stop() -> int | None:
    process = _worker.pop("process", None)
    conn = _worker.pop("conn", None)
    if conn is not None:
        conn.close()
    if process is None:
        return None
    if process.is_alive():
        process.kill()
    process.join(5)
    return process.exitcode


def _serve(conn: Any) -> None:
    """The child's loop: one (target, args) in, one (status, value) out, until the pipe closes."""
    while True:
        try:
            target, args = conn.recv()
        except EOFError:
            return
        module, name = target.split(":")
        try:
            answer = ("ok", getattr(importlib.import_module(module), name)(*args))
        except FashionJaxError as err:
            answer = ("refused", str(err))
        except Exception:
            answer = ("bug", traceback.format_exc())
        conn.send(answer)

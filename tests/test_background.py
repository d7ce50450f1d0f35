"""in_background: the call runs on another thread; its result or its error reaches result()."""

from __future__ import annotations

import threading

import pytest

from fashion_jax.background import in_background


def test_the_call_runs_on_a_helper_thread_and_returns_its_value():
    future = in_background(lambda a, b: (threading.current_thread().name, a + b), 2, 3)
    name, total = future.result(timeout=30)
    assert total == 5 and name != threading.current_thread().name


def test_an_error_in_the_call_is_raised_by_result():
    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        in_background(fail).result(timeout=30)

"""Assertions several test files share: one-line errors that name their cause, and equal trees."""

from __future__ import annotations

import jax
import numpy as np
import pytest


def one_line(err: BaseException | pytest.ExceptionInfo, *causes: str) -> str:
    """The error's message: one line, naming every one of `causes`."""
    text = str(err.value if isinstance(err, pytest.ExceptionInfo) else err).strip()
    assert text and "\n" not in text, text
    missing = [c for c in causes if c not in text]
    assert not missing, f"{text!r} does not name {missing}"
    return text


def error_line(code: int, stderr: str | list[str], *causes: str) -> str:
    """What the CLI printed for bad input: exit 2, no traceback, exactly one `error:` line, and
    that line names every one of `causes`."""
    lines = stderr.splitlines() if isinstance(stderr, str) else list(stderr)
    assert code == 2, lines
    assert not any("Traceback" in line for line in lines), lines
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, lines
    return one_line(errors[0], *causes)


def same_tree(a, b) -> bool:
    """The same leaves, dtypes and values, bit for bit."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(la, lb)
    )

"""Compiling programs that run once (init, epoch permutations) cheaply.

On XLA:CPU the default LLVM optimisation level spends seconds compiling each threefry/initializer
program whose run time is negligible; level 0 compiles it ~4x faster. Integer random bits are
identical at any level; float draws may differ in the last ulp, so every path that must agree
(a lone fit and a vmapped CV fold) compiles its init through this one function.
"""
from __future__ import annotations

from typing import Any, Callable

import jax


def one_shot_options() -> dict[str, Any]:
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}


def compile_one_shot(fn: Callable, *example_args: Any) -> Callable:
    """`jax.jit(fn)` compiled ahead of time for these argument shapes, at a low optimisation level."""
    return jax.jit(fn).lower(*example_args).compile(compiler_options=one_shot_options())

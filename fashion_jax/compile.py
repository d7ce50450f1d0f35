"""Compiler options, chosen per backend in this one place.

One-shot programs (init, epoch permutations): on XLA:CPU the default LLVM optimisation level
spends seconds compiling each threefry/initializer program whose run time is negligible; level 0
compiles it ~4x faster. Integer random bits are identical at any level; float draws may differ in
the last ulp, so every path that must agree (a lone fit and a vmapped CV fold) compiles its init
through `compile_one_shot`.

Hot programs (train and eval steps): on XLA:CPU, letting YNNPACK take only the reductions (and
leaving convolutions and dots to XLA's own kernels) made the chapter's CNN step ~15% faster on
the 2-core machine this was measured on (experiments/BENCH.md). The option is experimental, so a
jaxlib that does not know it compiles with its defaults instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

HOT_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


def one_shot_options() -> dict[str, Any]:
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}


def hot_options() -> dict[str, Any]:
    return dict(HOT_CPU_OPTIONS) if jax.default_backend() == "cpu" else {}


def compile_one_shot(fn: Callable, *example_args: Any) -> Callable:
    """`jax.jit(fn)` compiled ahead of time for these argument shapes, at a low optimisation
    level."""
    return jax.jit(fn).lower(*example_args).compile(compiler_options=one_shot_options())


def compile_hot(jitted: Any, *example_args: Any) -> Any:
    """A `jax.jit`-wrapped step compiled ahead of time for these arguments with `hot_options()`."""
    lowered = jitted.lower(*example_args)
    options = hot_options()
    if options:
        try:
            return lowered.compile(compiler_options=options)
        except jax.errors.JaxRuntimeError as err:  # an older or newer jaxlib without this option
            if not any(name in str(err) for name in options):
                raise
    return lowered.compile()

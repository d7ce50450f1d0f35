"""Compiler options, chosen per backend in this one place.

One-shot programs (init, epoch permutations): on XLA:CPU the default LLVM optimisation level
spends seconds compiling each threefry/initializer program whose run time is negligible; level 0
compiles it ~4x faster. Integer random bits are identical at any level; float draws may differ in
the last ulp, so every path that must agree (a lone fit and a vmapped CV fold) compiles its init
with `tuning="one_shot"`.

Hot programs (train and eval steps): on XLA:CPU, letting YNNPACK take only the reductions (and
leaving convolutions and dots to XLA's own kernels) made the chapter's CNN step ~15% faster on
the 2-core machine this was measured on (experiments/bench/BENCH.md). The option is experimental,
so a jaxlib that does not know it compiles with its defaults instead.

The persistent compilation cache (JAX's own): every program a command compiles is kept on disk, so
the next process that runs the same command loads it instead of compiling it again. It is on for
the CLI by default, in $XDG_CACHE_HOME/fashion_jax (else ~/.cache/fashion_jax); --no-compile-cache
or FASHION_JAX_NO_COMPILE_CACHE=1 turns it off, and an explicit $JAX_COMPILATION_CACHE_DIR wins.
A cache folder that cannot be used never fails a run: one warning, then plain compiles. An entry
that cannot be read (a write cut short by Ctrl-C or a full disk) is compiled again and replaced.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from fashion_jax.files import make_writable_folder, user_cache_dir

log = logging.getLogger("fashion_jax")
NO_CACHE_ENV = "FASHION_JAX_NO_COMPILE_CACHE"
# How JAX names the program whose cache entry it could not read (its warning's only handle on it).
_UNREADABLE_ENTRY = re.compile(r"Error reading persistent compilation cache entry for '([^']+)'")

HOT_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


def one_shot_options() -> dict[str, Any]:
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}


def hot_options() -> dict[str, Any]:
    return dict(HOT_CPU_OPTIONS) if jax.default_backend() == "cpu" else {}


def compile_ahead(jitted: Any, *example_args: Any, tuning: str = "default") -> Any:
    """A `jax.jit`-wrapped function compiled ahead of time for these argument shapes, with the
    compiler options of its `tuning` ("one_shot", "hot" or "default")."""
    options = TUNINGS[tuning]()
    lowered = jitted.lower(*example_args)
    if options:
        try:
            return lowered.compile(compiler_options=options)
        except jax.errors.JaxRuntimeError as err:  # an older or newer jaxlib without this option
            if not any(name in str(err) for name in options):
                raise
    return lowered.compile()


TUNINGS: dict[str, Callable[[], dict[str, Any]]] = {
    "one_shot": one_shot_options,
    "hot": hot_options,
    "default": dict,
}


def enable_persistent_cache(enabled: bool = True) -> str | None:
    """Turn JAX's persistent compilation cache on (the folder in use), unless asked not to."""
    if not enabled or os.environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        return None
    if jax.config.jax_compilation_cache_dir:  # set by the user ($JAX_COMPILATION_CACHE_DIR)
        folder = Path(jax.config.jax_compilation_cache_dir)
    else:
        folder = user_cache_dir()  # the compiled programs are its files
    try:
        make_writable_folder(folder)
    except OSError as err:
        log.warning("compilation cache off: %s is not writable (%s)", folder, err.strerror or err)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program, however quick to compile: a command's many small ones add up to seconds.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return str(folder)


def forget_unreadable_entry(warning: str) -> bool:
    """Delete the cache entries of the program a JAX "Error reading persistent compilation cache
    entry for 'NAME'" warning names; whether the warning was one. JAX compiles such a program
    again but writes only keys that are absent, so a damaged entry would otherwise cost every later
    run a warning and a compile. The warning names the program, not its key, so all of that
    program's entries go; each comes back the next time it is compiled."""
    found = _UNREADABLE_ENTRY.search(warning)
    folder = jax.config.jax_compilation_cache_dir
    if not found or not folder:
        return bool(found)
    for entry in glob.glob(os.path.join(glob.escape(folder), glob.escape(found[1]) + "-*")):
        # gone already (another process mended it), or open elsewhere (Windows): no matter
        with contextlib.suppress(OSError):
            os.remove(entry)
    return True

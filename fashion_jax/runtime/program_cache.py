"""Compiled programs kept on disk under a name, so a warm process neither traces nor lowers them.

JAX's persistent cache (compile.py) skips XLA's compile, but it can only find a program by
tracing and lowering the Python function first: 0.1-0.3 s per program on the 2-core CPU, several
programs per command, on every start. A caller that can name what it compiles (the model config,
the optimizer settings, the shapes) passes that name; the compiled executable is then stored under
a hash of the name, the arguments' shapes, dtypes and placement, the compiler options, the
versions of jax, jaxlib, flax and optax, the devices, and the source of this package, and read
back with `jax.experimental.serialize_executable` (~20-60 ms).

It lives in the compilation cache's folder, is on and off with it, and is used only on one process
with one device (a mesh's programs go through JAX's own cache alone). Entries are Python pickles,
like the compiled machine code beside them in JAX's cache, so the folder must be the user's own;
nothing from elsewhere is ever read. An entry that cannot be read is one warning, then a normal
compile that writes it again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import pickle
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from jax.experimental import serialize_executable

try:  # JAX's hook for additions to its cache keys (see _salt_jax_cache_keys)
    from jax._src import cache_key as _jax_cache_key
except ImportError:  # a JAX that moved it: its keys stay as they are
    _jax_cache_key = None

from fashion_jax.files import atomic_write_with

log = logging.getLogger("fashion_jax")
HIT_EVENT = "/fashion_jax/program_cache/hits"  # jax.monitoring event, counted by tests and bench
LOAD_DURATION = "/fashion_jax/program_cache/load_duration"  # seconds reading a program back
_state: dict[str, Any] = {"folder": None, "warned": False}
_compiles = threading.local()  # JAX cache hits seen by this thread's compiles


def _count_jax_cache_hit(event: str, **_: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _compiles.jax_hits = getattr(_compiles, "jax_hits", 0) + 1


jax.monitoring.register_event_listener(_count_jax_cache_hit)


def use_folder(folder: Path | None) -> None:
    """Keep programs in `folder` (None: off); set by compile.enable_persistent_cache."""
    _state["folder"] = folder
    if folder is not None:
        _salt_jax_cache_keys()


def _salt_jax_cache_keys() -> None:
    """Add this package's source digest to JAX's own cache keys, through the hook JAX keeps for
    additions to them (jax._src.cache_key.custom_hook).

    Why: only an executable XLA has just built can be stored here (see compiled_or_cached), so
    after the package changes, a program JAX still finds in its cache under the old key would
    never be stored under the new one. With the digest in both keys, both miss together once.
    A JAX without the hook keeps its keys, and this cache then fills only on JAX's misses.
    """
    if hasattr(_jax_cache_key, "custom_hook"):
        _jax_cache_key.custom_hook = _source_digest


def compiled_or_cached(
    name: str | None, example_args: tuple, options: dict[str, Any], compile_now: Callable[[], Any]
) -> Any:
    """`compile_now()`, or the program stored under this name, arguments and options."""
    path = _entry(name, example_args, options)
    if path is None:
        return compile_now()
    start = time.perf_counter()
    program = _load(path)
    if program is not None:
        jax.monitoring.record_event(HIT_EVENT)
        jax.monitoring.record_event_duration_secs(LOAD_DURATION, time.perf_counter() - start)
        return program
    hits_before = getattr(_compiles, "jax_hits", 0)
    program = compile_now()
    # Only an executable XLA has just built is stored: one that JAX read back from its own cache
    # fails to run once serialized again ("Function wrapped_iota not found", jaxlib 0.10.2).
    if getattr(_compiles, "jax_hits", 0) == hits_before:
        _store(path, program)
    return program


def _entry(name: str | None, example_args: tuple, options: dict[str, Any]) -> Path | None:
    folder = _state["folder"]
    if name is None or folder is None or jax.process_count() > 1 or len(jax.devices()) > 1:
        return None
    leaves, treedef = jax.tree.flatten(example_args)
    shapes = [
        [list(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x).__name__)),
         str(getattr(x, "sharding", ""))]
        for x in leaves
    ]  # fmt: skip
    key = [name, str(treedef), shapes, sorted(options.items()), _environment()]
    digest = hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()
    return Path(folder) / f"{digest}.program"


def _environment() -> list:
    """What else decides the program: library versions, devices, and this package's code."""
    versions = [
        (module, getattr(sys.modules[module], "__version__", "?"))
        for module in ("jax", "jaxlib", "flax", "optax")
        if module in sys.modules
    ]
    devices = [(d.platform, d.device_kind, d.id) for d in jax.devices()]
    return [versions, devices, _source_digest()]


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _load(path: Path) -> Any:
    try:
        return serialize_executable.deserialize_and_load(*pickle.loads(path.read_bytes()))
    except FileNotFoundError:
        return None
    except Exception:  # damaged, truncated or unreadable: compile it again (and store it anew)
        warn_unreadable_once()
        path.unlink(missing_ok=True)  # so the next process does not stumble on it too
        return None


def _store(path: Path, program: Any) -> None:
    try:
        payload = pickle.dumps(serialize_executable.serialize(program))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, lambda tmp: tmp.write_bytes(payload))
    except Exception as err:  # a cache that cannot take it costs the next start a trace, no more
        log.debug("program not cached (%s: %s)", type(err).__name__, err)


def warn_unreadable_once() -> None:
    """One line for a damaged cache, whichever cache (this one or JAX's) found it first."""
    if not _state["warned"]:
        _state["warned"] = True
        log.warning("compilation cache: an entry could not be read; compiling it again")

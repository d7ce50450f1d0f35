"""program_cache.py: named programs are stored once, read back untraced, and a bad entry costs a
compile, never a run."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fashion_jax.config import RunOptions, preset
from fashion_jax.runtime import program_cache
from fashion_jax.runtime.compile import compile_hot
from fashion_jax.training.loop import fit


@pytest.fixture
def folder(tmp_path):
    program_cache.use_folder(tmp_path / "programs")
    yield tmp_path / "programs"
    program_cache.use_folder(None)


class Traced:
    """A new function object per call (JAX caches traces per object), counting the traces."""

    def __init__(self):
        self.traces = 0

    def jit(self):
        def fn(x, y):
            self.traces += 1  # runs only when JAX traces fn
            return jnp.tanh(x) @ y + 0.125

        return jax.jit(fn)


def entries(folder) -> list:
    return sorted(folder.glob("*.program")) if folder.exists() else []


def test_a_named_program_is_read_back_without_tracing_and_computes_the_same(folder):
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **_: hits.append(1) if event == program_cache.HIT_EVENT else None
    )
    x, y = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), np.ones((4, 2), np.float32)
    f = Traced()
    # a shape no other test compiles, so JAX's own cache cannot hand back a stored copy
    first = compile_hot(f.jit(), x, y, name="test|tanh-matmul|a")
    assert f.traces == 1 and len(entries(folder)) == 1 and not hits
    again = compile_hot(f.jit(), x, y, name="test|tanh-matmul|a")
    assert f.traces == 1 and len(hits) == 1  # not traced again
    np.testing.assert_array_equal(np.asarray(again(x, y)), np.asarray(first(x, y)))


def test_another_name_shape_dtype_or_option_is_another_entry(folder):
    x, y = np.zeros((5, 4), np.float32), np.zeros((4, 2), np.float32)
    entry = program_cache._entry
    paths = {
        entry("test|b", (x, y), {}),
        entry("test|c", (x, y), {}),
        entry("test|b", (np.zeros((6, 4), np.float32), y), {}),
        entry("test|b", (x.astype(np.float16), y), {}),
        entry("test|b", ((x, y),), {}),  # another tree of the same leaves
        entry("test|b", (x, y), {"xla_backend_optimization_level": 0}),
    }
    assert len(paths) == 6 and all(p.parent == folder for p in paths)
    assert entry("test|b", (x.copy(), y.copy()), {}) in paths  # the same again: the same entry
    assert entry(None, (x, y), {}) is None  # unnamed: not kept


def test_unnamed_programs_and_a_cache_turned_off_store_nothing(folder, tmp_path):
    f = Traced()
    x, y = np.zeros((7, 4), np.float32), np.zeros((4, 2), np.float32)
    compile_hot(f.jit(), x, y)
    assert entries(folder) == []
    program_cache.use_folder(None)
    compile_hot(f.jit(), x, y, name="test|off")
    compile_hot(f.jit(), x, y, name="test|off")
    assert entries(folder) == [] and f.traces == 3


def test_a_copy_jax_read_from_its_own_cache_is_not_stored(folder, monkeypatch):
    # Re-serialized, such a copy fails to run ("Function ... not found"): only XLA's own build is
    # kept. Here JAX's cache "answers" the compile: its hit event fires during it.
    f = Traced()
    x, y = np.zeros((9, 4), np.float32), np.zeros((4, 2), np.float32)
    real = jax.stages.Lowered.compile

    def answered_by_jax_cache(self, *args, **kwargs):
        jax.monitoring.record_event("/jax/compilation_cache/cache_hits")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(jax.stages.Lowered, "compile", answered_by_jax_cache)
    compile_hot(f.jit(), x, y, name="test|from-jax-cache")
    assert entries(folder) == []


def test_a_damaged_entry_is_one_warning_then_a_compile_and_never_read_again(folder, caplog):
    f = Traced()
    x, y = np.ones((11, 4), np.float32), np.ones((4, 2), np.float32)
    good = np.asarray(compile_hot(f.jit(), x, y, name="test|damaged")(x, y))
    (entry,) = entries(folder)
    intact = entry.read_bytes()
    program_cache._state["warned"] = False
    with caplog.at_level(logging.WARNING, logger="fashion_jax"):
        for damage in (b"not a pickle", intact[:100]):
            entry.write_bytes(damage)
            mended = compile_hot(f.jit(), x, y, name="test|damaged")
            np.testing.assert_array_equal(np.asarray(mended(x, y)), good)
            # stored anew when XLA compiled it; removed when JAX's own cache answered instead
            assert not entry.exists() or entry.read_bytes() != damage
    said = [r.getMessage() for r in caplog.records if "compilation cache" in r.getMessage()]
    assert said == ["compilation cache: an entry could not be read; compiling it again"]


def test_jax_cache_keys_carry_the_package_source_once_the_cache_is_on(folder):
    # so that after a change of the package JAX's cache misses with this one, and the fresh
    # build it compiles can be stored here (a copy JAX read back cannot)
    from jax._src import cache_key

    assert cache_key.custom_hook() == program_cache._source_digest()
    assert len(program_cache._source_digest()) == 64


def test_a_fit_from_read_back_programs_equals_one_from_fresh_compiles(folder, small_data, tmp_path):
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **_: hits.append(1) if event == program_cache.HIT_EVENT else None
    )
    # a learning rate no other test uses: programs of its own, built here, not by JAX's cache
    config = preset(None, model="mlp", hidden=24, epochs=2, batch_size=64, learning_rate=0.00123)
    results = []
    for run in range(2):
        results.append(fit(config, small_data, tmp_path / f"run{run}", RunOptions(quiet=True)))
        if run == 0:
            stored, hits_first = len(entries(folder)), len(hits)
    assert stored >= 3 and hits_first == 0  # train, eval (val and test splits), epoch order, ...
    # the second fit read its programs back (those this process had not kept in memory already:
    # the epoch order and the finite check are) and built none anew
    assert len(hits) - hits_first >= 3 and len(entries(folder)) == stored
    program_cache.use_folder(None)
    results.append(fit(config, small_data, tmp_path / "run-off", RunOptions(quiet=True)))
    first, again, off = (jax.tree.leaves(r.params) for r in results)
    for a, b, c in zip(first, again, off):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    assert results[0].history == results[1].history == results[2].history


def test_another_package_source_is_another_entry(folder, monkeypatch):
    x = np.zeros((3, 4), np.float32)
    before = program_cache._entry("test|src", (x,), {})
    monkeypatch.setattr(program_cache, "_source_digest", lambda: "another source")
    assert program_cache._entry("test|src", (x,), {}) != before

"""A small fuzz campaign over every kind of file fashion_jax reads (experiments/soak/fuzz_files.py
runs the long one): each case is a real file mutated by hypothesis (tests/fuzz_targets.py), and
each must end in a clean result or one line of bad input, within the time and memory limits.

The examples are derandomized, so the suite tries the same cases every run; FUZZ_EXAMPLES raises
the count per kind (e.g. FUZZ_EXAMPLES=2000 for a longer look without the soak script).
"""

from __future__ import annotations

import json
import logging
import os

import fuzz_targets as ft
import hostile_files as hf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Per kind; the readers that open HDF5 or zips cost more per case.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
KINDS = sorted(ft.STRUCTURED)


@pytest.fixture(scope="module")
def seeds():
    return ft.seeds()


@pytest.fixture(scope="module")
def client():
    # python-multipart logs every malformed header it skips; the answers are what is checked
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    return ft.stub_client()


def test_every_seed_is_read_cleanly(seeds, client, tmp_path):
    """The unmutated files are good ones: each reader takes its seed without complaint."""
    for kind, data in seeds.items():
        out = ft.outcome(kind, data, tmp_path, client)
        assert out["result"] == "ok", (kind, out["detail"])


@pytest.mark.parametrize("kind", KINDS)
def test_a_mutated_file_is_read_or_refused_in_one_line(kind, seeds, client, tmp_path):
    mutators = ft.mutators(kind)
    names = sorted(mutators)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def case(data):
        def draw(lo: int, hi: int) -> int:
            return data.draw(st.integers(lo, hi))

        name = names[draw(0, len(names) - 1)]
        out = ft.outcome(kind, mutators[name](seeds[kind], draw), tmp_path, client)
        assert out["result"] != "FAIL", f"{kind} / {name}: {out['detail']}"

    case()


def _inf_input_keras(seed: bytes, folder) -> bytes:
    config = json.loads(json.dumps(hf.DENSE_CONFIG))
    config["config"]["layers"][0]["config"]["batch_shape"] = [None, float("inf")]
    return hf.keras_zip(folder / "inf.keras", config=json.dumps(config)).read_bytes()


# What the campaign found, replayed every run: (kind, the mutated file from the seed, the line)
FOUND = {
    # one string's length in a .h5 attribute set to 2**64-1: libhdf5 allocated 4 GB for it
    "h5 string length": ("h5", lambda s, d: s[:887] + b"\xff" * 8 + s[895:], "damaged"),
    # batch_shape [None, Infinity] (JSON's 1e999): int(inf) raised OverflowError
    "keras inf input shape": ("keras", _inf_input_keras, "is not a list of sizes"),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_what_the_campaign_found_stays_fixed(name, seeds, client, tmp_path):
    kind, make, says = FOUND[name]
    out = ft.outcome(kind, make(seeds[kind], tmp_path), tmp_path, client)
    assert out["result"] == "refused" and says in out["detail"], out
    assert out["extra"] < ft.MEMORY_LIMIT


@pytest.mark.parametrize("kind", ["gif", "npy"])
def test_every_truncation_of_a_gif_or_npy_is_read_or_refused(kind, seeds, tmp_path):
    """A GIF cut after its first frame (PIL's IndexError) and a .npy header cut inside its shape
    (the tokenizer's TokenError) were tracebacks; every cut of these seeds is now a clean result or
    one line."""
    data = seeds[kind]
    for n in range(1, min(len(data), 400)):
        out = ft.outcome(kind, data[:n], tmp_path)
        assert out["result"] != "FAIL", (n, out["detail"])

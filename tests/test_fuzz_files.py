"""A small fuzz campaign over every kind of file fashion_jax reads (experiments/soak/fuzz_files.py
runs the long one): each case is a real file mutated by hypothesis (tests/fuzz_targets.py), and
each must end in a clean result or one line of bad input, within the time and memory limits.

The examples are derandomized, so the suite tries the same cases every run; FUZZ_EXAMPLES raises
the count per kind (e.g. FUZZ_EXAMPLES=2000 for a longer look without the soak script).
"""

from __future__ import annotations

import logging
import os

import fuzz_targets as ft
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

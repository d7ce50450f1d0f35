"""What a file may declare before fashion_jax believes it, shared by every reader.

A reader compares what a file declares (a zip member's size, an array's shape, a nesting depth)
with these limits before it allocates or inflates anything, so a crafted file of a few KB costs a
few KB. Each limit is far above what a real file of its kind needs, and a refusal names the limit
(`LimitError`), so a user who truly needs more knows which number to raise.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from fashion_jax.errors import FashionJaxError

# JSON we read (config.json, a Keras model config) nests about 8 levels; Python's parser recurses
# once per level and fails with RecursionError near 1000.
MAX_JSON_DEPTH = 64
# A config.json of a workdir is under 2 KB; a Keras model config of the chapter's CNN about 6 KB,
# of a 100-layer Sequential about 200 KB.
MAX_CONFIG_JSON_BYTES = 1 << 20
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


class LimitError(FashionJaxError, ValueError):
    """A file declares more than a named limit allows; the message names the limit."""


def over(what: str, value: int, limit: int, name: str, unit: str = "") -> LimitError:
    """'<what> is <value>, over the limit of <limit> (<NAME>)'."""
    return LimitError(f"{what} is {value:,}{unit}, over the limit of {limit:,}{unit} ({name})")


def check_size(what: str, size: int, limit: int, name: str) -> None:
    if size > limit:
        raise over(what, size, limit, name, " bytes")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, found without parsing it (and
    so without recursion), in a few vectorised passes over its bytes."""
    codes = np.frombuffer(raw, np.uint8)
    if not codes.size:
        return 0
    index = np.arange(codes.size, dtype=np.int32)
    # a quote ends or starts a string unless an odd run of backslashes precedes it
    last_plain = np.maximum.accumulate(np.where(codes != _BACKSLASH, index, -1))
    escaped = np.zeros(codes.size, bool)
    escaped[1:] = (index[:-1] - last_plain[:-1]) % 2 == 1
    quotes = np.cumsum((codes == _QUOTE) & ~escaped, dtype=np.int32)
    outside = quotes % 2 == 0
    # "[" and "{" are 0x5b and 0x7b, "]" and "}" 0x5d and 0x7d: one mask each, bit 5 aside
    folded = codes & 0xDF
    steps = ((folded == 0x5B) & outside).astype(np.int8) - ((folded == 0x5D) & outside)
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def parse_json(raw: bytes | str, what: str, max_bytes: int = MAX_CONFIG_JSON_BYTES) -> Any:
    """`raw` parsed, once its size and nesting are within the limits; LimitError when they are
    not, ValueError (json's) when it is not JSON."""
    data = raw.encode("utf8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    check_size(what, len(data), max_bytes, "MAX_CONFIG_JSON_BYTES")
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise over(f"{what}: nesting depth", depth, MAX_JSON_DEPTH, "MAX_JSON_DEPTH")
    return json.loads(data)

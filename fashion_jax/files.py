"""The one way fashion_jax writes a file: atomically, so a crash never leaves half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temporary sibling, flush it to disk, then rename it over `path`.

    Readers see the old file or the new one, never a mix, even if the process is killed mid-write.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def atomic_write_json(path: str | os.PathLike, payload: Any, **dumps: Any) -> Path:
    """`payload` as indented JSON (extra json.dumps arguments pass through), written atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2, **dumps) + "\n")

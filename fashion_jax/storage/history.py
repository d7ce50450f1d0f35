"""Per-epoch history: `history.jsonl`, one JSON row per finished epoch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from fashion_jax.files import atomic_write_text


def write_history(path: Path, history: Sequence[dict]) -> None:
    """Rewrite the whole file atomically, so it always matches the checkpoint it came with."""
    atomic_write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in history))


def read_history(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

"""Per-epoch history: `history.jsonl` and the learning-curve PNG (the chapter plots loss per epoch)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence


def write_history(path: Path, history: Sequence[dict]) -> None:
    """Rewrite the whole file atomically, so it always matches the checkpoint it came with."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for row in history:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_history(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_history(history: Sequence[dict], path: Path, title: str = "") -> Path:
    """Train/val loss and accuracy per epoch, side by side."""
    from matplotlib.figure import Figure  # no pyplot: works without a display, no global state

    fig = Figure(figsize=(10, 4), dpi=100)
    epochs = [row["epoch"] for row in history]
    for ax, key, label in zip(fig.subplots(1, 2), ("loss", "accuracy"), ("loss", "accuracy")):
        ax.plot(epochs, [row[key] for row in history], "o-", label="train")
        if history and f"val_{key}" in history[0]:
            ax.plot(epochs, [row[f"val_{key}"] for row in history], "o-", label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)

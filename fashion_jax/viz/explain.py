"""Attribution maps drawn over the 28x28 input: one per file and method (`explain --save`), and the
gallery of the model's most confident mistakes (`plot`'s mistakes.png).

The map is scaled to its own maximum and drawn in a warm colour whose opacity is its value, so the
garment stays visible where the map is low.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fashion_jax.viz.figures import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

OVERLAY_RGB = (1.0, 0.35, 0.0)  # the page draws the same colour (serve/web/app.js)


def overlay_rgba(m: np.ndarray) -> np.ndarray:
    """(28, 28, 4) float RGBA: the overlay colour, opacity = the map over its maximum."""
    m = np.asarray(m, np.float64)
    top = m.max()
    alpha = m / top if top > 0 else np.zeros_like(m)
    rgba = np.empty((*m.shape, 4))
    rgba[..., :3] = OVERLAY_RGB
    rgba[..., 3] = np.clip(alpha, 0, 1)
    return rgba


def draw_map(ax: Axes, image: np.ndarray, m: np.ndarray, title: str) -> None:
    """The input in grey (as the model sees it: garment light on black), the map over it."""
    ax.imshow(
        image, cmap="gray", vmin=0, vmax=400, interpolation="nearest"
    )  # dimmed: the map reads
    ax.imshow(overlay_rgba(m), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_explanation(image: np.ndarray, m: np.ndarray, title: str, path: str | os.PathLike) -> Path:
    """One map over its input, titled (class, probability, method): `explain --save`'s PNG."""
    fig = new_figure(figsize=(3, 3.3))
    draw_map(fig.subplots(), image, m, title)
    return save_figure(fig, path)


def save_explanations(folder: str | os.PathLike, stems: dict[str, str]) -> Any:
    """An `explain_files` on_image callback writing FOLDER/STEM-METHOD.png for each map, STEM the
    row's file's entry in `stems`; it adds {"saved": {method: path}} to the row."""

    def on_image(row: dict, image: np.ndarray, maps: dict[str, np.ndarray]) -> dict:
        saved = {}
        for method, m in maps.items():
            title = f"{row['class']} {row['probability']:.3f} · {method}"
            path = Path(folder) / f"{stems[row['file']]}-{method}.png"
            saved[method] = str(plot_explanation(image, m, title, path))
        return {"saved": saved}

    return on_image


def plot_mistakes(
    images: np.ndarray, groups: list[dict], path: str | os.PathLike, title: str = ""
) -> Path:
    """One row per confused pair (inference/mistakes.py): each wrong image with its map for the
    class the model said, titled with its confidence."""
    cols = max((len(g["indices"]) for g in groups), default=1)
    fig = new_figure(figsize=(2.1 * cols, 2.4 * max(len(groups), 1) + 0.4))
    axes = np.asarray(fig.subplots(max(len(groups), 1), cols, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    for row, group in zip(axes, groups):
        for ax, i, p, m in zip(row, group["indices"], group["confidence"], group["maps"]):
            draw_map(ax, images[i], m, f"#{i}: {group['true']}\nsaid {group['predicted']} {p:.2f}")
    heading = "most confident mistakes of the most confused pairs (map: integrated gradients)"
    fig.suptitle(f"{title}: {heading}" if title else heading, fontsize=9)
    return save_figure(fig, path)

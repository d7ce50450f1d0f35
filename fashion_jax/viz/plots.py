"""Every figure fashion_jax draws: samples, learning curves, conv filters, feature maps, confusion.

The chapter ends by plotting the first conv layer's weights and the feature maps one test image
produces. Every figure is a bare `matplotlib.figure.Figure` saved by `save_figure`: no pyplot, so
there is no global figure state to leak between calls and no display is needed. The arrays the
model figures show are computed by inspection.py.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import numpy as np

from fashion_jax.config import ConfigError
from fashion_jax.data.dataset import CLASS_NAMES, FashionMNIST
from fashion_jax.inference.inspection import check_labels, confusion_counts, feature_maps
from fashion_jax.model.models import is_convolutional
from fashion_jax.storage.model_files import load_model
from fashion_jax.storage.run_files import read_history
from fashion_jax.viz.explain import plot_mistakes
from fashion_jax.viz.figures import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage


def plot_history(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Train/val loss and accuracy per epoch, side by side (the chapter plots loss per epoch).

    Fixed margins and one draw: tight_layout and a tight bounding box each lay the figure out once
    more, which was most of the ~0.5 s this figure took at the end of every fit.
    """
    fig = new_figure(figsize=(10, 4), dpi=100)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.9 if title else 0.95, wspace=0.25)
    epochs = [row["epoch"] for row in history]
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        ax.plot(epochs, [row[key] for row in history], "o-", label="train")
        if history and f"val_{key}" in history[0]:
            ax.plot(epochs, [row[f"val_{key}"] for row in history], "o-", label="val")
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, tight=False)


def plot_samples(
    images: np.ndarray, labels: np.ndarray, path: str | os.PathLike, n: int = 10
) -> Path:
    """The chapter's sample strip: n images in one row, gray_r, class name as title."""
    n = min(n, len(images))
    if n < 1:
        raise ValueError("need at least one image")
    fig = new_figure(figsize=(1.6 * n, 2.0))
    for ax, image, label in zip(
        fig.subplots(1, n, squeeze=False)[0], images[:n], labels[:n], strict=True
    ):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(CLASS_NAMES[int(label)], fontsize=9)
        ax.axis("off")
    return save_figure(fig, path)


def _mosaic(tiles: np.ndarray, max_cols: int) -> np.ndarray:
    """(h, w, n) tiles as one (rows*(h+1)-1, cols*(w+1)-1) image, one pixel of NaN between
    tiles (drawn blank): one image for the whole grid, where an axes per tile made laying out
    and drawing most of the figure's time."""
    h, w, n = tiles.shape
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tiles[:, :, i]
    return out


def _tile_figure(
    mosaic: np.ndarray, inches_per_px: float, title: str, **imshow: Any
) -> tuple[Figure, Axes, AxesImage]:
    """A figure holding `mosaic` in one axes, fixed margins; NaN is drawn transparent, so the
    gaps show the white figure."""
    h, w = mosaic.shape
    top = 0.45 if title else 0.1
    fig = new_figure(figsize=(w * inches_per_px + 0.2, h * inches_per_px + top + 0.1))
    ax = fig.add_axes((0.1 / fig.get_figwidth(), 0.1 / fig.get_figheight(),
                       w * inches_per_px / fig.get_figwidth(),
                       h * inches_per_px / fig.get_figheight()))  # fmt: skip
    image = ax.imshow(mosaic, interpolation="nearest", **imshow)
    ax.axis("off")
    if title:
        fig.suptitle(title, y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig, ax, image


def plot_filters(
    kernel: np.ndarray,
    path: str | os.PathLike,
    *,
    vmax: float | None = None,
    title: str = "conv0 filters (input channel 0)",
) -> Path:
    """A conv kernel (kh, kw, in, out) as out small kh x kw images, input channel 0, one colour
    scale.

    The scale is symmetric around 0 (the book uses vmin=-0.5, vmax=0.5) so that the sign of a weight
    reads the same in every tile; vmax=None takes the largest |weight|, which never saturates.
    """
    kernel = np.asarray(kernel, np.float32)
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be (kh, kw, in, out), got shape {kernel.shape}")
    weights = kernel[:, :, 0, :]  # a grey-scale input has one channel; for more, show the first
    limit = float(vmax) if vmax is not None else float(np.abs(weights).max()) or 1.0
    mosaic = _mosaic(weights, 16)  # 32 filters -> 2 x 16, as in the book
    # about 0.8 inch a tile, as the book's figure; a diverging map: 0 white, + red, - blue
    fig, ax, image = _tile_figure(
        mosaic, 0.8 / weights.shape[1], title, vmin=-limit, vmax=limit, cmap="RdBu_r"
    )
    fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    return save_figure(fig, path)


def plot_feature_maps(maps: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    """All C channels of (H, W, C) maps in a grid of 8 columns; each channel has its own scale,
    as in the book, so weak but structured channels stay visible."""
    maps = np.asarray(maps, np.float64)
    if maps.ndim != 3:
        raise ValueError(f"feature maps must be (H, W, C), got shape {maps.shape}")
    low, high = maps.min(axis=(0, 1)), maps.max(axis=(0, 1))
    scaled = (maps - low) / np.where(high > low, high - low, 1.0)  # a flat channel reads as 0
    fig, _, _ = _tile_figure(_mosaic(scaled, 8), 1.1 / maps.shape[1], title, vmin=0, vmax=1)
    return save_figure(fig, path, tight=False)


def plot_confusion(
    cm: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """The confusion matrix with every count written in its cell and class names on both axes."""
    cm = np.asarray(cm)
    k = len(class_names)
    fig = new_figure(figsize=(8, 7))
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    for (row, col), count in np.ndenumerate(cm):
        # white on dark cells, black on light ones, so every number stays legible
        ax.text(
            col,
            row,
            str(int(count)),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if count > cm.max() / 2 else "black",
        )
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true")
    total = int(cm.sum())
    accuracy = f"accuracy {np.trace(cm) / total:.4f} on {total}" if total else "no images"
    ax.set_title(f"{title}  ({accuracy})" if title else accuracy)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_all(
    workdir: str | os.PathLike,
    data: FashionMNIST,
    *,
    image_index: int = 0,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, str]:
    """Every figure for the model in `workdir`, into out_dir (default workdir/plots): name -> path.

    Figures a model cannot have (filters and feature maps of a model without conv layers) are
    reported as "skipped: ..." notes in place of a path.
    """
    workdir = Path(workdir)
    n_test = len(data.test_x)
    if not 0 <= image_index < n_test:  # checked first: no model restore for a bad argument
        raise ConfigError(
            f"image_index {image_index} out of range: "
            f"the test set has {n_test} images (0..{n_test - 1})"
        )
    out = Path(out_dir) if out_dir is not None else workdir / "plots"
    config, model, params = load_model(workdir)
    name = config.model.name
    written: dict[str, str] = {}

    if is_convolutional(model):
        image, label = data.test_x[image_index], CLASS_NAMES[int(data.test_y[image_index])]
        written.update(
            _conv_figures(model, params, image, f"test #{image_index}: {label}", name, out)
        )
    else:
        note = f"skipped: model {name} has no conv layers"
        written["filters"] = written["feature_maps"] = note

    written.update(_test_set_figures(model, params, data, name, out))

    history = read_history(workdir / "history.jsonl")
    if history:
        written["curves"] = str(plot_history(history, out / "curves.png", title=name))
    else:
        written["curves"] = f"skipped: no history in {workdir / 'history.jsonl'}"
    return written


def _conv_figures(
    model: nn.Module, params: Any, image: np.ndarray, caption: str, name: str, out: Path
) -> dict[str, str]:
    """The first conv layer's filters, the input image, and every conv layer's feature maps."""
    kernel = params["conv0"]["kernel"]
    title = f"{name}: conv0 filters (input channel 0)"
    written = {"filters": str(plot_filters(kernel, out / "filters_conv0.png", title=title))}
    written["feature_input"] = str(_plot_image(image, caption, out / "feature_input.png"))
    for layer, maps in feature_maps(model, params, image).items():
        path, title = out / f"feature_maps_{layer}.png", f"{name} {layer}: {caption}"
        written[f"feature_maps_{layer}"] = str(plot_feature_maps(maps, path, title=title))
    return written


def _plot_image(image: np.ndarray, title: str, path: Path) -> Path:
    fig = new_figure(figsize=(3, 3.3))
    ax = fig.subplots()
    ax.imshow(image, cmap="gray_r")  # the chapter's colour map for Fashion-MNIST samples
    ax.set_title(title)
    ax.axis("off")
    return save_figure(fig, path)


def _test_set_figures(
    model: nn.Module, params: Any, data: FashionMNIST, name: str, out: Path
) -> dict[str, str]:
    """The confusion matrix and the gallery of mistakes, from one pass over the test set."""
    from fashion_jax.inference.explain import Explainer
    from fashion_jax.inference.mistakes import mistakes

    check_labels(len(data.test_x), data.test_y)
    explainer = Explainer(model, params)
    probs = explainer.probabilities(data.test_x)
    cm = confusion_counts(probs.argmax(-1), data.test_y)
    title = f"{name}, test set"
    groups = mistakes(explainer, data.test_x, data.test_y, probs=probs)
    return {
        "confusion": str(plot_confusion(cm, CLASS_NAMES, out / "confusion.png", title=title)),
        "mistakes": str(plot_mistakes(data.test_x, groups, out / "mistakes.png", title=title)),
    }

"""The background behind a garment in a photo, for preprocess.py's trim and negation.

The paper (Xiao, Rasul & Vollgraf 2017) takes the corner pixels' colour for the background. Real
photos are not that clean: light falls off across the frame, lenses darken the corners, walls are
coloured and textured and a table's edge crosses the bottom. So the background is modelled across
the picture from its whole border (a smooth fit along each edge, blended inwards), and the garment
is what differs from that model by more than the border's own scatter allows.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as PIL's convert("L")
# The paper's trimming tolerance: 5% of the largest possible distance in RGB space.
TRIM_TOLERANCE = 0.05 * 255 * np.sqrt(3)
# The background is modelled from the picture's border (a band this share of the shorter side
# deep), estimated on a copy reduced to at most this many pixels a side: enough for a garment's
# box at 28 pixels, and the reduction averages away fine grain and JPEG noise.
BORDER_SHARE = 0.02
ESTIMATE_SIDE = 256
# What differs from the background model by more than this many robust standard deviations of
# the border's own residuals (1.4826 x their median absolute deviation) is garment, and never
# less than the paper's tolerance: a textured wall widens the tolerance, a clean one keeps the
# paper's.
RESIDUAL_SIGMAS = 7.0
MAD_TO_SIGMA = 1.4826
# Two opposite edges share a step (a table's edge) if their steps differ by less than this share
# of it: light falling from one side makes the same step smaller on the far edge.
SHARED_STEP = 0.5
# A row or column of the reduced copy holds the garment only if at least this share of its
# pixels do: isolated specks of wall texture do not stretch the box.
MIN_CONTENT_SHARE = 0.02


def background(rgb: np.ndarray) -> np.ndarray:
    """The corner pixels' colour: the per-channel median of a 3x3 patch in each corner (robust to
    noise and JPEG artefacts)."""
    k = min(3, rgb.shape[0], rgb.shape[1])
    corners = [rgb[:k, :k], rgb[:k, -k:], rgb[-k:, :k], rgb[-k:, -k:]]
    return np.median(np.concatenate([c.reshape(-1, 3) for c in corners]), axis=0)


def garment_is_lighter(img: np.ndarray) -> bool:
    """Whether what stands out from the border's typical grey is mostly lighter than it."""
    grey = img @ GREY_WEIGHTS
    diff = grey - np.median(border_ring(grey))
    garment = np.abs(diff) > TRIM_TOLERANCE
    return not garment.any() or float(np.median(diff[garment])) >= 0


def border_ring(a: np.ndarray) -> np.ndarray:
    """The values in a band BORDER_SHARE of the shorter side deep along the four edges."""
    k = max(1, round(BORDER_SHARE * min(a.shape[:2])))
    return np.concatenate([a[:k].ravel(), a[-k:].ravel(), a[:, :k].ravel(), a[:, -k:].ravel()])


def reduced(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """A copy at most ESTIMATE_SIDE a side (a box average of whole blocks) and the factor."""
    factor = max(1, -(-max(rgb.shape[:2]) // ESTIMATE_SIDE))
    img = Image.fromarray(rgb)
    small = img.reduce(factor) if factor > 1 else img
    return np.asarray(small.filter(ImageFilter.MedianFilter(3)), np.float32), factor


def robust_fit(profile: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """A per-channel quadratic along an (n, 3) border profile, refitted without the samples far
    from it (a garment touching that edge); the fit and which samples were far from it."""
    t = np.linspace(-1.0, 1.0, len(profile))
    design = np.stack([np.ones_like(t), t, t * t], 1)
    fit = np.broadcast_to(np.median(profile, 0), profile.shape)
    for _ in range(4):
        dev = np.linalg.norm(profile - fit, axis=1)
        spread = MAD_TO_SIGMA * np.median(np.abs(dev - np.median(dev)))
        keep = dev <= max(floor, np.median(dev) + 3 * spread)
        if keep.sum() < 3:
            break
        coef, *_ = np.linalg.lstsq(design[keep], profile[keep], rcond=None)
        fit = design @ coef
    return fit, np.linalg.norm(profile - fit, axis=1) > floor


def border_profiles(img: np.ndarray) -> list[np.ndarray]:
    """Top, bottom, left and right: a smooth fit to the median colour across a thin band along
    each edge (neither a garment touching that edge nor a wall's mottling is background to carry
    inwards), plus any step two opposite edges share at the same place: a table's edge across the
    picture is background."""
    k = max(1, round(BORDER_SHARE * min(img.shape[:2])))
    raw = [
        np.median(img[:k], 0),
        np.median(img[-k:], 0),
        np.median(img[:, :k], 1),
        np.median(img[:, -k:], 1),
    ]
    floor = TRIM_TOLERANCE / 2
    fits = [robust_fit(p, floor) for p in raw]
    clean = []
    for i, (profile, (fit, far)) in enumerate(zip(raw, fits)):
        other, (other_fit, other_far) = raw[i ^ 1], fits[i ^ 1]
        dev, other_dev = profile - fit, other - other_fit
        # the same step, give or take how differently the light falls on the two edges
        gap = np.linalg.norm(dev - other_dev, axis=1)
        shared = gap <= np.maximum(floor, SHARED_STEP * np.linalg.norm(dev, axis=1))
        clean.append(fit + np.where((far & other_far & shared)[:, None], dev, 0.0))
    return clean


def background_field(img: np.ndarray) -> np.ndarray:
    """(H, W, 3): the background under the whole picture, blended from the four border profiles
    (a Coons patch: exact for any sum of a function of x and one of y, so for gradients of light
    in any direction, vignetting and a table's edge)."""
    top, bottom, left, right = border_profiles(img)
    v = np.linspace(0.0, 1.0, img.shape[0], dtype=np.float32)[:, None, None]
    u = np.linspace(0.0, 1.0, img.shape[1], dtype=np.float32)[None, :, None]
    c00, c01 = (top[0] + left[0]) / 2, (top[-1] + right[0]) / 2
    c10, c11 = (bottom[0] + left[-1]) / 2, (bottom[-1] + right[-1]) / 2
    corners = (1 - v) * ((1 - u) * c00 + u * c01) + v * ((1 - u) * c10 + u * c11)
    edges = (1 - v) * top[None] + v * bottom[None] + (1 - u) * left[:, None] + u * right[:, None]
    return edges - corners


def garment_mask(img: np.ndarray, field: np.ndarray) -> np.ndarray:
    """What differs from the background model by more than the border's own residuals allow."""
    dist = np.linalg.norm(img - field, axis=-1)
    ring = border_ring(dist)
    spread = MAD_TO_SIGMA * np.median(np.abs(ring - np.median(ring)))
    return dist > max(TRIM_TOLERANCE, np.median(ring) + RESIDUAL_SIGMAS * spread)


def trim_box(content: np.ndarray, factor: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) in a picture of `shape` of the garment pixels marked in
    `content`, its copy reduced by `factor`; rows and columns with only a speck do not count."""
    rows = np.flatnonzero(content.sum(1) >= max(1.0, MIN_CONTENT_SHARE * content.shape[1]))
    cols = np.flatnonzero(content.sum(0) >= max(1.0, MIN_CONTENT_SHARE * content.shape[0]))
    if rows.size == 0 or cols.size == 0:  # nothing but background: keep the whole picture
        return 0, shape[0], 0, shape[1]
    bottom, right = min(shape[0], (rows[-1] + 1) * factor), min(shape[1], (cols[-1] + 1) * factor)
    return int(rows[0]) * factor, int(bottom), int(cols[0]) * factor, int(right)

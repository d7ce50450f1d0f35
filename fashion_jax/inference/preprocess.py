"""An image file, or its bytes, to the (28, 28) uint8 picture the model sees.

Fashion-MNIST was made from shop photos (dark garment, white background) by a documented
conversion (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747, sec. 2): trim the edges close to the
corner pixels' colour, resize the longest edge to 28, sharpen (Gaussian, radius and sigma 1),
extend the shortest edge to 28 and centre, negate, convert to 8-bit grey. A model trained on the
dataset only understands pictures made that way, so `to_fashion_mnist` repeats it, with one
change: the background is not the corners' one colour but modelled across the picture from its
whole border (`backdrop.py`), so light falling off, vignetting and coloured, textured walls are
neither trimmed as garment nor left in its ink. Before that,
`decode` deals with what real files bring: EXIF orientation, transparency, palettes, 16-bit and
CMYK pixels, animations, and files that are not images at all (one `ImageError` line each).
"""

from __future__ import annotations

import dataclasses
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from fashion_jax.config import PREPROCESS_MODES, ConfigError
from fashion_jax.data.idx import DataError
from fashion_jax.inference.backdrop import (
    GREY_WEIGHTS,
    background,
    background_field,
    garment_is_lighter,
    garment_mask,
    reduced,
    trim_box,
)
from fashion_jax.inference.npy import load_npy

SIDE = 28
# Larger images are refused as decompression bombs: 50 MP holds any phone or camera photo, and
# PIL's own limit (89 MP, a warning only) would let a 20000x20000 PNG allocate 1.2 GB.
MAX_PIXELS = 50_000_000
MAX_BYTES = 256 << 20
# The conversion needs no more detail than this; a big photo is reduced first, which keeps the
# memory of a 50 MP photo small and changes nothing at 28 pixels.
WORKING_SIDE = 1024
# A picture whose corners are darker than this already looks like Fashion-MNIST (a light garment
# on a black background): `auto` does not negate it a second time.
DARK_BACKGROUND = 128
# The sharpening's strength (the paper gives only its radius and sigma), as PIL's UnsharpMask
# percent: ImageMagick's -unsharp default gain, 1.0. A stronger one rings at the outlines.
SHARPEN_PERCENT = 100
# What becomes 255: this percentile of the garment's pixels, the rest clipped. In the dataset the
# median image's 99th percentile of garment pixels is 247 (its maximum alone is a poor guide: one
# sharpened edge, a fold's highlight or a speck of fabric texture would dim the whole garment).
INK_PERCENTILE = 99
# The garment's pixels, for that percentile: those with at least this share of the darkest's ink
# (not the faint haze of a shadow or a background gradient left inside the trimmed box).
GARMENT_INK = 0.1
NPY_MAGIC = b"\x93NUMPY"
# What PIL raises on a damaged file; IndexError: a GIF cut after its first frame, asked whether it
# is animated, reads past its end (found by tests/test_fuzz_files.py).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class ImageError(DataError):
    """A file that cannot become a picture for the model. str() is one line: '<file>: <problem>'."""


@dataclasses.dataclass(frozen=True)
class Prepared:
    image: np.ndarray  # (28, 28) uint8: what the model sees
    preprocessing: str  # what was applied: "fashion-mnist" or "none"
    notes: tuple[str, ...] = ()  # what else happened on the way, e.g. "exif-rotated"


def prepare_file(path: str | Path, mode: str = "auto") -> Prepared:
    """`prepare_bytes` of a file's contents; a missing, unreadable or odd path is an ImageError."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(path, "is a directory, not an image file")
    if not path.exists():
        raise ImageError(path, "no such file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise ImageError(path, f"cannot read ({err.strerror or err.__class__.__name__})") from None
    return prepare_bytes(data, str(path), mode)


def prepare_bytes(data: bytes, name: str, mode: str = "auto") -> Prepared:
    """The picture in `data` (any PIL format, or a .npy array), converted as `mode` says."""
    if mode not in PREPROCESS_MODES:
        raise ConfigError(f"preprocessing must be one of {', '.join(PREPROCESS_MODES)}, got {mode}")
    if not data:
        raise ImageError(name, "empty file")
    if len(data) > MAX_BYTES:
        raise ImageError(name, f"larger than {MAX_BYTES >> 20} MiB (MAX_BYTES)")
    try:
        if data.startswith(NPY_MAGIC) or name.lower().endswith(".npy"):
            pixels, notes = load_npy(data, name, ImageError, MAX_PIXELS), ()
        else:
            pixels, notes = decode(data, name)
        return convert(pixels, mode, notes)
    except (MemoryError, RecursionError) as err:
        # what the checks above did not foresee: still this file's fault, and one line
        raise ImageError(name, f"too large or deep to convert ({err.__class__.__name__})") from None


def convert(pixels: np.ndarray, mode: str = "auto", notes: tuple[str, ...] = ()) -> Prepared:
    """(H, W) grey or (H, W, 3) RGB uint8 pixels to what the model sees."""
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)
    if mode == "fashion-mnist" or (mode == "auto" and not looks_like_fashion_mnist(rgb)):
        return Prepared(to_fashion_mnist(rgb), "fashion-mnist", notes)
    grey = to_grey(rgb)
    if grey.shape != (SIDE, SIDE):
        notes = (*notes, f"resized-{grey.shape[1]}x{grey.shape[0]}")
        grey = np.asarray(Image.fromarray(grey).resize((SIDE, SIDE), Image.BILINEAR))
    return Prepared(grey, "none", notes)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb.astype(np.float32) @ GREY_WEIGHTS), 0, 255).astype(np.uint8)


def looks_like_fashion_mnist(rgb: np.ndarray) -> bool:
    """Dark corners and a garment lighter than its background: a light garment on black, as in the
    dataset, not a photo on white, nor a dark garment on a wall in a dim or vignetted photo."""
    if float(background(rgb).astype(np.float32) @ GREY_WEIGHTS) >= DARK_BACKGROUND:
        return False
    return garment_is_lighter(reduced(rgb)[0])


def to_fashion_mnist(rgb: np.ndarray) -> np.ndarray:
    """The paper's six steps on a photo of a garment on a light background; (28, 28) uint8. The
    background is not taken as one colour but modelled across the picture from its border, so
    light falling off, vignetting and a coloured or textured wall are not taken for the garment."""
    img, factor = reduced(rgb)
    field = background_field(img)
    bg_grey = float(np.median(field.reshape(-1, 3) @ GREY_WEIGHTS))
    corners = background(img)
    # a picture on a dark background (only `fashion-mnist` mode converts one) is plainly negated
    dark = float(corners @ GREY_WEIGHTS) < DARK_BACKGROUND and garment_is_lighter(img)
    if dark:
        field = np.broadcast_to(corners, field.shape)
        bg_grey = float(corners @ GREY_WEIGHTS)
    top, bottom, left, right = trim_box(garment_mask(img, field), factor, rgb.shape)  # 1. trim
    # the photo flattened: each pixel relative to the background under it, on a uniform one
    under = Image.fromarray((field @ GREY_WEIGHTS - bg_grey).astype(np.float32))
    flat = to_grey(rgb).astype(np.float32) - np.asarray(under.resize(rgb.shape[1::-1]))
    grey = Image.fromarray(np.clip(np.rint(flat), 0, 255).astype(np.uint8)[top:bottom, left:right])
    scale = SIDE / max(grey.size)  # 2. the longest edge to 28
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    small = grey.resize(size, Image.LANCZOS)
    # 3. sharpen
    small = small.filter(ImageFilter.UnsharpMask(radius=1, percent=SHARPEN_PERCENT, threshold=3))
    canvas = np.full((SIDE, SIDE), bg_grey, np.float32)  # 4. extend with background and centre
    # an odd margin's extra pixel goes left and on top: where the dataset puts it (99.7% of its
    # training images of odd width, 94% of odd height)
    y, x = (SIDE - size[1] + 1) // 2, (SIDE - size[0] + 1) // 2
    canvas[y : y + size[1], x : x + size[0]] = np.asarray(small, np.float32)
    ink = np.clip((255.0 if dark else bg_grey) - canvas, 0, None)  # 5. negate, background to 0
    return to_8_bits(ink)  # 6.


def to_8_bits(ink: np.ndarray) -> np.ndarray:
    """The garment's ink stretched to the dataset's range, whatever the garment's colour and the
    photo's exposure: its INK_PERCENTILE-th percentile becomes 255 (99% of the dataset's images
    reach 254 or 255)."""
    garment = ink[ink >= GARMENT_INK * ink.max()]
    peak = float(np.percentile(garment, INK_PERCENTILE)) if garment.size else 0.0
    scaled = np.clip(ink * (255.0 / peak), 0, 255) if peak > 0 else ink
    return np.rint(scaled).astype(np.uint8)


def decode(data: bytes, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """(H, W, 3) uint8 RGB pixels of an image file's first frame, upright, alpha on white."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice that; here a bomb is always an error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return _upright_rgb(img, name)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            name, f"over the limit of {MAX_PIXELS} pixels (MAX_PIXELS; a decompression bomb?)"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(name, "not an image (no format recognised)") from None
    except DECODE_ERRORS as err:
        raise ImageError(name, f"cannot decode the image ({err})") from None


def _upright_rgb(img: Image.Image, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    if img.width * img.height > MAX_PIXELS:
        raise ImageError(
            name, f"{img.width}x{img.height} is over the limit of {MAX_PIXELS} pixels (MAX_PIXELS)"
        )
    notes = []
    if getattr(img, "is_animated", False):
        notes.append("first-frame-of-animation")
        img.seek(0)
    if img.format == "JPEG":  # decode big JPEGs at a reduced scale: much less memory and time
        img.draft(img.mode, (WORKING_SIDE, WORKING_SIDE))
    img.load()
    if img.getexif().get(0x0112, 1) in range(2, 9):
        notes.append("exif-rotated")
    img = ImageOps.exif_transpose(img)
    if max(img.size) > WORKING_SIDE:
        img = img.copy()
        img.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.LANCZOS)
    rgb, more = _to_rgb(img)
    return rgb, (*notes, *more)


def _to_rgb(img: Image.Image) -> tuple[np.ndarray, tuple[str, ...]]:
    """RGB pixels from any PIL mode: 16-bit and 32-bit grey scaled to 8 bits, CMYK and the rest
    by PIL, transparency composited onto white."""
    if img.mode.startswith("I") or img.mode == "F":
        grey, note = _scale_wide(np.asarray(img), img.mode)
        return np.repeat(grey[..., None], 3, axis=-1), (note,)
    if (img.mode == "P" and "transparency" in img.info) or img.mode in ("PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode != "RGBA":
        return np.asarray(img.convert("RGB")), ()
    rgba = np.asarray(img, np.float32)
    alpha = rgba[..., 3:] / 255.0
    if alpha.min() >= 1.0:
        return rgba[..., :3].astype(np.uint8), ()
    on_white = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.rint(on_white).astype(np.uint8), ("alpha-on-white",)


def _scale_wide(array: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """16-bit (I;16*, and I, which is how PIL reads some 16-bit files) and float grey to 8 bits."""
    if mode == "F":
        values = np.nan_to_num(array.astype(np.float64))
        if values.max() <= 1.0:
            return np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8), "float-scaled"
        return np.rint(np.clip(values, 0, 255)).astype(np.uint8), "float-clipped"
    values = np.clip(array.astype(np.float64), 0, 65535)
    return np.rint(values / 257.0).astype(np.uint8), "16-bit-scaled"

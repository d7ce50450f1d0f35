""".npy pictures: the header is read and checked before a byte of the array is touched.

`np.load` believes the header: a 200-byte file declaring (100000, 100000) float64 makes it reserve
80 GB before it finds the data missing. Here the header's shape, dtype and size are compared with
what `predict` accepts (one 2-D picture of at most preprocess.MAX_PIXELS numbers) and with the
bytes the file really holds; only then is the array viewed in place (np.frombuffer: no copy).
"""

from __future__ import annotations

import io
import math
import tokenize

import numpy as np

from fashion_jax.data.idx import DataError
from fashion_jax.runtime.numerics import first_nonfinite

# numpy's own default: a header longer than this is refused by np.load too (a crafted dict).
MAX_NPY_HEADER = 10_000
# bool, signed and unsigned ints, floats: what a picture's pixels can be.
PIXEL_KINDS = "biuf"
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def npy_array(data: bytes, name: str, error: type[DataError], max_pixels: int) -> np.ndarray:
    """The 2-D array of .npy bytes, viewed in place once its header passes every check (at most
    `max_pixels`, preprocess.MAX_PIXELS); `error(name, problem)` otherwise."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        reader = _HEADER_READERS.get(version)
        if reader is None:
            raise ValueError(f"version {version[0]}.{version[1]} of the format")
        shape, fortran, dtype = reader(stream, max_header_size=MAX_NPY_HEADER)
    # numpy parses the header dict with Python's tokenizer, which has its own error (fuzzing)
    except (ValueError, TypeError, SyntaxError, EOFError, tokenize.TokenError) as err:
        why = " ".join(str(err).split())[:120]
        raise error(name, f"not a readable .npy array ({err.__class__.__name__}: {why})") from None
    if dtype.hasobject or dtype.kind not in PIXEL_KINDS or dtype.fields or dtype.shape:
        raise error(name, f"expected numbers, got dtype {dtype}")
    count = math.prod(shape)
    picture = tuple(d for d in shape if d != 1)
    if len(picture) != 2 or count == 0:
        raise error(name, f"expected one 2-D grayscale image, got shape {tuple(shape)}")
    if count > max_pixels:
        raise error(name, f"{count} pixels is over the limit of {max_pixels} (MAX_PIXELS)")
    offset, need = stream.tell(), count * dtype.itemsize
    if len(data) - offset < need:
        raise error(
            name,
            f"truncated: the header declares {tuple(shape)} {dtype} ({need} bytes), "
            f"the file holds {len(data) - offset}",
        )
    flat = np.frombuffer(data, dtype, count, offset)
    return flat.reshape(picture, order="F" if fortran else "C")


def load_npy(data: bytes, name: str, error: type[DataError], max_pixels: int) -> np.ndarray:
    """A 2-D array from .npy bytes as uint8 (a float array in [0, 1] is scaled by 255)."""
    array = npy_array(data, name, error, max_pixels)
    if first_nonfinite(array) is not None:
        raise error(name, "array holds NaN or Inf")
    if array.dtype.kind == "f" and array.max() <= 1.0:
        # already scaled to [0, 1], as the chapter's train_scaled; clipped first, so a float16
        # array's large negative values do not overflow
        array = np.clip(array, 0, 1) * 255.0
    return np.clip(array, 0, 255).astype(np.uint8)

"""preprocess.py on synthetic pictures: the paper's conversion, every pixel mode, bad files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from experiments.research.make_photos import STORE_TURNED
from fashion_jax.config import PREPROCESS_MODES
from fashion_jax.inference import preprocess
from fashion_jax.inference.preprocess import (
    MAX_PIXELS,
    ImageError,
    convert,
    prepare_bytes,
    prepare_file,
    to_fashion_mnist,
)


def garment(height: int = 28, width: int = 16) -> np.ndarray:
    """A Fashion-MNIST-like 28x28 picture: a light, shaded, asymmetric shape on black, its longest
    edge 28 and centred, as the dataset's images are."""
    img = np.zeros((28, 28), np.uint8)
    top, left = (28 - height) // 2, (28 - width) // 2
    shade = np.linspace(120, 255, width)[None, :] * np.ones((height, 1))
    shade[: height // 3, : width // 2] = 60  # a dim corner: the picture has no symmetry
    img[top : top + height, left : left + width] = shade.astype(np.uint8)
    return img


def photo(image: np.ndarray, scale: int = 10, paper: int = 245, at=(37, 71)) -> np.ndarray:
    """The shop photo a Fashion-MNIST picture came from: dark garment, near-white canvas of another
    aspect ratio, garment off-centre."""
    big = np.kron(image.astype(np.float32), np.ones((scale, scale), np.float32))
    canvas = np.full((28 * scale + 90, 28 * scale + 150), float(paper), np.float32)
    y, x = at
    canvas[y : y + big.shape[0], x : x + big.shape[1]] = paper * (1 - big / 255) + 20 * big / 255
    return np.repeat(np.rint(canvas).astype(np.uint8)[..., None], 3, axis=-1)


def encoded(img: Image.Image, fmt: str = "PNG", **save) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def bbox(image: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


# ------------------------------------------------------------------ the conversion


def test_a_photo_becomes_the_fashion_mnist_picture_it_came_from():
    original = garment()
    got = to_fashion_mnist(photo(original))
    assert got.shape == (28, 28) and got.dtype == np.uint8
    assert bbox(got) == bbox(original) == (0, 27, 6, 21)  # trimmed, 28 tall, centred
    assert got.max() == 255 and got[:, :5].max() == 0 and got[:, 23:].max() == 0
    assert np.corrcoef(got.ravel(), original.ravel())[0, 1] > 0.95
    assert np.abs(got.astype(int) - original).mean() < 12


def test_a_wide_garment_is_centred_vertically():
    wide = garment(height=10, width=28)
    got = to_fashion_mnist(photo(wide, scale=12, at=(5, 140)))
    top, bottom, left, right = bbox(got)
    assert (left, right) == (0, 27) and bottom - top + 1 == 10 and top == 9


def test_the_same_garment_anywhere_on_any_canvas_gives_the_same_picture():
    original = garment()
    a = to_fashion_mnist(photo(original, scale=10, paper=250, at=(0, 0)))
    b = to_fashion_mnist(photo(original, scale=10, paper=232, at=(80, 140)))
    assert np.abs(a.astype(int) - b).max() <= 5  # 230 vs 212 grey levels of contrast to stretch


def test_noise_on_the_canvas_is_not_taken_for_the_garment():
    noisy = photo(garment()).astype(np.float32)
    noisy += np.random.default_rng(0).normal(0, 3, noisy.shape)
    got = to_fashion_mnist(np.clip(noisy, 0, 255).astype(np.uint8))
    assert bbox(got)[2:] == (6, 21)


def test_an_odd_margin_puts_its_extra_pixel_left_and_on_top_as_the_dataset_does():
    narrow = garment(height=28, width=15)
    got = to_fashion_mnist(photo(narrow))
    assert bbox(got)[2:] == (7, 21)  # 7 columns free on the left, 6 on the right
    flat = garment(height=13, width=28)
    assert bbox(to_fashion_mnist(photo(flat, scale=12, at=(5, 140))))[:2] == (8, 20)


def test_a_speck_darker_than_the_garment_does_not_dim_the_rest_of_it():
    rgb = photo(garment())
    clean = to_fashion_mnist(rgb).astype(int)
    specked = rgb.copy()
    specked[147:157, 151:161] = 0  # one pixel at 28x28: a button, darker than the cloth
    got = to_fashion_mnist(specked).astype(int)
    far = np.ones((28, 28), bool)
    far[9:15, 6:11] = False  # where the speck lands (row 11, column 8), and the sharpening's ring
    assert np.abs(got - clean)[far].max() <= 2


def lit(rgb: np.ndarray, wall=(175, 150, 190), table=None) -> np.ndarray:
    """`photo`'s picture on a coloured mid-grey wall, lit from the left and vignetted (corners up
    to a quarter darker than the middle), optionally on a table of another colour at the bottom."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = (1 - 0.2 * xx / w) * (1 - 0.25 * (((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) * 2))
    surface = np.broadcast_to(np.array(wall, np.float32), rgb.shape).copy()
    if table is not None:
        surface[-table[0] :] = table[1]
    garment_share = 1 - rgb[..., :1].astype(np.float32) / 245  # photo's paper is 245
    out = (surface * (1 - garment_share) + 20 * garment_share) * light[..., None]
    return np.rint(out).astype(np.uint8)


@pytest.mark.parametrize("table", [None, (25, (120, 160, 140))], ids=["wall", "table-edge"])
def test_a_vignetted_coloured_background_lit_from_one_side_is_not_taken_for_the_garment(table):
    original = garment()
    got = to_fashion_mnist(lit(photo(original), table=table))
    assert bbox(got) == bbox(original)  # trimmed to the garment, not to the whole frame
    assert got[:, :5].max() <= 10 and got[:, 23:].max() <= 10  # the wall's ink is ~0
    assert np.corrcoef(got.ravel(), original.ravel())[0, 1] > 0.9


def test_a_garment_touching_the_edge_of_a_vignetted_photo_keeps_its_whole_box():
    original = garment()
    got = to_fashion_mnist(lit(photo(original, at=(0, 71))))
    assert bbox(got) == bbox(original)
    assert np.corrcoef(got.ravel(), original.ravel())[0, 1] > 0.9


def test_auto_never_negates_a_fashion_mnist_picture_twice():
    original = garment()
    got = convert(original, "auto")
    assert got.preprocessing == "none" and np.array_equal(got.image, original)
    assert convert(photo(original), "auto").preprocessing == "fashion-mnist"


def test_modes():
    shot = photo(garment())
    assert PREPROCESS_MODES == ("auto", "fashion-mnist", "none")
    forced = convert(garment(), "fashion-mnist")  # negated: a dark picture
    assert forced.preprocessing == "fashion-mnist" and forced.image.mean() > 128
    plain = convert(shot, "none")  # only grey and 28x28: still a light canvas
    assert plain.preprocessing == "none" and plain.image.shape == (28, 28)
    assert plain.image.mean() > 150 and plain.notes == (f"resized-{shot.shape[1]}x{shot.shape[0]}",)
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        prepare_bytes(encoded(Image.fromarray(shot)), "x.png", mode="photo")


# ------------------------------------------------------------------ what files bring


def reference(paper: int = 245) -> np.ndarray:
    return prepare_bytes(encoded(Image.fromarray(photo(garment(), paper=paper))), "ref.png").image


@pytest.mark.parametrize("orientation", sorted(STORE_TURNED))
def test_exif_orientation_is_applied(orientation):
    upright = Image.fromarray(photo(garment()))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = upright.transpose(STORE_TURNED[orientation])
    got = prepare_bytes(encoded(stored, exif=exif.tobytes()), "turned.png")
    assert got.notes == ("exif-rotated",) and np.array_equal(got.image, reference())


def test_a_transparent_cutout_is_put_on_white_whatever_is_under_the_transparency():
    rgb = photo(garment(), paper=255)
    garment_pixels = rgb[..., 0] < 255
    rgba = np.dstack([rgb * garment_pixels[..., None], garment_pixels * 255]).astype(np.uint8)
    got = prepare_bytes(encoded(Image.fromarray(rgba)), "cutout.png")
    assert got.notes == ("alpha-on-white",) and got.preprocessing == "fashion-mnist"
    assert np.array_equal(got.image, reference(paper=255))
    la = Image.merge("LA", [Image.fromarray(rgba[..., 0]), Image.fromarray(rgba[..., 3])])
    assert np.array_equal(prepare_bytes(encoded(la), "la.png").image, got.image)


def test_palette_16_bit_and_cmyk_pixels_give_the_same_picture():
    rgb = Image.fromarray(photo(garment()))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    assert np.array_equal(prepare_bytes(encoded(palette), "p.png").image, reference())
    wide = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    assert wide.mode == "I;16"
    got = prepare_bytes(encoded(wide), "16.png")
    assert got.notes == ("16-bit-scaled",) and np.array_equal(got.image, reference())
    cmyk = prepare_bytes(encoded(rgb.convert("CMYK"), "TIFF"), "cmyk.tif")
    assert np.array_equal(cmyk.image, reference())


def test_16_bit_noise_is_scaled_not_saturated():
    noise = np.random.default_rng(0).integers(0, 65536, (28, 28), dtype=np.uint16)
    got = prepare_bytes(encoded(Image.fromarray(noise)), "noise16.png", mode="none")
    assert np.array_equal(got.image, np.rint(noise / 257).astype(np.uint8))
    assert 100 < got.image.mean() < 155  # PIL's own convert("L") would give all 255


def test_an_animated_gif_uses_its_first_frame_and_says_so():
    first, second = Image.fromarray(garment()), Image.fromarray(255 - garment())
    data = encoded(first, "GIF", save_all=True, append_images=[second], duration=100)
    got = prepare_bytes(data, "anim.gif")
    assert got.notes == ("first-frame-of-animation",)
    assert np.array_equal(got.image, garment()) and got.preprocessing == "none"


def test_npy_arrays_keep_working(tmp_path):
    np.save(tmp_path / "float.npy", garment().astype(np.float32) / 255)
    got = prepare_file(tmp_path / "float.npy")
    assert np.abs(got.image.astype(int) - garment()).max() <= 1 and got.preprocessing == "none"
    np.save(tmp_path / "nan.npy", np.full((28, 28), np.nan))
    with pytest.raises(ImageError, match="NaN or Inf"):
        prepare_file(tmp_path / "nan.npy")


# ------------------------------------------------------------------ bad files


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height (8-bit grey) and holds almost nothing: a decompression
    bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = encoded(Image.fromarray(photo(garment())), "JPEG", quality=90)
    return data[: len(data) // 2]


BAD_BYTES = {
    "bomb.png": (png_header(20000, 20000), "decompression bomb"),
    "big.png": (png_header(10000, 6000), f"over the limit of {MAX_PIXELS} pixels"),
    "half.jpg": (truncated_jpeg(), "truncated"),
    "text.png": (b"this is not an image\n", "not an image"),
    "empty.png": (b"", "empty file"),
    "text.npy": (b"not an array", "not a readable .npy array"),
}


@pytest.mark.parametrize("name", sorted(BAD_BYTES))
def test_a_bad_file_is_one_image_error_naming_it(name):
    data, problem = BAD_BYTES[name]
    with pytest.raises(ImageError) as caught:
        prepare_bytes(data, name)
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and problem in message and "\n" not in message


def test_paths_that_are_not_readable_files(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        prepare_file(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        prepare_file(tmp_path / "absent.png")
    # An unreadable file: test_permission_denied_is_one_line_even_as_root (chmod 000 cannot stop
    # root, which is how CI runs).


def test_permission_denied_is_one_line_even_as_root(tmp_path, monkeypatch):
    """What chmod 000 does to a normal user, simulated so that it also runs as root."""
    image = tmp_path / "locked.png"
    image.write_bytes(encoded(Image.fromarray(garment())))

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(preprocess, "open", denied, raising=False)
    with pytest.raises(ImageError, match=r"locked.png: cannot read \(Permission denied\)$"):
        prepare_file(image)

"""Shop-style photos of Fashion-MNIST test garments, with their labels: what `predict` meets.

Each photo turns one test image back into something like the shop photo it came from: the garment
dark (the dataset's intensities negated), dyed a random colour, enlarged 8-16x, placed off-centre
on a near-white canvas of another aspect ratio with a little colour noise, and saved as a JPEG
(quality 60-95, some with an EXIF orientation: pixels stored turned, the tag turning them back) or
as a PNG: a transparent cut-out, a palette image, 16-bit grey, or grey plus alpha. The same seed
writes the same files; labels.json maps each file name to its label and how it was made.

    python -m experiments.research.make_photos OUT_DIR --n 500 --seed 0
    python -m experiments.research.make_photos OUT_DIR --n 500 --check WORKDIR  # accuracy per mode
"""

from __future__ import annotations

import argparse
import colorsys
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fashion_jax.data.dataset import load_split
from fashion_jax.inference.predictor import Predictor, predict_files

# EXIF orientation -> the transpose that stores an upright picture so that exif_transpose (which
# applies the tag's own transpose) gives it back upright: each is the inverse of the tag's.
STORE_TURNED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
FORMATS = ("jpeg", "cutout", "palette", "grey16", "grey-alpha")
FORMAT_WEIGHTS = (0.6, 0.15, 0.1, 0.08, 0.07)


def dyed_photo(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(RGB photo, garment coverage in [0, 1]) of one 28x28 Fashion-MNIST image."""
    scale = int(rng.integers(8, 17))
    side = 28 * scale
    ink = np.asarray(Image.fromarray(image).resize((side, side), Image.BICUBIC), np.float32) / 255
    hue, sat, value = rng.random(), rng.uniform(0.2, 1.0), rng.uniform(0.1, 0.7)
    dye = np.array(colorsys.hsv_to_rgb(hue, sat, value), np.float32) * 255
    height = int(side * rng.uniform(1.1, 1.6))
    width = int(height * rng.uniform(0.65, 1.5))
    height, width = max(height, side + 4), max(width, side + 4)
    paper = 255 - rng.uniform(0, 14) - rng.uniform(0, 6, 3)  # near-white, slightly tinted
    canvas = paper + rng.normal(0, rng.uniform(0, 3), (height, width, 3))
    top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    coverage = np.zeros((height, width), np.float32)
    coverage[top : top + side, left : left + side] = np.clip(ink, 0, 1)
    photo = canvas * (1 - coverage[..., None]) + dye * coverage[..., None]
    return np.clip(np.rint(photo), 0, 255).astype(np.uint8), coverage


def save_photo(
    photo: np.ndarray, coverage: np.ndarray, path: Path, kind: str, rng: np.random.Generator
) -> dict:
    """Writes `photo` as `kind` at `path` (suffix added); how it was stored."""
    img = Image.fromarray(photo)
    alpha = Image.fromarray((np.clip(coverage * 4, 0, 1) * 255).astype(np.uint8))
    if kind == "jpeg":
        quality = int(rng.integers(60, 96))
        orientation = int(rng.choice(list(STORE_TURNED))) if rng.random() < 0.4 else 1
        exif = Image.Exif()
        if orientation != 1:
            img = img.transpose(STORE_TURNED[orientation])
            exif[0x0112] = orientation
        img.save(path.with_suffix(".jpg"), quality=quality, exif=exif.tobytes())
        return {
            "file": path.with_suffix(".jpg").name,
            "quality": quality,
            "orientation": orientation,
        }
    if kind == "cutout":  # the canvas under the transparency is black: it must not show
        rgba = np.dstack([photo * (coverage[..., None] > 0), np.asarray(alpha)])
        Image.fromarray(rgba.astype(np.uint8)).save(path.with_suffix(".png"))
    elif kind == "palette":
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path.with_suffix(".png"))
    elif kind == "grey16":
        grey = np.asarray(img.convert("L"), np.uint16) * 257
        Image.fromarray(grey).save(path.with_suffix(".png"))
    else:
        Image.merge("LA", (img.convert("L"), alpha)).save(path.with_suffix(".png"))
    return {"file": path.with_suffix(".png").name}


def make_photos(out_dir: str | Path, n: int = 500, seed: int = 0) -> dict[str, dict]:
    """`n` photos of test garments in `out_dir` and its labels.json: {file: {"label", ...}}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_split("test")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(images), size=n, replace=False)
    made = {}
    for i, index in enumerate(picks):
        photo, coverage = dyed_photo(images[index], rng)
        kind = str(rng.choice(FORMATS, p=FORMAT_WEIGHTS))
        row = save_photo(photo, coverage, out / f"photo_{i:04d}", kind, rng)
        name = row.pop("file")
        made[name] = {"label": int(labels[index]), "test_index": int(index), "kind": kind, **row}
    (out / "labels.json").write_text(json.dumps(made, indent=1, sort_keys=True))
    return made


def check(out_dir: Path, made: dict[str, dict], workdir: str) -> dict[str, float]:
    """Accuracy of the model in `workdir` on the photos under each preprocessing, and on the same
    garments as the original test images."""
    files = sorted(made)
    truth = np.array([made[f]["label"] for f in files])
    scores = {}
    for mode in ("auto", "fashion-mnist", "none"):
        rows = predict_files(workdir, [out_dir / f for f in files], mode=mode)
        scores[mode] = float(np.mean([r.get("label") == y for r, y in zip(rows, truth)]))
    images, _ = load_split("test")
    probs = Predictor(workdir).predict_images(images[[made[f]["test_index"] for f in files]])
    scores["original"] = float(np.mean(probs.argmax(1) == truth))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--n", type=int, default=500, help="how many photos (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="the photos' seed (default: 0)")
    parser.add_argument("--check", metavar="WORKDIR", help="then score the model in WORKDIR")
    args = parser.parse_args(argv)
    made = make_photos(args.out_dir, args.n, args.seed)
    print(f"wrote {len(made)} photos and labels.json to {args.out_dir}")
    if args.check:
        scores = check(Path(args.out_dir), made, args.check)
        print(json.dumps({"n": len(made), **scores}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

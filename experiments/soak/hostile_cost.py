"""What each crafted file of issue 26 costs, at the issue's sizes: seconds, peak extra memory, exit
status and the error line, each in a fresh process (tests/hostile_files.py's probe).

    PYTHONPATH=. python experiments/soak/hostile_cost.py [--only NAME ...] [--small]

Run it with PYTHONPATH pointing at another checkout to measure that code (the "before" figures of
docs/RELIABILITY.md came from the commit before the fix). --small uses a 256 MiB config bomb and a
200 MB IDX bomb instead of 2 GiB and 1 GB, for a quick look.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import hostile_files as hf  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def png_bomb(path: Path) -> Path:
    """A 1x60,000,000 grey PNG (the issue's), written by hand: about 60 KB on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    head = struct.pack(">IIBBBBB", 60_000_000, 1, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" + bytes(60_000_000), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", body))
    return path


def cases(folder: Path, small: bool) -> dict[str, tuple[list, Path]]:
    """name -> (argv, the crafted file); `work` is a saved dense model."""
    work, photo = folder / "work", folder / "shoe.png"
    bomb = (256 if small else 2048) << 20
    images = 250_000 if small else 1_300_000
    return {
        "keras config bomb": (["import", hf.keras_bomb(folder / "bomb.keras", bomb)], work),
        "keras 100,000-deep config": (["import", hf.keras_deep(folder / "deep.keras")], work),
        "keras kernel declaring 4 GB": (
            ["import", hf.keras_huge_kernel(folder / "kernel.keras")],
            work,
        ),
        "h5 20 MB model_config attr": (["import", hf.h5_big_attr(folder / "attr.h5")], work),
        "h5 external link": (["import", hf.h5_external_link(folder / "link.h5")], work),
        "h5 external storage": (["import", hf.h5_external_storage(folder / "ext.h5")], work),
        "h5 virtual dataset": (["import", hf.h5_virtual(folder / "virtual.h5")], work),
        "npy (100000, 100000) f8 + a photo": (
            ["predict", hf.npy_declaring(folder / "huge.npy", (100_000, 100_000)), photo],
            work,
        ),
        "npy (30000, 30000) f8": (
            ["predict", hf.npy_declaring(folder / "big.npy", (30_000, 30_000))],
            work,
        ),
        "png 1x60,000,000": (["predict", png_bomb(folder / "wide.png")], work),
        "gzip IDX bomb (evaluate --data-dir)": (
            ["evaluate", "--data-dir", hf.idx_bomb(folder / "data", images)],
            work,
        ),
    }


def with_workdir(name: str, argv: list, work: Path, folder: Path) -> list:
    if argv[0] == "import":
        return [*argv, "--workdir", folder / f"import-{abs(hash(name))}"]
    return [argv[0], "--workdir", work, *argv[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    from fashion_jax.config import TrainConfig, model_config
    from fashion_jax.model.models import build_model, init_params
    from fashion_jax.storage.model_files import save_model

    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        folder = Path(tmp)
        config = TrainConfig(model=model_config("dense"))
        save_model(folder / "work", config, init_params(build_model(config.model), 0))
        Image.fromarray(np.full((28, 28), 200, np.uint8)).save(folder / "shoe.png")
        chosen = {
            name: with_workdir(name, argv, work, folder)
            for name, (argv, work) in cases(folder, args.small).items()
            if not args.only or any(part in name for part in args.only)
        }
        # one process per case: a case's leftovers (a heap grown to gigabytes) never count twice
        for name, argv in chosen.items():
            out = hf.costs([argv], folder)[0]
            lines = [line for line in out.pop("stderr").splitlines() if line.strip()]
            out["lines"] = len(lines)
            out["last"] = lines[-1][:160] if lines else ""
            out["extra_mb"] = round(out.pop("extra") / 2**20, 1) if out["extra"] else None
            if out["seconds"] is not None:
                out["seconds"] = round(out["seconds"], 2)
            print(json.dumps({"case": name, **out}), flush=True)


if __name__ == "__main__":
    main()

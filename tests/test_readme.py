"""README.md cannot rot: every ```bash and ```python block runs, in the order shown, from a folder
laid out as a fresh clone is (the README's own paths), in the quick form CHAPTER.md's runner uses.

`make train` runs the train line the Makefile holds; `make test` is this suite itself and is not
run again from inside it. The Python example must leave `make train`'s model alone."""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

import pytest
from conftest import require_real_data
from test_chapter_doc import _small_dataset, quick_argv, quick_source
from test_cli import run_main

from fashion_jax.data import dataset as data_lib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def make_target(target: str) -> list[str]:
    """The fashion-jax command line a Makefile target runs (its last recipe line)."""
    text = (ROOT / "Makefile").read_text()
    workdir = re.search(r"^WORKDIR \?= (\S+)", text, re.M)[1]
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)[1].splitlines()[-1]
    argv = shlex.split(recipe.replace("$(WORKDIR)", workdir))
    assert argv[0].endswith("/bin/fashion-jax"), argv
    return argv[1:]


def test_the_readme_is_short_and_has_only_blocks_the_runner_knows():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert {m[1] for m in BLOCK.finditer(text)} <= {"bash", "python", "text"}


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


@pytest.mark.realdata
def test_every_readme_block_runs_in_order(tmp_path, monkeypatch):
    require_real_data()
    (tmp_path / "docs").symlink_to(ROOT / "docs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data_lib, "load_dataset", _small_dataset(data_lib.load_dataset))
    namespace: dict = {}
    ran = []
    for kind, source in ((m[1], m[2]) for m in BLOCK.finditer(README.read_text())):
        if kind == "python":
            before = digest(tmp_path / "runs" / "cnn")
            exec(compile(quick_source(source), "README.md python block", "exec"), namespace)
            assert digest(tmp_path / "runs" / "cnn") == before, "the example touched runs/cnn"
            ran.append("python")
            continue
        if kind != "bash":
            continue
        for line in filter(None, (shlex.split(x, comments=True) for x in source.splitlines())):
            if line == ["make", "test"]:  # this suite
                continue
            argv = make_target(line[1]) if line[0] == "make" else line[1:]
            assert line[0] in ("make", "fashion-jax"), line
            code, _, err = run_main(quick_argv(argv))
            assert code == 0, f"{shlex.join(line)}: {err}"
            ran.append(shlex.join(line))
    assert "make train" in ran and "python" in ran and len(ran) >= 12
    assert (tmp_path / "runs" / "imported" / "config.json").is_file()

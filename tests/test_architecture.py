"""The folder layering of docs/ARCHITECTURE.md, checked on the import graph, and the docs' names
checked against the tree: a lower layer importing a higher one, a module the page forgets, a path
or a test name the docs cite that does not exist, each fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fashion_jax"
# Lowest first: a module may import its own layer and the ones before it. The top-level modules
# (config, errors, files) are the base; the package's __init__ is the lazy public facade above all.
LAYERS = [
    "",
    "chapter",
    "runtime",
    "data",
    "model",
    "storage",
    "interop",
    "training",
    "inference",
    "viz",
    "serve",
    "cli",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """Every fashion_jax module this file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fashion_jax")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fashion_jax"):
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    names = modules()
    return {m for m in found if m in names}


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 2 and parts[1] not in LAYERS:  # fashion_jax.config, .errors, .files
        return 0
    return LAYERS.index(parts[1])


def test_every_folder_has_a_layer_and_says_what_lives_there():
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert folders <= set(LAYERS), folders - set(LAYERS)
    for folder in folders:
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        assert doc and "Imports:" in doc or folder == "chapter", folder


def test_no_module_imports_a_higher_layer():
    wrong = [
        f"{m} imports {other}"
        for m, path in modules().items()
        if m != "fashion_jax"
        for other in imported(path)
        if other != "fashion_jax" and layer(other) > layer(m)
    ]
    assert not wrong, wrong


def test_the_layer_check_would_catch_an_upward_import(tmp_path):
    fake = tmp_path / "probe.py"
    fake.write_text("from fashion_jax.cli.dispatch import run\n")
    assert layer("fashion_jax.runtime.compile") < max(layer(m) for m in imported(fake))


def test_the_top_is_small_and_folders_stay_small():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 5, top
    for folder in PACKAGE.glob("*/"):
        if folder.name != "__pycache__":
            assert len(list(folder.glob("*.py"))) <= 11, folder


ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def test_architecture_names_every_module_once_and_only_real_ones():
    text = ARCHITECTURE.read_text()
    cited = set(re.findall(r"`((?:[a-z_]+/)*[a-z0-9_]+\.py)`", text))
    paths = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    missing = sorted(p for p in paths if p not in cited and not p.endswith("__init__.py"))
    assert not missing, f"ARCHITECTURE.md does not name: {missing}"
    unknown = sorted(p for p in cited if p not in paths and not (ROOT / p).exists())
    assert not unknown, f"ARCHITECTURE.md names modules that do not exist: {unknown}"


def test_every_test_name_the_docs_cite_exists():
    defined = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^\s*def (test_\w+)", path.read_text(), re.M))
    docs = [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    cited = {
        (d.name, t)
        for d in docs
        for t in re.findall(r"\b(test_[a-z0-9]+_[a-z0-9_]+)\b", d.read_text())
    }
    files = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    missing = sorted((d, t) for d, t in cited if t not in defined and t not in files)
    assert not missing, missing


@pytest.mark.parametrize("doc", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_paths_the_docs_name_exist(doc):
    text = doc.read_text()
    cited = set(re.findall(r"`((?:fashion_jax|tests|experiments|docs)/[\w/.-]+\.\w+)`", text))
    assert not [c for c in cited if not (ROOT / c).exists()]

"""experiments/chapter/chapter.ipynb: it runs top to bottom in quick mode where there is no copy
of the data (it downloads it, from a local mirror here, as it does on Colab), and the committed
copy holds the outputs of a full run."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from conftest import require_real_data
from mirror import official, serving
from nbclient import NotebookClient

from fashion_jax.data import dataset, download

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "chapter" / "chapter.ipynb"


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def text_of(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def images_in(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in code_cells(nb) for o in c.outputs)


def check_outputs(nb: nbformat.NotebookNode) -> str:
    """What any run must show; returns all the printed text."""
    cells = code_cells(nb)
    assert all(cell.execution_count for cell in cells), "a cell did not run"
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    text = "\n".join(text_of(cell) for cell in cells)
    assert "[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]" in text  # the chapter's first 10 training labels
    assert "best perceptron 0.75, MLP 1.00 [0, 1, 1, 0], hand-set 1.00 [0, 1, 1, 0]" in text
    # samples, optimizers, dropout, curves, filters, input, 2 feature maps, confusion
    assert images_in(nb) >= 9
    # The mean -log q[label] over the val set is the loss fit reported for the same params.
    ours, fits = re.search(r"val set (\d\.\d{4}); fit's val loss (\d\.\d{4})", text).groups()
    assert ours == fits
    return text


def as_on_colab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror_url: str) -> Path:
    """The kernel's environment (it inherits ours): quick mode, no local copy of the data (no
    $FASHION_JAX_DATA, an empty system folder, no TFDS), an empty cache, the local mirror as the
    only source. Returns the cache folder the loader must download into."""
    (tmp_path / "no-system").mkdir()
    monkeypatch.setenv("FASHION_JAX_QUICK", "1")
    monkeypatch.setenv("FASHION_JAX_SYSTEM_DATA", str(tmp_path / "no-system"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no-tfds"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    monkeypatch.setenv(download.MIRROR_ENV, mirror_url)
    monkeypatch.delenv(dataset.ENV_VAR, raising=False)
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)
    return tmp_path / "cache-home" / "fashion_jax" / "data"


@pytest.mark.realdata
@pytest.mark.slow  # about a minute on 2 idle cores: a kernel, 13 compiled models, 17 fits
def test_the_notebook_runs_in_quick_mode_on_data_it_downloads(tmp_path, monkeypatch):
    """One run serves both checks (the suite's time budget has room for one): the notebook runs
    top to bottom, and, as on Colab, its data comes by download into an empty cache."""
    require_real_data(system_dir_only=True)  # the mirror serves the system folder's files
    nb = nbformat.read(NOTEBOOK, as_version=4)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(run_dir)}}
    )
    with serving() as mirror:
        cache = as_on_colab(tmp_path, monkeypatch, f"{mirror.url}/good/")
        client.execute()
    text = check_outputs(nb)
    assert "quick mode" in text
    assert "{'train': 2000, 'val': 1000, 'test': 1000}" in text
    # Each official file was fetched once, and the cache holds exactly the four, verified.
    assert sorted(mirror.paths) == sorted(f"/good/{name}" for name in download.GZ_SHA256)
    assert sorted(p.name for p in cache.iterdir()) == sorted(download.GZ_SHA256)
    assert all(official(p) for p in cache.iterdir())


def test_the_committed_notebook_holds_a_full_run():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = check_outputs(nb)
    assert "full mode" in text
    assert "{'train': 48000, 'val': 12000, 'test': 10000}" in text
    accuracy = float(re.search(r"test accuracy (\d\.\d{4}), \d+ s", text).group(1))
    assert accuracy >= 0.91  # the chapter's CNN on the real test set

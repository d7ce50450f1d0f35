"""The one way fashion_jax makes and saves a figure: a bare `matplotlib.figure.Figure` (no pyplot:
no global figure state to leak between calls, no display needed), matplotlib imported on first
use, and `save_figure` writing the PNG.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**kwargs: Any) -> Figure:
    """A bare matplotlib Figure (no pyplot: no global state, no display needed)."""
    # Imported on the first figure, not with this module: matplotlib takes ~0.5 s to import, which
    # the commands that draw nothing (evaluate, predict, cv) should not pay.
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def import_in_background() -> threading.Thread:
    """Start importing what `new_figure` and `save_figure` need on a helper thread.

    `train` draws curves.png once its fit is over: started before the data is read, the import
    (~0.3 s of Python) runs while zlib and hashlib decompress and check the data, which release
    the GIL, and while XLA trains. The first figure then finds the modules loaded, or waits on
    Python's import lock for the rest.
    """
    thread = threading.Thread(target=_import_matplotlib, name="matplotlib-import", daemon=True)
    thread.start()
    return thread


def _import_matplotlib() -> None:
    # Imported here, on the helper thread: the point is to keep this import off the caller's.
    import matplotlib.backends.backend_agg  # noqa: F401  (savefig's PNG canvas)
    import matplotlib.figure  # noqa: F401


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100, tight: bool = True) -> Path:
    """The one way a figure reaches disk: PNG, parent folders created, margins trimmed unless the
    figure set its own (`tight=False`: trimming lays the whole figure out a second time)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight" if tight else None)
    return out

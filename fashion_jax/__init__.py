"""fashion_jax: the Fashion-MNIST chapter in JAX/Flax.

The public API, for scripts and notebooks::

    import fashion_jax as fj

    config = fj.preset("chapter", epochs=3)        # or fj.preset(None, model="dense")
    data = fj.load_dataset()                       # downloads the files when there is no copy
    result = fj.fit(config, data, "runs/mine")     # result.history, result.test_accuracy, ...
    config, model, params = fj.load_model("runs/mine")
    fj.evaluate(model, params, data.test_x, data.test_y)   # {"loss": ..., "accuracy": ...}
    fj.predict("runs/mine", ["shoe.jpg"])          # one row per file, as `predict --json`
    fj.explain("runs/mine", ["shoe.jpg"])          # and why: the maps of `explain --json`

Each name is imported on first use, so `import fashion_jax` (and `fashion-jax --help`) loads no
JAX. The folders below say where everything else lives (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> (module, attribute)
_API = {
    "preset": ("fashion_jax.config", "preset"),
    "load_dataset": ("fashion_jax.data.dataset", "load_dataset"),
    "fit": ("fashion_jax.training.loop", "fit"),
    "load_model": ("fashion_jax.storage.model_files", "load_model"),
    "save_model": ("fashion_jax.storage.model_files", "save_model"),
    "evaluate": ("fashion_jax.training.evaluate", "evaluate_arrays"),
    "predict": ("fashion_jax.inference.predictor", "predict_files"),
    "explain": ("fashion_jax.inference.explain_files", "explain_files"),
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'fashion_jax' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])

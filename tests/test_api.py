"""The public API at the top of the package: lazy, small, and the same objects as their homes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fashion_jax as fj


def test_importing_the_package_loads_no_jax():
    code = "import sys, fashion_jax; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_each_name_is_its_home_module_function():
    from fashion_jax.inference.predictor import predict_files
    from fashion_jax.storage.model_files import load_model
    from fashion_jax.training.evaluate import evaluate_arrays
    from fashion_jax.training.loop import fit

    assert (fj.fit, fj.load_model, fj.evaluate, fj.predict) == (
        fit,
        load_model,
        evaluate_arrays,
        predict_files,
    )
    assert set(fj.__all__) <= set(dir(fj))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        fj.trian  # noqa: B018


def test_preset_fit_load_evaluate_from_the_top(small_data, tmp_path):
    config = fj.preset(None, model="dense", epochs=1, batch_size=64)
    from fashion_jax.config import RunOptions

    result = fj.fit(config, small_data, tmp_path / "run", RunOptions(quiet=True))
    _, model, params = fj.load_model(tmp_path / "run")
    metrics = fj.evaluate(model, params, small_data.val_x, small_data.val_y)
    assert np.isclose(metrics["accuracy"], result.history[-1]["val_accuracy"])

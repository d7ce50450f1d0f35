"""Figures of a restored model: filters, feature maps, confusion matrix, curves; on real images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import pytest
from matplotlib.image import imread
from PIL import Image

from fashion_jax.config import RunOptions, TrainConfig, model_config
from fashion_jax.data.dataset import FashionMNIST
from fashion_jax.inference import inspection
from fashion_jax.model.models import build_model, init_params
from fashion_jax.storage.model_files import save_model
from fashion_jax.storage.run_files import write_history
from fashion_jax.training import evaluate
from fashion_jax.training.loop import fit
from fashion_jax.viz import plots as viz

pytestmark = pytest.mark.realdata
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_TEST = 1234  # not a multiple of the 1000-image eval batch: the last batch is partial


@pytest.fixture(scope="module")
def small(real_data: FashionMNIST) -> FashionMNIST:
    """256 train / 256 val / 1234 test real images
    (real_data, from conftest, skips without the files)."""
    d = real_data
    return FashionMNIST(
        d.train_x[:256],
        d.train_y[:256],
        d.val_x[:256],
        d.val_y[:256],
        d.test_x[:N_TEST],
        d.test_y[:N_TEST],
        d.source,
    )


def _fit(name: str, data: FashionMNIST, workdir: Path) -> tuple[Path, nn.Module, Any]:
    """A 1-epoch run in workdir, and its model with the params fit returns (those of the best epoch,
    what load_model restores; plot_all does the restore itself, so the tests need not repeat it)."""
    config = TrainConfig(model=model_config(name), epochs=1, batch_size=32)
    result = fit(config, data, workdir, RunOptions(quiet=True))
    return workdir, build_model(config.model), result.params


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, Any]:
    """The chapter CNN with fresh random params, saved as a whole model, plus a two-epoch history.

    Not trained: compiling a CNN train step costs more CPU time than everything else here, and the
    figures only need some params; a real training workdir is covered by the dense run below.
    """
    workdir = tmp_path_factory.mktemp("cnn")
    config = TrainConfig(model=model_config("cnn"))
    model = build_model(config.model)
    params = init_params(model, config.seed)
    save_model(workdir, config, params)
    write_history(
        workdir / "history.jsonl",
        [
            {
                "epoch": e,
                "loss": 1.0 / e,
                "accuracy": 0.5 + e / 10,
                "val_loss": 1.1 / e,
                "val_accuracy": 0.5 + e / 11,
            }
            for e in (1, 2)
        ],
    )
    return workdir, model, params


@pytest.fixture(scope="module")
def dense_run(
    small: FashionMNIST, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, nn.Module, Any]:
    return _fit("dense", small, tmp_path_factory.mktemp("dense"))


def _read_png(path: str | Path) -> np.ndarray:
    path = Path(path)
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50, (path, image.shape)
    return image


def test_plot_all_cnn_writes_every_figure(cnn_run, small: FashionMNIST) -> None:
    cnn_dir = cnn_run[0]
    out = viz.plot_all(cnn_dir, small, image_index=3)
    assert set(out) == {
        "filters",
        "feature_input",
        "feature_maps_conv0",
        "feature_maps_conv1",
        "confusion",
        "mistakes",
        "curves",
    }
    assert {Path(p).name for p in out.values()} == {
        "filters_conv0.png",
        "feature_input.png",
        "feature_maps_conv0.png",
        "feature_maps_conv1.png",
        "confusion.png",
        "mistakes.png",
        "curves.png",
    }
    assert all(Path(p).parent == cnn_dir / "plots" for p in out.values())
    aspect = {name: (lambda im: im.shape[1] / im.shape[0])(_read_png(p)) for name, p in out.items()}
    assert aspect["filters"] > 4  # 2 x 16 tiles
    assert 1.3 < aspect["feature_maps_conv0"] < 2.6  # 4 x 8 tiles
    assert 0.7 < aspect["feature_maps_conv1"] < 1.4  # 8 x 8 tiles
    assert 0.8 < aspect["confusion"] < 1.4
    assert aspect["curves"] > 2  # loss and accuracy side by side


def test_feature_maps_are_the_activated_conv_outputs(cnn_run) -> None:
    _, model, params = cnn_run
    image = np.arange(784, dtype=np.uint8).reshape(28, 28)
    maps = inspection.feature_maps(model, params, image)
    assert {k: v.shape for k, v in maps.items()} == {"conv0": (28, 28, 32), "conv1": (14, 14, 64)}
    # conv0 recomputed by hand: the first layer's output after ReLU, on the image scaled by 1/255
    conv0 = nn.Conv(32, (3, 3), padding="SAME").apply(
        {"params": params["conv0"]}, image[None, ..., None] / 255.0
    )
    np.testing.assert_allclose(
        maps["conv0"], np.maximum(np.asarray(conv0[0]), 0), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="28, 28"):
        inspection.feature_maps(model, params, image[None])


def test_confusion_matrix_agrees_with_evaluate(cnn_run, small: FashionMNIST) -> None:
    _, model, params = cnn_run
    cm = inspection.confusion_matrix(model, params, small.test_x, small.test_y, batch_size=1000)
    assert cm.shape == (10, 10) and cm.sum() == N_TEST
    np.testing.assert_array_equal(
        cm.sum(axis=1), np.bincount(small.test_y, minlength=10)
    )  # rows = true class
    evaluated = evaluate.evaluate(
        evaluate.make_eval_step(model, 1000),
        params,
        jax.device_put(small.test_x),
        jax.device_put(small.test_y.astype(np.int32)),
    )
    assert np.trace(cm) / cm.sum() == pytest.approx(evaluated["accuracy"], abs=1e-12)
    np.testing.assert_array_equal(
        inspection.confusion_matrix(model, params, small.test_x, small.test_y, batch_size=500), cm
    )
    for labels in (np.array([0, 1, 10]), np.array([0, 1])):  # a label out of range, one label short
        with pytest.raises(ValueError, match="one label in 0..9 per image"):
            inspection.confusion_matrix(model, params, small.test_x[:3], labels)


def test_dense_workdir_skips_filters_but_plots_the_rest(
    dense_run, small: FashionMNIST, tmp_path: Path
) -> None:
    dense_dir, model, params = dense_run
    out = viz.plot_all(dense_dir, small, out_dir=tmp_path / "figs")
    note = "skipped: model dense has no conv layers"
    assert out["filters"] == note and out["feature_maps"] == note
    _read_png(out["confusion"])
    _read_png(out["curves"])
    _read_png(out["mistakes"])
    figures = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert figures == ["confusion.png", "curves.png", "mistakes.png"]
    assert inspection.feature_maps(model, params, small.test_x[0]) == {}


@pytest.mark.parametrize("index", [N_TEST, -1])
def test_image_index_out_of_range_is_one_line(
    index: int, tmp_path: Path, small: FashionMNIST
) -> None:
    with pytest.raises(ValueError, match="out of range") as err:
        viz.plot_all(
            tmp_path, small, image_index=index
        )  # checked before any restore: tmp_path holds no run
    assert "\n" not in str(err.value)
    assert not (tmp_path / "plots").exists()


def test_plot_filters_shows_channel_zero_of_a_multichannel_kernel(tmp_path: Path) -> None:
    kernel = np.random.default_rng(0).normal(size=(5, 5, 3, 12)).astype(np.float32)
    image = _read_png(viz.plot_filters(kernel, tmp_path / "f.png", vmax=0.5))
    assert image.shape[1] > image.shape[0]  # one row of 12 tiles
    with pytest.raises(ValueError, match=r"\(kh, kw, in, out\)"):
        viz.plot_filters(kernel[..., 0], tmp_path / "g.png")


def test_plot_samples_is_one_row_of_ten(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = (
        rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 12).astype(np.uint8),
    )
    out = viz.plot_samples(images, labels, tmp_path / "fig" / "samples.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = Image.open(out).size
    assert width > 4 * height  # one row of ten

"""`explain`: the four maps, checks that can fail (model randomisation, a known answer, IG
completeness, deletion), and the command line. The figures each check measures are printed
(pytest -s); experiments/research/explain_checks.py measures them at full size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line
from PIL import Image
from test_cli import last_json, run_main

from experiments.research import explain_checks as checks
from fashion_jax.cli.parser import EXPLAIN_METHODS
from fashion_jax.config import RunOptions, TrainConfig, model_config, preset
from fashion_jax.data.dataset import CLASS_NAMES, FashionMNIST
from fashion_jax.inference.explain import IG_STEPS, METHODS, Explainer
from fashion_jax.model.models import build_model, init_params
from fashion_jax.storage.model_files import save_model
from fashion_jax.training.loop import fit

N_IMAGES = 100
FEW_STEPS = 32
N_COMPLETE = 8  # images whose IG completeness is checked at IG_STEPS


@pytest.fixture(scope="module")
def chapter(real_data: FashionMNIST, tmp_path_factory) -> tuple[Path, Explainer, np.ndarray]:
    """The chapter CNN after one epoch on 3,000 real images, and 100 test images."""
    d = real_data
    data = FashionMNIST(
        d.train_x[:3000], d.train_y[:3000], d.val_x[:256], d.val_y[:256],
        d.test_x[:N_IMAGES], d.test_y[:N_IMAGES], d.source,
    )  # fmt: skip
    config = preset("chapter", epochs=1)
    workdir = tmp_path_factory.mktemp("explain") / "cnn"
    result = fit(config, data, workdir, RunOptions(quiet=True))
    # Integrated gradients with 32 steps in the map checks, IG_STEPS only where completeness is
    # checked: the maps barely change, and the 100 images cost an eighth of the time.
    explainer = Explainer(build_model(config.model), result.params, ig_steps=FEW_STEPS)
    return workdir, explainer, data.test_x


@pytest.fixture(scope="module")
def maps(chapter) -> dict:
    """Each method's maps of the 100 images on the trained CNN and on the same network
    re-initialised (seed 1), both for the trained CNN's predicted classes."""
    _, explainer, images = chapter
    pred = explainer.probabilities(images).argmax(-1)
    random = Explainer(explainer.model, init_params(explainer.model, 1), ig_steps=FEW_STEPS)
    return {
        "pred": pred,
        "trained": explainer.explain(images, pred),
        "random": random.explain(images, pred),
    }


def test_the_parser_lists_the_methods_explain_has() -> None:
    assert EXPLAIN_METHODS == METHODS


def test_maps_depend_on_the_weights_and_repeat_exactly(chapter, maps) -> None:
    _, explainer, images = chapter
    figures = checks.randomisation(maps["trained"], maps["random"], images > 0)
    print("\nSpearman, trained vs re-initialised:", json.dumps(figures))
    for method, rho in figures.items():
        assert rho["all_pixels"] < 0.5, (method, rho)
        assert abs(rho["garment"]) < 0.25, (method, rho)
    # Again on the same model: the same program on the same batch shapes, so bit for bit
    cheap = tuple(m for m in METHODS if m != "occlusion")
    again = explainer.explain(images, maps["pred"], cheap)
    again |= explainer.explain(images[:2], maps["pred"][:2], ("occlusion",))
    for method, m in again.items():
        np.testing.assert_array_equal(m, maps["trained"][method][: len(m)])


def test_integrated_gradients_sum_to_the_logit_difference(chapter, maps) -> None:
    _, explainer, images = chapter
    images, pred = images[:N_COMPLETE], maps["pred"][:N_COMPLETE]
    error = checks.completeness(explainer.model, explainer.params, images, pred, IG_STEPS)
    print(f"\nIG completeness, {IG_STEPS} steps: max {error.max():.4%}, mean {error.mean():.4%}")
    assert error.max() < 0.01
    # and the quadrature matters: 8 steps miss by more
    assert checks.completeness(explainer.model, explainer.params, images, pred, 8).max() > 0.01


def test_deleting_the_top_pixels_costs_more_than_random_ones(chapter, maps) -> None:
    _, explainer, images = chapter
    figures = checks.deletion(explainer, images, maps["trained"])
    print("\ndeletion:", json.dumps(figures))
    for method in ("saliency", "integrated-gradients", "occlusion"):
        assert figures[method]["ratio"] > 1.5, (method, figures[method])
    assert figures["gradcam"]["ratio"] > 0  # reported, not required: see docs/CHAPTER.md


def test_maps_fall_on_the_square_that_decides_the_label(tmp_path) -> None:
    """A small CNN trained on images whose label shows only in one square (sparse noise around)."""
    parts = [checks.region_images(n, seed) for n, seed in ((4000, 0), (128, 1), (64, 2))]
    data = FashionMNIST(*parts[0], *parts[1], *parts[2], "synthetic")
    model = model_config("cnn", filters=(8, 16), hidden=32, dropout=0.0)
    config = TrainConfig(model=model, optimizer="adam", epochs=8, schedule="cosine", patience=0)
    result = fit(config, data, tmp_path / "w", RunOptions(quiet=True))
    assert result.summary()["test_accuracy"] > 0.95
    explainer = Explainer(build_model(model), result.params, ig_steps=FEW_STEPS)
    images, labels = parts[2]
    share = {m: checks.mass_in_region(v) for m, v in explainer.explain(images, labels).items()}
    print("\nmass inside the square:", json.dumps(share))
    # The bar, 90% inside, holds for integrated gradients and occlusion (0.94 here, 0.96
    # at full size). Saliency and Grad-CAM miss it in every form of the task tried (CHAPTER.md):
    # saliency concentrates there, well above the square's share of the image; Grad-CAM's features
    # fire on the noise too, so its share is only printed.
    for method in ("integrated-gradients", "occlusion"):
        assert share[method] >= 0.9, (method, share[method])
    assert share["saliency"] > 1.5 * checks.region_area(), share


# ------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A small CNN and a dense model with their seed-0 params: the plumbing needs no training."""
    folder = tmp_path_factory.mktemp("explain-models")
    out = {}
    for name, overrides in (("cnn", {"filters": (4, 8), "hidden": 16}), ("dense", {})):
        config = TrainConfig(model=model_config(name, **overrides))
        save_model(folder / name, config, init_params(build_model(config.model), config.seed))
        out[name] = folder / name
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    from conftest import synthetic_images

    folder = tmp_path_factory.mktemp("explain-files")
    images, _ = synthetic_images(2, 3)
    Image.fromarray(images[0]).save(folder / "a.png")
    np.save(folder / "b.npy", images[1])
    (folder / "bad.png").write_bytes(b"not a picture")
    return folder


def explain(*argv) -> tuple[int, str, str]:
    return run_main(["explain", *map(str, argv)])


def test_json_has_every_map_as_28_by_28_non_negative_floats(models, files) -> None:
    code, out, err = explain("--workdir", models["cnn"], files / "a.png", files / "b.npy", "--json")
    assert code == 0, err
    rows = last_json(out)["explanations"]
    assert [Path(r["file"]).name for r in rows] == ["a.png", "b.npy"]
    predicted = run_main(["predict", "--workdir", models["cnn"], files / "a.png", "--json"])[1]
    first = last_json(predicted)["predictions"][0]
    for key in ("class", "label", "probability", "top3", "preprocessing", "notes"):
        assert rows[0][key] == first[key], key
    for row in rows:
        assert set(row["maps"]) == set(METHODS)
        for m in row["maps"].values():
            m = np.asarray(m)
            assert m.shape == (28, 28) and m.dtype == np.float64 and m.min() >= 0 and m.max() > 0


def test_class_flag_explains_that_class(models, files) -> None:
    argv = ("--workdir", models["cnn"], files / "a.png", "--method", "saliency", "--json")
    shirt = last_json(explain(*argv, "--class", "shirt")[1])["explanations"][0]
    six = last_json(explain(*argv, "--class", "6")[1])["explanations"][0]
    assert (shirt["class"], shirt["label"]) == (CLASS_NAMES[6], 6)
    assert shirt["maps"] == six["maps"] and list(shirt["maps"]) == ["saliency"]
    other = last_json(explain(*argv, "--class", "0")[1])["explanations"][0]
    assert other["maps"] != shirt["maps"]
    line = error_line(*explain(*argv, "--class", "hat")[::2])
    assert "unknown class 'hat'" in line


def test_a_bad_file_is_one_line_and_the_others_are_explained(models, files) -> None:
    code, out, err = explain(
        "--workdir", models["cnn"], files / "bad.png", files / "a.png", "--json"
    )
    line = error_line(code, err)
    assert "bad.png" in line
    rows = last_json(out)["explanations"]
    assert "error" in rows[0] and set(rows[1]["maps"]) == set(METHODS)


def test_dense_models_get_the_methods_that_apply(models, files) -> None:
    code, out, err = explain("--workdir", models["dense"], files / "a.png", "--json")
    assert code == 0, err
    assert set(last_json(out)["explanations"][0]["maps"]) == set(METHODS[:3])
    assert "gradcam skipped" in err and len(err.strip().splitlines()) == 1
    line = error_line(
        *explain("--workdir", models["dense"], files / "a.png", "--method", "gradcam")[::2]
    )
    assert "gradcam needs a conv layer" in line


def test_save_writes_a_png_per_file_and_method(models, files, tmp_path) -> None:
    argv = ("--workdir", models["cnn"], files / "a.png", files / "b.npy", "--save", tmp_path)
    code, out, err = explain(*argv)
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{s}-{m}.png" for s in ("a", "b") for m in METHODS)
    assert Image.open(tmp_path / "a-gradcam.png").size[0] > 100
    assert str(tmp_path / "a-saliency.png") in out


def test_confused_pairs_are_the_largest_off_diagonal_cells_most_confident_first() -> None:
    from fashion_jax.inference.mistakes import confused_pairs

    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    said = np.array([1, 1, 0, 1, 2, 0, 0, 0, 2])  # 0->1 twice, 2->0 three times, 1->2 once
    confidence = np.array([0.6, 0.9, 1, 1, 0.5, 0.7, 0.8, 0.75, 1])
    probs = np.full((9, 10), 0.01)
    probs[np.arange(9), said] = confidence
    groups = confused_pairs(probs, labels, pairs=2, per_pair=2)
    assert [(g["true"], g["predicted"], g["count"]) for g in groups] == [
        (CLASS_NAMES[2], CLASS_NAMES[0], 3),
        (CLASS_NAMES[0], CLASS_NAMES[1], 2),
    ]
    assert groups[0]["indices"] == [6, 7] and groups[1]["indices"] == [1, 0]

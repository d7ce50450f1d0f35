"""config: presets as data, overrides, validation, the JSON round trip,
and the registries' names."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from fashion_jax import config as config_lib
from fashion_jax.config import (
    DEFAULT_LEARNING_RATES,
    MODEL_DEFAULTS,
    PRESETS,
    ConfigError,
    ModelConfig,
    TrainConfig,
    model_config,
    preset,
)
from fashion_jax.model.models import MODELS
from fashion_jax.model.optim import OPTIMIZERS
from fashion_jax.storage import run_files


def test_registries_and_config_name_the_same_models_and_optimizers():
    assert set(MODELS) == set(MODEL_DEFAULTS)
    assert set(OPTIMIZERS) == set(DEFAULT_LEARNING_RATES)


def test_the_chapter_preset_is_the_chapters_final_setup():
    cfg = preset("chapter")
    assert cfg.model == model_config("cnn") and cfg.model.dropout == 0.4 and cfg.model.hidden == 100
    assert (cfg.optimizer, cfg.learning_rate, cfg.epochs, cfg.patience, cfg.batch_size) == (
        "adam",
        None,
        20,
        2,
        32,
    )
    assert cfg.monitor == "val_loss" and cfg.restore_best


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_and_holds_exactly_its_entries(name):
    cfg = config_lib.validate(preset(name))
    flat = {**run_files.to_dict(cfg), "model": cfg.model.name}
    for key, value in PRESETS[name].items():
        assert flat[key] == value, key
    untouched = {f.name for f in dataclasses.fields(TrainConfig)} - set(PRESETS[name]) - {"model"}
    for key in untouched:  # everything a preset does not name keeps the dataclass default
        assert getattr(cfg, key) == getattr(TrainConfig(), key), key


def test_overrides_apply_to_train_and_model_fields():
    cfg = preset("chapter", epochs=3, dropout=0.2, hidden=64, seed=7, filters=[8, 16])
    assert (cfg.epochs, cfg.seed) == (3, 7)
    assert cfg.model == dataclasses.replace(
        model_config("cnn"), dropout=0.2, hidden=64, filters=(8, 16)
    )
    assert preset("chapter", epochs=None) == preset("chapter")  # None means "not given"


def test_a_new_model_takes_its_own_defaults():
    assert preset("chapter", model="mlp").model == model_config("mlp")


def test_a_new_optimizer_drops_the_preset_rate_unless_a_rate_is_given():
    assert preset("fast").learning_rate == 3e-3
    assert preset("fast", optimizer="sgd").learning_rate is None
    assert preset("fast", optimizer="sgd", learning_rate=0.05).learning_rate == 0.05
    assert preset("fast", epochs=2).learning_rate == 3e-3


def test_no_preset_needs_a_model():
    assert preset(None, model="dense") == TrainConfig(model=model_config("dense"))
    with pytest.raises(ConfigError, match="a model is needed"):
        preset(None, epochs=2)


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("nope", {}, "unknown preset 'nope'"),
        ("chapter", {"epoch": 3}, "unknown setting 'epoch'"),
        ("chapter", {"model": "resnet"}, "unknown model 'resnet'"),
    ],
)
def test_bad_presets_and_overrides_are_one_line_errors(name, overrides, match):
    with pytest.raises(ConfigError, match=match):
        preset(name, **overrides)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"epochs": 0}, "--epochs must be positive"),
        ({"batch_size": -1}, "--batch-size must be positive"),
        ({"eval_batch_size": 0}, "--eval-batch-size must be positive"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
        ({"learning_rate": 0.0}, "--learning-rate must be positive"),
        ({"patience": -1}, "--patience must be >= 0"),
        ({"monitor": "loss"}, "--monitor must be one of"),
        ({"checkpoint_every": -5}, "--checkpoint-every must be >= 0"),
        ({"skip_nonfinite": -1}, "--skip-nonfinite must be >= 0"),
        ({"schedule": "linear"}, "unknown schedule 'linear'"),
        ({"model": ModelConfig(name="cnn", dropout=1.0)}, r"--dropout must be in \[0, 1\)"),
        ({"model": ModelConfig(name="cnn", activation="gelu")}, "unknown activation 'gelu'"),
        ({"model": ModelConfig(name="cnn", filters=(32, 0))}, "--filters must be positive"),
        ({"model": ModelConfig(name="cnn", padding="full")}, "--padding must be same or valid"),
        ({"model": ModelConfig(name="cnn", num_classes=5)}, "--num-classes must be at least 10"),
        ({"model": ModelConfig(name="vgg")}, "unknown model 'vgg'"),
    ],
)
def test_validate_refuses_each_bad_value_in_one_line(change, match):
    with pytest.raises(ConfigError, match=match) as err:
        config_lib.validate(dataclasses.replace(TrainConfig(), **change))
    assert "\n" not in str(err.value)


def test_json_round_trip_and_foreign_json(tmp_path):
    cfg = preset("fast", seed=3)
    run_files.save_json(cfg, tmp_path / "config.json")
    assert run_files.load_json(tmp_path / "config.json") == cfg
    assert not (tmp_path / "config.json.tmp").exists()
    (tmp_path / "other.json").write_text('{"model": {"name": "cnn"}, "layers": 3}')
    with pytest.raises(ConfigError, match="not a fashion_jax config"):
        run_files.load_json(tmp_path / "other.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a fashion_jax config"):
        run_files.load_json(tmp_path / "list.json")
    with pytest.raises(ConfigError, match="no config.json"):
        run_files.load_json(tmp_path / "absent.json")


def test_every_field_has_a_help_sentence():
    for cls in (ModelConfig, TrainConfig, config_lib.RunOptions, config_lib.CVOptions):
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(f.type) and f.name != "model":
                assert f.metadata.get("help"), f"{cls.__name__}.{f.name}"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(epochs="five"), "config key 'epochs' must be int, got 'five'"),
        (
            lambda d: d.update(learning_rate="fast"),
            "config key 'learning_rate' must be float or NoneType",
        ),
        (lambda d: d.update(restore_best=1), "config key 'restore_best' must be bool, got 1"),
        (lambda d: d["model"].update(hidden=1.5), "config key 'model.hidden' must be int, got 1.5"),
        (
            lambda d: d["model"].update(filters=[32, "x"]),
            "config key 'model.filters' must be a list",
        ),
        (lambda d: d.update(layers=3), "unknown key 'layers'"),
        (lambda d: d["model"].update(units=3), "unknown key 'model.units'"),
        (lambda d: d.pop("model"), "no model settings"),
    ],
)
def test_a_hand_edited_config_is_refused_in_one_line_naming_the_key(tmp_path, edit, message):
    raw = run_files.to_dict(preset("chapter"))
    edit(raw)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        run_files.load_json(tmp_path / "config.json")
    assert "\n" not in str(err.value)


def test_whole_numbers_are_fine_for_float_settings(tmp_path):
    raw = run_files.to_dict(preset("fast"))
    raw["learning_rate"], raw["min_delta"] = 1, 0
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert run_files.load_json(tmp_path / "config.json") == preset("fast", learning_rate=1.0)

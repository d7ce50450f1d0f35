"""Flags generated from the config dataclasses: one per field, named, typed and explained by it.

A config field's flag, type, choices and help sentence come from the field itself (config.py), so
a new field is a new flag with nothing to copy. Flags default to None ("not given"), so a preset
or the dataclass supplies the value and `config.preset` applies only what the user typed. Apart
from parser.py, which lays out the commands, because the handlers read flags back through
`given` and `dest` without needing any command's parser. Standard library and config.py only.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from fashion_jax.config import MODEL_DEFAULTS, PRESETS, ModelConfig, TrainConfig

# The classes whose fields are the model and training flags of train, cv and import.
CONFIG_CLASSES = (ModelConfig, TrainConfig)


def dest(f: dataclasses.Field) -> str:
    """The argparse destination (and `config.preset` override name) of a config field."""
    return f.metadata.get("flag", f.name)


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` that get a flag: all but nested configs (they bring their own)."""
    hints = typing.get_type_hints(cls)
    return [f for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name])]


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return "unset" if value is None else str(value)


def _default_text(cls: type, f: dataclasses.Field, presets: tuple[str, ...]) -> str:
    base = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    text = (
        f"default: {_show(base)}"
        if dest(f) != "model"
        else "default: the preset's; needed without --preset"
    )
    if cls is ModelConfig:
        per_model = [f"{m} {_show(d[f.name])}" for m, d in MODEL_DEFAULTS.items() if f.name in d]
        if per_model:
            text += f"; per model: {', '.join(per_model)}"
    by_preset = [f"{p} {_show(PRESETS[p][dest(f)])}" for p in presets if dest(f) in PRESETS[p]]
    return text + (f"; preset {', '.join(by_preset)}" if by_preset else "")


def add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, presets: tuple[str, ...] = ()
) -> None:
    """One flag per field of `cls`, named, typed, constrained and explained by the field."""
    hints = typing.get_type_hints(cls)
    for f in flag_fields(cls):
        kind = typing.get_args(hints[f.name]) or (hints[f.name],)
        kwargs: dict[str, Any] = {
            "dest": dest(f),
            "default": None,
            "help": f"{f.metadata['help']} ({_default_text(cls, f, presets)})",
        }
        if hints[f.name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if f.default else "store_true"
        elif typing.get_origin(hints[f.name]) is tuple:
            kwargs.update(type=kind[0], nargs="+", metavar="N")
        else:
            kwargs["type"] = next(t for t in kind if t is not type(None))
            kwargs["choices"] = f.metadata.get("choices")
        parser.add_argument("--" + dest(f).replace("_", "-"), **kwargs)


def given(args: argparse.Namespace, *classes: type) -> dict[str, Any]:
    """The values the user typed for the fields of `classes`, by override name."""
    return {
        dest(f): getattr(args, dest(f))
        for cls in classes
        for f in flag_fields(cls)
        if getattr(args, dest(f), None) is not None
    }


def describe_presets() -> str:
    """Every preset with its settings, for the help of --preset."""
    return ", ".join(
        f"{n} ({', '.join(f'{k}={_show(v)}' for k, v in PRESETS[n].items())})" for n in PRESETS
    )

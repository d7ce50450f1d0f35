"""The JSON files of a run: `config.json` (a `TrainConfig`, in every workdir and saved model) and
`history.jsonl` (one row per finished epoch).

Apart from config.py so that the settings themselves stay free of file I/O and parsing: the
flags, the presets and `--help` need only those, while every workdir reader needs this.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fashion_jax.config import ConfigError, ModelConfig, TrainConfig
from fashion_jax.files import atomic_write_text
from fashion_jax.limits import MAX_CONFIG_JSON_BYTES, LimitError, parse_json


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Inverse of to_dict. Every key must be a field and every value of the field's type, so a
    foreign or hand-edited JSON is refused in one line naming the key, never half-read."""
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise ConfigError("not a fashion_jax config: no model settings")
    model = _typed_fields(ModelConfig, raw["model"], "model.")
    return TrainConfig(**{**_typed_fields(TrainConfig, raw, ""), "model": ModelConfig(**model)})


def _typed_fields(cls: type, raw: dict[str, Any], prefix: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"not a fashion_jax config: unknown key '{prefix}{unknown[0]}'")
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in raw.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            continue  # the nested model, checked on its own
        if typing.get_origin(kind) is tuple:  # filters: JSON keeps it as a list of ints
            ok, want = isinstance(value, list) and all(_is(v, int) for v in value), "a list of ints"
        else:
            kinds = typing.get_args(kind) or (kind,)
            ok, want = any(_is(value, t) for t in kinds), " or ".join(t.__name__ for t in kinds)
        if not ok:
            raise ConfigError(f"config key '{prefix}{name}' must be {want}, got {value!r}")
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _is(value: Any, kind: type) -> bool:
    if kind is float:  # JSON writes 1.0 as 1.0 but a hand edit may write 1
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def save_json(config: TrainConfig, path: Path) -> None:
    atomic_write_text(path, json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n")


def load_json(path: Path) -> TrainConfig:
    try:
        with open(path, "rb") as f:  # never more than the limit, whatever the file's size
            raw = parse_json(f.read(MAX_CONFIG_JSON_BYTES + 1), "config.json")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no config.json; not a fashion_jax workdir") from None
    except LimitError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: unreadable config ({err.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a fashion_jax config")
    return from_dict(raw)


def write_history(path: Path, history: Sequence[dict]) -> None:
    """Rewrite the whole file atomically, so it always matches the checkpoint it came with."""
    atomic_write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in history))


def read_history(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

"""Early stopping as a pure state machine: `update(rule, state, epoch, metrics) -> state`.

It follows Keras's EarlyStopping: an epoch improves when it beats the best by more than
`min_delta` (ties do not improve), `patience` counts epochs without improvement, `start_epoch`
ignores warm-up epochs, and a NaN metric never improves. The state is plain data, so it rides
inside the checkpoint and a resumed run makes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fashion_jax.config import ConfigError


@dataclass(frozen=True)
class StopRule:
    monitor: str = "val_loss"
    mode: str = "auto"  # "min", "max", or "auto" (max for accuracies, min otherwise)
    patience: int | None = None  # None: track the best epoch but never stop
    min_delta: float = 0.0
    restore_best: bool = True
    start_epoch: int = 0

    @property
    def maximize(self) -> bool:
        if self.mode == "auto":
            return "acc" in self.monitor
        if self.mode not in ("min", "max"):
            raise ConfigError(f"early-stopping mode must be min, max or auto, got {self.mode!r}")
        return self.mode == "max"


@dataclass(frozen=True)
class StopState:
    best: float | None = None
    best_epoch: int = -1
    wait: int = 0
    stopped_epoch: int | None = None

    @property
    def should_stop(self) -> bool:
        return self.stopped_epoch is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StopState:
        return cls(**raw)


def is_improvement(rule: StopRule, value: float, best: float | None) -> bool:
    if math.isnan(value):
        return False
    if best is None:
        return True
    delta = abs(rule.min_delta)
    return value > best + delta if rule.maximize else value < best - delta


def update(rule: StopRule, state: StopState, epoch: int, metrics: Mapping[str, float]) -> StopState:
    """The state after `epoch` (0-based) finished with `metrics`."""
    if state.should_stop or epoch < rule.start_epoch:
        return state
    value = float(metrics[rule.monitor])
    if is_improvement(rule, value, state.best):
        return dataclasses.replace(state, best=value, best_epoch=epoch, wait=0)
    wait = state.wait + 1
    stop = rule.patience is not None and wait >= rule.patience
    return dataclasses.replace(state, wait=wait, stopped_epoch=epoch if stop else None)

"""Early stopping as a pure state machine, driven by scripted metric sequences."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fashion_jax.training import early_stopping as es
from fashion_jax.training.early_stopping import StopRule, StopState

NAN = float("nan")


def run(rule: StopRule, values: list[float], state: StopState | None = None) -> list[StopState]:
    """The state after each epoch of `values` (0-based epochs), as the fit loop feeds them."""
    state = state or StopState()
    states = []
    for epoch, value in enumerate(values):
        state = es.update(rule, state, epoch, {rule.monitor: value, "other": -1.0})
        states.append(state)
    return states


def test_min_mode_tracks_each_improvement():
    states = run(StopRule(monitor="val_loss"), [1.0, 0.8, 0.9, 0.5])
    assert [s.best for s in states] == [1.0, 0.8, 0.8, 0.5]
    assert [s.best_epoch for s in states] == [0, 1, 1, 3]
    assert [s.wait for s in states] == [0, 0, 1, 0]
    assert not any(s.should_stop for s in states)


def test_patience_counts_epochs_without_improvement_and_stops_at_the_right_epoch():
    states = run(StopRule(monitor="val_loss", patience=2), [1.0, 0.9, 0.95, 0.91, 0.5])
    assert [s.wait for s in states[:4]] == [0, 0, 1, 2]
    assert [s.should_stop for s in states] == [False, False, False, True, True]
    assert states[3].stopped_epoch == 3
    # Once stopped the state is frozen: the improving last value is ignored.
    assert states[4] == states[3]
    assert states[4].best == 0.9 and states[4].best_epoch == 1


def test_improvement_resets_wait():
    states = run(StopRule(monitor="val_loss", patience=3), [1.0, 1.1, 1.2, 0.7, 0.8, 0.9])
    assert [s.wait for s in states] == [0, 1, 2, 0, 1, 2]
    assert not states[-1].should_stop


def test_patience_one_stops_at_first_non_improvement():
    states = run(StopRule(monitor="val_loss", patience=1), [0.5, 0.4, 0.45])
    assert [s.stopped_epoch for s in states] == [None, None, 2]


def test_ties_do_not_improve():
    states = run(StopRule(monitor="val_loss", patience=2), [0.5, 0.5, 0.5])
    assert states[1].best_epoch == 0 and states[1].wait == 1
    assert states[2].stopped_epoch == 2
    maxed = run(StopRule(monitor="val_accuracy", patience=5), [0.7, 0.7])
    assert maxed[1].best_epoch == 0 and maxed[1].wait == 1


def test_min_delta_requires_a_margin():
    rule = StopRule(monitor="val_loss", min_delta=0.1)
    states = run(rule, [1.0, 0.95, 0.85, 0.7])
    # 0.95 is within 0.1 of 1.0; 0.85 beats 1.0 by more than 0.1, and 0.7 beats 0.85 by 0.15.
    assert [s.best_epoch for s in states] == [0, 0, 2, 3]
    assert [s.best for s in states] == [1.0, 1.0, 0.85, 0.7]
    assert [s.wait for s in states] == [0, 1, 0, 0]
    # Keras takes |min_delta|: a negative value means the same margin.
    assert run(StopRule(monitor="val_loss", min_delta=-0.1), [1.0, 0.95])[1].best_epoch == 0


def test_min_delta_in_max_mode():
    states = run(StopRule(monitor="val_accuracy", min_delta=0.02), [0.80, 0.81, 0.83])
    assert [s.best_epoch for s in states] == [0, 0, 2]


@pytest.mark.parametrize(
    "monitor, maximize",
    [("val_accuracy", True), ("accuracy", True), ("val_loss", False), ("loss", False)],
)
def test_auto_mode_maximizes_accuracies_only(monitor, maximize):
    assert StopRule(monitor=monitor).maximize is maximize


def test_max_mode_for_val_accuracy_auto():
    states = run(StopRule(monitor="val_accuracy", patience=2), [0.5, 0.6, 0.55, 0.58])
    assert [s.best for s in states] == [0.5, 0.6, 0.6, 0.6]
    assert states[-1].best_epoch == 1 and states[-1].stopped_epoch == 3


def test_explicit_modes_override_auto():
    assert run(StopRule(monitor="val_accuracy", mode="min"), [0.5, 0.4])[-1].best_epoch == 1
    assert run(StopRule(monitor="val_loss", mode="max"), [0.5, 0.6])[-1].best_epoch == 1
    with pytest.raises(ValueError, match="mode"):
        _ = StopRule(mode="sideways").maximize


def test_start_epoch_ignores_warm_up_epochs():
    rule = StopRule(monitor="val_loss", patience=1, start_epoch=2)
    states = run(rule, [0.1, 5.0, 1.0, 2.0])
    # Epochs 0 and 1 are invisible: neither the great 0.1 nor the bad 5.0 counts.
    assert states[0] == StopState() and states[1] == StopState()
    assert states[2].best == 1.0 and states[2].best_epoch == 2
    assert states[3].stopped_epoch == 3


def test_nan_never_improves_and_counts_toward_patience():
    states = run(StopRule(monitor="val_loss", patience=2), [1.0, NAN, NAN])
    assert [s.best for s in states] == [1.0, 1.0, 1.0]
    assert [s.wait for s in states] == [0, 1, 2]
    assert states[2].stopped_epoch == 2
    assert not es.is_improvement(StopRule(), NAN, None)
    assert not es.is_improvement(StopRule(), NAN, 1.0)


def test_nan_first_epoch_leaves_best_none():
    states = run(StopRule(monitor="val_loss", patience=3), [NAN, 2.0])
    assert states[0].best is None and states[0].best_epoch == -1 and states[0].wait == 1
    assert states[1].best == 2.0 and states[1].best_epoch == 1 and states[1].wait == 0


def test_patience_none_never_stops():
    states = run(StopRule(monitor="val_loss", patience=None), [1.0] + [2.0] * 50)
    assert states[-1].wait == 50 and not states[-1].should_stop
    assert states[-1].best_epoch == 0


def test_state_round_trips_through_dict_and_json():
    states = run(StopRule(monitor="val_loss", patience=2), [NAN, 1.0, 1.5, 1.2])
    for state in [StopState(), *states]:
        raw = json.loads(json.dumps(state.to_dict()))  # what the checkpoint's JSON meta stores
        assert StopState.from_dict(raw) == state
    assert states[-1].should_stop
    assert StopState.from_dict(states[-1].to_dict()).should_stop


def test_resumed_state_makes_the_same_decisions():
    rule = StopRule(monitor="val_loss", patience=2)
    values = [1.0, 0.9, 0.95, 0.97]
    whole = run(rule, values)
    state = StopState.from_dict(json.loads(json.dumps(whole[1].to_dict())))
    for epoch in (2, 3):
        state = es.update(rule, state, epoch, {"val_loss": values[epoch]})
    assert state == whole[-1]


floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32), st.just(NAN))


@settings(max_examples=200, deadline=None)
@given(st.lists(floats, min_size=1, max_size=30))
def test_best_is_min_of_non_nan_values_and_best_epoch_points_at_it(values):
    state = StopState()
    rule = StopRule(monitor="val_loss", mode="min", min_delta=0.0, patience=None)
    for epoch, value in enumerate(values):
        state = es.update(rule, state, epoch, {"val_loss": value})
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        assert state.best is None and state.best_epoch == -1
        return
    assert state.best == min(finite)
    assert values[state.best_epoch] == state.best
    # Ties do not improve: best_epoch is the first epoch that reached the minimum.
    assert state.best_epoch == next(i for i, v in enumerate(values) if v == min(finite))
    assert state.wait == len(values) - 1 - state.best_epoch

"""Slot arithmetic, scheduler configuration and the assignment policies on hand-made inputs."""

from datetime import UTC, datetime

import numpy as np
import pytest

from skyhaul.core.scheduler import (
    SchedulerConfig,
    assign,
    candidates,
    remaining_visibility_s,
    slot_bounds,
    slot_index,
    slot_start,
)


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_default_slots_start_at_12_27_42_57_of_every_utc_minute():
    rng = np.random.default_rng(1)
    t = _utc("2020-10-30T00:00:00") + rng.uniform(0, 86400 * 3, 5000)
    start = slot_start(t)
    assert set(np.unique(np.round(start % 60).astype(int))) == {12, 27, 42, 57}
    assert np.all(start <= t) and np.all(t < start + 15)
    # A slot is identified by its index; consecutive indices are 15 s apart.
    k = slot_index(t)
    assert np.allclose(slot_start(12.0 + 15.0 * k), start)


def test_a_time_exactly_on_a_boundary_belongs_to_the_new_slot():
    t0 = _utc("2021-04-01T10:20:27")
    assert slot_start(t0) == t0
    assert slot_start(t0 - 1e-3) == t0 - 15
    assert slot_bounds(t0 + 14.9) == (t0, t0 + 15)
    assert slot_index(t0) == slot_index(t0 - 1e-3) + 1


def test_interval_and_offset_are_configurable():
    cfg = SchedulerConfig(slot_interval_s=30, slot_offset_s=5)
    t = _utc("2022-01-01T00:00:00") + np.arange(0, 600, 0.7)
    start = cfg.slot_start(t)
    assert set(np.unique(np.round(start % 60).astype(int))) == {5, 35}
    assert np.all((start <= t) & (t < start + 30))
    # Continuous mode decides at the time itself.
    assert SchedulerConfig(mode="continuous").decision_time(t[3]) == t[3]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"policy": "nearest"}, ["scheduler.policy", "nearest", "highest-elevation"]),
        ({"gateway_policy": "random"}, ["scheduler.gateway_policy", "random"]),
        ({"mode": "sometimes"}, ["scheduler.mode", "sometimes"]),
        ({"isl": "laser-mesh"}, ["scheduler.isl", "+grid"]),
        ({"slot_interval_s": 0}, ["scheduler.slot_interval_s", "> 0"]),
        ({"slot_interval_s": -15}, ["scheduler.slot_interval_s"]),
        ({"slot_interval_s": float("nan")}, ["scheduler.slot_interval_s"]),
        ({"sample_step_s": 0}, ["scheduler.sample_step_s"]),
        ({"sample_step_s": 20}, ["sample_step_s", "longer than the slot interval"]),
        ({"handover_stall_ms": -1}, ["scheduler.handover_stall_ms"]),
        ({"beam_capacity_mbps": 0}, ["scheduler.beam_capacity_mbps"]),
    ],
)
def test_bad_configuration_is_refused_with_the_field_named(kwargs, words):
    with pytest.raises(ValueError) as err:
        SchedulerConfig(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_slot_functions_refuse_a_non_positive_interval():
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="interval"):
            slot_index(100.0, bad)


def test_unknown_policy_is_refused_by_assign():
    with pytest.raises(ValueError, match="unknown assignment policy 'closest'"):
        assign("closest", np.zeros((1, 2)), np.ones((1, 2), bool))
    with pytest.raises(ValueError, match="routing picks"):
        assign("shortest-path", np.zeros((1, 2)), np.ones((1, 2), bool))


def test_highest_elevation_picks_the_highest_allowed_and_breaks_ties_by_lowest_index():
    elev = np.array([[30.0, 80.0, 60.0, 80.0], [40.0, 40.0, 10.0, 89.0], [50.0, 50.0, 50.0, 50.0]])
    allowed = np.array([[True, True, True, True], [True, True, True, False], [False, False, False, False]])
    assert assign("highest-elevation", elev, allowed).tolist() == [1, 0, -1]


def test_least_loaded_spreads_terminals_over_beams_deterministically():
    # Four terminals all see satellites 2 and 5 (5 higher); equal demand: they alternate,
    # the first taking the higher satellite on an empty beam.
    elev = np.zeros((4, 6))
    elev[:, 2] = 40.0
    elev[:, 5] = 70.0
    allowed = elev > 0
    first = assign("least-loaded", elev, allowed, demand_mbps=np.full(4, 100.0))
    assert first.tolist() == [5, 2, 5, 2]
    assert assign("least-loaded", elev, allowed, demand_mbps=np.full(4, 100.0)).tolist() == first.tolist()
    # A heavy first terminal fills one beam; the others go to the other one.
    heavy = assign("least-loaded", elev, allowed, demand_mbps=np.array([1000.0, 10.0, 10.0, 10.0]))
    assert heavy.tolist() == [5, 2, 2, 2]


def test_remaining_visibility_interpolates_the_setting_time():
    mask = np.array([25.0])
    # Satellite 0 sets between 20 s and 30 s (crossing at 25 s); 1 never sets within the horizon;
    # 2 is below the mask now.
    e = np.array(
        [
            [[40.0, 60.0, 10.0]],
            [[35.0, 61.0, 30.0]],
            [[30.0, 62.0, 40.0]],
            [[20.0, 63.0, 50.0]],
            [[10.0, 64.0, 60.0]],
        ]
    )
    rem = remaining_visibility_s(e, mask, 10.0)
    assert rem[0, 0] == pytest.approx(25.0)
    assert rem[0, 1] == pytest.approx(40.0)
    assert rem[0, 2] == 0.0
    allowed = e[0] >= 25
    assert assign("longest-visibility", e[0], allowed, remaining_s=rem).tolist() == [1]


def test_candidates_prefer_satellites_visible_for_the_whole_slot():
    now = np.array([[True, True, False], [True, False, False], [False, False, False]])
    end = np.array([[False, True, True], [False, False, True], [False, True, False]])
    got = candidates(now, end)
    # Node 0 has a whole-slot satellite (1); node 1 has none so keeps what it sees now; node 2 sees nothing now.
    assert got.tolist() == [[False, True, False], [True, False, False], [False, False, False]]

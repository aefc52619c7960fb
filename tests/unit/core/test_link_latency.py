"""The terminal latency/loss model: determinism, the propagation switch, each component's shape."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from skyhaul.core.latency import (
    PROPAGATION,
    STARLINK,
    LatencyParams,
    PathProfile,
    default_params,
    expected_loss,
    fibre_rtt_ms,
    offset_source_slots,
    terminal_samples,
    terrestrial_rtt_ms,
)

T0 = 1_725_927_972.0  # :12 of a UTC minute (a slot start)
TIMES = T0 + np.arange(0.0, 120.0, 0.01)
FLOOR = 9.5 + 0.5 * np.sin(TIMES / 40.0)


def _samples(params=STARLINK, seed=1, terminal="victoria", times=TIMES, floor=FLOOR, laser=False):
    return terminal_samples(times, floor, params, seed=seed, terminal_id=terminal, laser=laser)


def test_same_seed_and_terminal_give_bit_identical_samples():
    a, b = _samples(), _samples()
    assert np.array_equal(a.rtt_ms, b.rtt_ms, equal_nan=True)
    assert np.array_equal(a.lost, b.lost)
    assert a.rtt_ms.tobytes() == b.rtt_ms.tobytes()


def test_a_subset_of_times_in_any_order_gets_the_same_values():
    full = _samples()
    pick = np.random.default_rng(5).permutation(TIMES.size)[:500]
    part = _samples(times=TIMES[pick], floor=FLOOR[pick])
    assert np.array_equal(part.model_rtt_ms, full.model_rtt_ms[pick])
    assert np.array_equal(part.lost, full.lost[pick])


def test_another_process_draws_the_same_bits():
    code = (
        "import numpy as np, sys;"
        "from skyhaul.core.latency import STARLINK, terminal_samples;"
        f"t = {T0} + np.arange(0.0, 120.0, 0.01);"
        "s = terminal_samples(t, 9.5 + 0.5 * np.sin(t / 40.0), STARLINK, seed=1, terminal_id='victoria');"
        "sys.stdout.write(s.model_rtt_ms.tobytes().hex())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert bytes.fromhex(out.stdout) == _samples().model_rtt_ms.tobytes()


def test_different_terminal_or_seed_draws_differently():
    base = _samples().model_rtt_ms
    assert not np.array_equal(base, _samples(terminal="calgary").model_rtt_ms)
    assert not np.array_equal(base, _samples(seed=2).model_rtt_ms)


def test_propagation_mode_is_the_floor_exactly():
    floor = FLOOR.copy()
    floor[100:200] = np.nan  # an outage stays an outage
    s = _samples(PROPAGATION, floor=floor)
    assert np.array_equal(s.rtt_ms, floor, equal_nan=True)
    assert not s.lost.any()
    assert default_params("kuiper-630") is PROPAGATION
    assert default_params("starlink-gen1") is STARLINK


def test_components_add_up_and_sit_above_the_floor():
    s = _samples()
    assert np.allclose(s.model_rtt_ms, s.floor_ms + s.access_ms + s.offset_ms + s.jitter_ms + s.spike_ms)
    assert np.all(s.jitter_ms >= 0) and np.all(s.offset_ms >= 0)
    assert np.all(s.access_ms == STARLINK.bent_pipe.access_ms)


def test_offset_is_constant_within_a_slot_and_redrawn_across_slots():
    s = _samples()
    slot = np.floor((TIMES - 12.0) / 15.0)
    for k in np.unique(slot):
        assert np.ptp(s.offset_ms[slot == k]) == 0.0
    assert np.unique(s.offset_ms).size > 1


def test_kept_offsets_follow_the_keep_probability():
    slots = np.arange(100_000)
    never = offset_source_slots(slots, 0.0, 1, "x")
    assert np.array_equal(never, slots)
    source = offset_source_slots(slots, 0.6, 1, "x")
    kept = np.mean(source[1:] != slots[1:])
    assert abs(kept - 0.6) < 0.01
    assert np.all(source <= slots)


def test_spike_decays_after_the_boundary():
    s = _samples()
    pos = (TIMES - 12.0) % 15.0
    prof = STARLINK.bent_pipe
    first = s.spike_ms[(pos >= prof.spike_delay_s) & (pos < prof.spike_delay_s + 0.01)]
    assert np.allclose(first, prof.spike_height_ms, rtol=0.2)
    assert np.all(s.spike_ms[pos > 1.0] < 0.01 * prof.spike_height_ms)


def test_jitter_has_the_configured_mean():
    s = _samples(times=T0 + np.arange(0, 3600, 0.01), floor=9.5)
    assert s.jitter_ms.mean() == pytest.approx(STARLINK.bent_pipe.jitter_mean_ms, rel=0.03)


def test_laser_loss_gathers_at_the_boundary():
    times = T0 + np.arange(0, 1800, 0.01)
    s = _samples(times=times, floor=60.0, laser=True)
    pos = (times - 12.0) % 15.0
    prof = STARLINK.laser
    near = (pos < prof.loss_after_s) | (pos >= 15.0 - prof.loss_before_s)
    assert s.lost[near].mean() == pytest.approx(prof.loss_boundary, abs=0.02)
    assert s.lost[~near].mean() == pytest.approx(prof.loss_base, abs=0.001)
    assert s.lost.mean() == pytest.approx(
        expected_loss(times[0], times[-1] + 0.01, STARLINK, laser=True), rel=0.05
    )
    assert np.all(np.isnan(s.rtt_ms[s.lost]))


def test_per_sample_path_kind_picks_the_profile():
    laser = np.zeros(TIMES.size, dtype=bool)
    laser[TIMES.size // 2 :] = True
    s = _samples(laser=laser)
    assert np.all(s.access_ms[~laser] == STARLINK.bent_pipe.access_ms)
    assert np.all(s.access_ms[laser] == STARLINK.laser.access_ms)


def test_terrestrial_rtt_is_fibre_at_c_over_1_47():
    # Bellingham -> Seattle PoP, ~128 km great circle
    rtt = terrestrial_rtt_ms(48.774, -122.44858, 47.61445, -122.33868)
    assert rtt == pytest.approx(2e3 * 129.2 * 1.5 * 1.47 / 299792.458, rel=0.01)
    assert fibre_rtt_ms(1000.0) == pytest.approx(9.807, rel=1e-3)
    longer = terrestrial_rtt_ms(48.774, -122.44858, 47.61445, -122.33868, 37.37, -79.84)
    assert longer > rtt + 30.0


@pytest.mark.parametrize(
    "change",
    [{"loss_base": 1.5}, {"jitter_shape": 0.0}, {"access_ms": -1.0}, {"spike_decay_s": float("nan")}],
)
def test_bad_parameters_are_refused(change):
    with pytest.raises(ValueError, match=next(iter(change))):
        dataclasses.replace(STARLINK.bent_pipe, **change)


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="link_model"):
        LatencyParams(mode="fancy")
    with pytest.raises(ValueError, match="finite"):
        terminal_samples(np.array([np.nan]), 1.0, STARLINK, seed=0, terminal_id="x")
    assert isinstance(STARLINK.laser, PathProfile)


def test_calibration_recovers_the_parameters_it_was_generated_with():
    from skyhaul.core.calibrate import calibrate
    from skyhaul.core.traces import Trace

    times = T0 + np.arange(0.0, 3600.0, 0.01)
    for laser in (False, True):
        truth = STARLINK.profile(laser)
        floor = 60.0 if laser else 9.5
        samples = terminal_samples(times, floor, STARLINK, seed=11, terminal_id="synthetic", laser=laser)
        fit = calibrate(Trace(times, samples.rtt_ms, "csv"), floor, laser=laser).params.profile(laser)
        assert fit.access_ms == pytest.approx(truth.access_ms, abs=1.0)
        assert fit.jitter_mean_ms == pytest.approx(truth.jitter_mean_ms, rel=0.05)
        assert fit.spike_height_ms == pytest.approx(truth.spike_height_ms, rel=0.25)
        assert fit.spike_delay_s == pytest.approx(truth.spike_delay_s, abs=0.03)
        assert fit.offset_high_prob == pytest.approx(truth.offset_high_prob, abs=0.12)
        assert fit.loss_base == pytest.approx(truth.loss_base, rel=0.3, abs=5e-4)
        assert fit.loss_boundary == pytest.approx(truth.loss_boundary, abs=0.1)

"""Passes over a ground point: checked against exact SGP4 elevations and a brute-force 1 s scan."""

import numpy as np
import pytest

from skyhaul.core.constellations import build_preset
from skyhaul.core.geometry import GroundPoints
from skyhaul.core.passes import MAX_WINDOW_S, find_passes
from skyhaul.core.propagate import Propagator

EPOCH = 1604016000.0  # 2020-10-30T00:00:00Z
SITE = (47.233, -119.852, 0.4)  # Quincy, WA
MASK = 25.0
WINDOW = (EPOCH + 600.0, EPOCH + 600.0 + 5400.0)
SATS = np.arange(0, 792, 2)


@pytest.fixture(scope="module")
def propagator():
    return Propagator(build_preset("starlink-2020-10", EPOCH))


@pytest.fixture(scope="module")
def passes(propagator):
    return find_passes(propagator, *SITE, *WINDOW, MASK, satellite_indices=SATS)


def _exact_elevation(propagator, satellite, t):
    """SGP4 elevation of one satellite at the given times (no interpolation)."""
    state = propagator.subset([satellite]).ecef(np.atleast_1d(np.asarray(t, dtype=float)))
    return GroundPoints(*SITE).elevation(state.r_km)[:, 0]


def _brute_force(propagator):
    """(satellite, first visible second, last visible second) from a 1 s scan."""
    times = np.arange(WINDOW[0], WINDOW[1] + 0.5, 1.0)
    subset = propagator.subset(SATS)
    ground = GroundPoints(*SITE)
    visible = np.concatenate([ground.elevation(s.r_km) >= MASK for s in subset.iter_ecef(times, chunk=900)])
    found = []
    for column, satellite in enumerate(SATS):
        padded = np.r_[False, visible[:, column], False].astype(np.int8)
        edges = np.diff(padded)
        for first, after in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            found.append((int(satellite), times[first], times[after - 1]))
    return found


def test_same_passes_as_a_one_second_scan(propagator, passes):
    brute = _brute_force(propagator)
    assert len(brute) > 50
    ours = {(p.satellite_index, round(p.rise_unix)): p for p in passes}
    for satellite, first, last in brute:
        match = [
            p
            for p in passes
            if p.satellite_index == satellite
            and first - 1.0 < p.rise_unix <= first
            and last <= p.set_unix < last + 1.0
        ]
        assert len(match) == 1, (satellite, first, last)
    # Anything else we found is shorter than the scan's resolution.
    extra = len(ours) - len(brute)
    assert extra >= 0
    assert sum(p.duration_s < 1.0 for p in passes) >= extra


def test_rise_and_set_sit_on_the_mask(propagator, passes):
    checked = 0
    for p in passes:
        if not p.rise_clipped:
            assert abs(_exact_elevation(propagator, p.satellite_index, p.rise_unix)[0] - MASK) < 0.01
            checked += 1
        if not p.set_clipped:
            assert abs(_exact_elevation(propagator, p.satellite_index, p.set_unix)[0] - MASK) < 0.01
        assert p.rise_unix <= p.culmination_unix <= p.set_unix
        assert p.duration_s == pytest.approx(p.set_unix - p.rise_unix)
        assert 0.0 <= p.rise_azimuth_deg < 360.0 and 0.0 <= p.set_azimuth_deg < 360.0
    assert checked > 50


def test_culmination_is_the_maximum(propagator, passes):
    for p in passes[:40]:
        around = p.culmination_unix + np.array([-2.0, 0.0, 2.0])
        around = np.clip(around, p.rise_unix, p.set_unix)
        el = _exact_elevation(propagator, p.satellite_index, around)
        assert el[1] >= el[0] - 1e-9 and el[1] >= el[2] - 1e-9
        assert abs(el[1] - p.max_elevation_deg) < 0.01
        assert p.max_elevation_deg >= MASK


def test_sorted_by_rise(passes):
    rises = [p.rise_unix for p in passes]
    assert rises == sorted(rises)


def test_minimum_duration_filter(propagator, passes):
    long_ones = find_passes(propagator, *SITE, *WINDOW, MASK, min_duration_s=120.0, satellite_indices=SATS)
    expected = [(p.satellite_index, p.rise_unix) for p in passes if p.duration_s >= 120.0]
    assert [(p.satellite_index, p.rise_unix) for p in long_ones] == expected
    assert 0 < len(long_ones) < len(passes)


def test_window_edges_clip_and_flag(propagator, passes):
    full = next(p for p in passes if not p.rise_clipped and not p.set_clipped and p.duration_s > 100)
    middle = 0.5 * (full.rise_unix + full.set_unix)
    head = find_passes(
        propagator, *SITE, middle, middle + 3600.0, MASK, satellite_indices=[full.satellite_index]
    )
    tail = find_passes(
        propagator, *SITE, middle - 3600.0, middle, MASK, satellite_indices=[full.satellite_index]
    )
    cut_start = next(p for p in head if p.rise_unix == middle)
    assert cut_start.rise_clipped and not cut_start.set_clipped
    assert cut_start.set_unix == pytest.approx(full.set_unix, abs=1e-3)
    assert cut_start.duration_s == pytest.approx(full.set_unix - middle, abs=1e-3)
    cut_end = next(p for p in tail if p.set_unix == middle)
    assert cut_end.set_clipped and not cut_end.rise_clipped
    assert cut_end.rise_unix == pytest.approx(full.rise_unix, abs=1e-3)
    # The culmination of a clipped pass is the highest point inside the window.
    for p in (cut_start, cut_end):
        assert p.rise_unix <= p.culmination_unix <= p.set_unix
        assert p.max_elevation_deg >= _exact_elevation(propagator, p.satellite_index, middle)[0] - 1e-6


def test_a_coarse_step_finds_the_same_passes(propagator, passes):
    # 120 s is 4x the default: short grazing passes then fall between samples and must come from the
    # refinement of local elevation maxima.
    coarse = find_passes(propagator, *SITE, *WINDOW, MASK, satellite_indices=SATS, coarse_step_s=120.0)
    assert len(coarse) == len(passes)
    assert any(p.duration_s < 120.0 and not p.rise_clipped and not p.set_clipped for p in passes)
    for a, b in zip(coarse, passes, strict=True):
        assert a.satellite_index == b.satellite_index
        assert abs(a.rise_unix - b.rise_unix) < 0.05 and abs(a.set_unix - b.set_unix) < 0.05


def test_a_pass_shorter_than_the_scan_step_is_found(propagator, passes):
    # Put the mask 0.02 deg under a pass's peak: the pass then lasts a few seconds. The window puts the
    # 40 s scan's samples 20 s either side of the peak, so no sample sees it above the mask and only the
    # refinement of the local elevation maximum can reveal it.
    full = next(p for p in passes if not p.rise_clipped and not p.set_clipped)
    mask = full.max_elevation_deg - 0.02
    window = (full.culmination_unix - 1020.0, full.culmination_unix + 980.0)
    found = find_passes(
        propagator, *SITE, *window, mask, satellite_indices=[full.satellite_index], coarse_step_s=40.0
    )
    assert len(found) == 1
    grazing = found[0]
    assert grazing.duration_s < 20.0
    assert abs(grazing.culmination_unix - full.culmination_unix) < 0.5
    for t in (grazing.rise_unix, grazing.set_unix):
        assert abs(_exact_elevation(propagator, full.satellite_index, t)[0] - mask) < 0.001


def test_indices_refer_to_the_full_constellation(propagator, passes):
    picked = sorted({p.satellite_index for p in passes})[:3]
    subset = find_passes(propagator, *SITE, *WINDOW, MASK, satellite_indices=picked)
    assert {p.satellite_index for p in subset} == set(picked)
    assert [(p.satellite_index, p.rise_unix) for p in subset] == [
        (p.satellite_index, p.rise_unix) for p in passes if p.satellite_index in picked
    ]


def test_meo_passes_are_long():
    o3b = Propagator(build_preset("o3b-meo", EPOCH))
    result = find_passes(o3b, 0.0, 10.0, 0.0, EPOCH, EPOCH + 86400.0, 10.0)
    assert result and all(p.duration_s > 3600.0 or p.rise_clipped or p.set_clipped for p in result)
    for p in result[:5]:
        if not p.rise_clipped:
            assert abs(_exact_elevation_at(o3b, p.satellite_index, p.rise_unix) - 10.0) < 0.01


def _exact_elevation_at(propagator, satellite, t):
    state = propagator.subset([satellite]).ecef(np.array([t]))
    return float(GroundPoints(0.0, 10.0, 0.0).elevation(state.r_km)[0, 0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lat_deg": 91.0}, "latitude 91 is outside"),
        ({"end_unix": EPOCH}, "at or before it starts"),
        ({"end_unix": EPOCH - 10.0}, "at or before it starts"),
        ({"end_unix": EPOCH + MAX_WINDOW_S + 1.0}, "days long; at most 14 days"),
        ({"min_elevation_deg": 95.0}, "minimum elevation 95 is outside"),
        ({"min_duration_s": -1.0}, "minimum duration -1 s must not be negative"),
        ({"coarse_step_s": 0.0}, "coarse step 0 s must be positive"),
        ({"coarse_step_s": 1e-4}, "too much work for one call"),
        ({"satellite_indices": [0, 5000]}, "satellite_indices must lie in"),
        ({"lon_deg": float("nan")}, "longitude must be a finite number"),
    ],
)
def test_bad_input_is_rejected(propagator, kwargs, message):
    arguments = {
        "lat_deg": SITE[0],
        "lon_deg": SITE[1],
        "alt_km": SITE[2],
        "start_unix": EPOCH,
        "end_unix": EPOCH + 600.0,
        "min_elevation_deg": MASK,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError) as caught:
        find_passes(propagator, **arguments)
    assert message in str(caught.value)

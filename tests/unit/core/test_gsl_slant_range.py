"""Hypatia's maximum slant range rule beside the elevation mask."""

from __future__ import annotations

import numpy as np
import pytest

from skyhaul.core.constellations import build_preset
from skyhaul.core.frames import geodetic_to_ecef
from skyhaul.core.geometry import GroundPoints
from skyhaul.core.gsl import (
    GslRule,
    elevation_for_slant_range_deg,
    hypatia_max_gsl_length_km,
    slant_range_for_elevation_km,
)
from skyhaul.core.propagate import Propagator

T0 = 1_700_000_000.0


def _ground(points):
    lat = np.array([p[0] for p in points])
    lon = np.array([p[1] for p in points])
    ecef = np.asarray(geodetic_to_ecef(lat, lon, 0.0), dtype=float).reshape(-1, 3)
    la, lo = np.radians(lat), np.radians(lon)
    up = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)
    return ecef, up


def test_hypatia_numbers():
    # Hypatia's Kuiper-630 setup: cone radius 630 km / tan 30 deg, max GSL sqrt(cone^2 + h^2).
    assert hypatia_max_gsl_length_km(630.0, 30.0) == pytest.approx(1260.0)
    assert hypatia_max_gsl_length_km(550.0, 25.0) == pytest.approx(550.0 / np.sin(np.radians(25.0)))


def test_elevation_and_slant_range_convert_both_ways():
    e = np.array([10.0, 25.0, 30.0, 60.0, 90.0])
    d = slant_range_for_elevation_km(e, 550.0)
    assert d[-1] == pytest.approx(550.0)
    assert np.all(np.diff(d) < 0)
    assert elevation_for_slant_range_deg(d, 550.0) == pytest.approx(e)


def test_visible_set_is_every_satellite_within_the_range():
    elements = build_preset("kuiper-630", T0)
    sat = np.asarray(Propagator(elements).ecef(T0).r_km, dtype=float)
    ecef, up = _ground([(47.6, -122.3), (-4.68, 55.49), (0.0, 0.0), (40.0, 10.0)])
    rule = GslRule.hypatia(630.0, 30.0)
    visible = rule.visible(ecef, up, sat)
    # The range computed by the core's look-angle geometry (an independent path), to the satellite.
    points = GroundPoints(np.array([47.6, -4.68, 0.0, 40.0]), np.array([-122.3, 55.49, 0.0, 10.0]))
    assert np.array_equal(visible, points.range_km(sat) <= 1260.0)
    assert visible.any(axis=1).all()
    # Hypatia's range admits more than the true 30 deg mask: every satellite above 30 deg is in range.
    mask = GslRule("elevation", 30.0).visible(ecef, up, sat)
    assert np.all(visible[mask]) and visible.sum() > mask.sum()


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="max_range_km"):
        GslRule("slant-range", 25.0, None)
    with pytest.raises(ValueError, match="not one of"):
        GslRule("cone")

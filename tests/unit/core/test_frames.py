"""Time scales, TEME -> Earth-fixed, WGS84 conversions and look angles."""

import math

import numpy as np
import pytest
from sgp4.propagation import gstime

from skyhaul.core.constants import EARTH_ROTATION_RAD_S, WGS84_A_KM, WGS84_B_KM
from skyhaul.core.frames import (
    ecef_to_geodetic,
    geodetic_to_ecef,
    gmst_rad,
    jd_to_unix,
    teme_to_ecef,
    unix_to_jd,
)
from skyhaul.core.geometry import GroundPoints, elevation_mask, enu_rotation, look_angles, slant_range_km

RNG = np.random.default_rng(20201030)


def test_unix_to_split_julian_date():
    whole, frac = unix_to_jd(np.array([0.0, 946728000.0, 1604016000.25, -43200.0]))
    np.testing.assert_array_equal(whole, [2440587.5, 2451544.5, 2459152.5, 2440586.5])
    np.testing.assert_allclose(frac, [0.0, 0.5, 0.25 / 86400.0, 0.5], rtol=0, atol=1e-15)
    t = RNG.uniform(0, 2e9, 100)
    np.testing.assert_allclose(jd_to_unix(*unix_to_jd(t)), t, rtol=0, atol=1e-6)
    assert unix_to_jd(1604016000.0)[0].shape == ()


def test_gmst_matches_sgp4s_own_sidereal_time():
    t = np.concatenate([[946728000.0], RNG.uniform(3e8, 2e9, 50)])
    whole, frac = unix_to_jd(t)
    reference = np.array([gstime(w + f) for w, f in zip(whole, frac, strict=True)])
    difference = np.angle(np.exp(1j * (gmst_rad(t) - reference)))
    # gstime takes one float64 Julian date (~40 us resolution): agreement is limited by that, not by us.
    assert np.max(np.abs(difference)) < 5e-9
    assert np.all((gmst_rad(t) >= 0) & (gmst_rad(t) < 2 * math.pi))
    # The rotation rate used for Earth-fixed velocities is the derivative of this GMST.
    rate = (gmst_rad(1604016100.0) - gmst_rad(1604016000.0)) / 100.0
    assert rate == pytest.approx(EARTH_ROTATION_RAD_S, rel=1e-9)


def test_teme_to_ecef_broadcasts_over_leading_axes():
    r = RNG.normal(size=(4, 5, 3)) * 7000.0
    t = 1604016000.0 + np.arange(4) * 60.0
    out = teme_to_ecef(r, t)
    for i in range(4):
        np.testing.assert_allclose(out[i], teme_to_ecef(r[i], t[i]), rtol=0, atol=1e-9)
    theta = gmst_rad(t[2])
    x, y = r[2, 3, 0], r[2, 3, 1]
    np.testing.assert_allclose(
        out[2, 3],
        [x * math.cos(theta) + y * math.sin(theta), -x * math.sin(theta) + y * math.cos(theta), r[2, 3, 2]],
    )
    with pytest.raises(ValueError, match="time shape"):
        teme_to_ecef(r, np.zeros(5))
    with pytest.raises(ValueError, match="last axis of 3"):
        teme_to_ecef(np.zeros((4, 2)), 0.0)
    with pytest.raises(ValueError, match="velocity shape"):
        teme_to_ecef(r, t, np.zeros((4, 5, 2)))


def test_geodetic_known_points():
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 0.0, 0.0), [WGS84_A_KM, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(geodetic_to_ecef(90.0, 123.0, 0.0), [0.0, 0.0, WGS84_B_KM], atol=1e-9)
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 90.0, 1.0), [0.0, WGS84_A_KM + 1.0, 0.0], atol=1e-9)
    lat, lon, alt = ecef_to_geodetic(np.array([0.0, 0.0, -WGS84_B_KM - 550.0]))
    assert (float(lat), float(alt)) == pytest.approx((-90.0, 550.0))


def test_geodetic_round_trip_from_ground_to_geo():
    lat = RNG.uniform(-90, 90, 2000)
    lat[:4] = [90.0, -90.0, 0.0, 89.9999]
    lon = RNG.uniform(-180, 180, 2000)
    alt = RNG.uniform(-0.5, 40000.0, 2000)
    r = geodetic_to_ecef(lat, lon, alt)
    lat2, lon2, alt2 = ecef_to_geodetic(r)
    np.testing.assert_allclose(lat2, lat, rtol=0, atol=1e-9)
    np.testing.assert_allclose(alt2, alt, rtol=0, atol=1e-6)
    polar = np.abs(lat) > 89.99999
    lon_error = np.angle(np.exp(1j * np.radians(lon2 - lon)))
    assert np.max(np.abs(lon_error[~polar])) < 1e-12
    assert r.shape == (2000, 3) and lat2.shape == (2000,)


@pytest.mark.parametrize("bad", [91.0, -90.5, float("nan")])
def test_latitude_outside_range_is_rejected(bad):
    with pytest.raises(ValueError, match="latitude .* is outside \\[-90, 90\\]"):
        geodetic_to_ecef(bad, 0.0, 0.0)
    with pytest.raises(ValueError, match="latitude"):
        look_angles(np.array([10.0, bad]), np.array([0.0, 0.0]), 0.0, np.zeros((1, 3)))


def _reference_look_angles(lat, lon, alt, sat):
    """Per-pair textbook computation: ENU of the difference vector."""
    obs = geodetic_to_ecef(lat, lon, alt)
    d = sat - obs
    rot = enu_rotation(lat, lon)
    e, n, u = rot @ d
    rng = math.sqrt(e * e + n * n + u * u)
    return math.degrees(math.asin(u / rng)), math.degrees(math.atan2(e, n)) % 360.0, rng


def test_look_angles_shapes_and_values():
    lat = np.array([47.2, -33.9, 70.2])
    lon = np.array([-119.9, 151.2, -148.5])
    alt = np.array([0.3, 0.0, 0.01])
    sats = geodetic_to_ecef(RNG.uniform(-60, 60, 7), RNG.uniform(-180, 180, 7), 550.0)
    el, az, rng = look_angles(lat, lon, alt, sats)
    assert el.shape == az.shape == rng.shape == (3, 7)
    assert el.flags["C_CONTIGUOUS"] and az.flags["C_CONTIGUOUS"]
    for g in range(3):
        for n in range(7):
            ref = _reference_look_angles(lat[g], lon[g], alt[g], sats[n])
            assert el[g, n] == pytest.approx(ref[0], abs=1e-9)
            assert abs((az[g, n] - ref[1] + 180) % 360 - 180) < 1e-9
            assert rng[g, n] == pytest.approx(ref[2], abs=1e-9)
    track = np.stack([sats, sats * 1.01])
    el_t, az_t, rng_t = look_angles(lat, lon, alt, track)
    assert el_t.shape == (2, 3, 7)
    np.testing.assert_array_equal(el_t[0], el)
    single = look_angles(lat[0], lon[0], alt[0], track)
    assert single[0].shape == (2, 7)
    np.testing.assert_allclose(single[2], rng_t[:, 0], rtol=0, atol=1e-12)


def test_look_angles_directions():
    ground = GroundPoints(30.0, 40.0, 0.0)
    up = enu_rotation(30.0, 40.0)[2]
    east = enu_rotation(30.0, 40.0)[0]
    north = enu_rotation(30.0, 40.0)[1]
    overhead = ground.ecef[0] + 550.0 * up
    el, _, rng = ground.look_angles(overhead[None])
    assert el[0] == pytest.approx(90.0) and rng[0] == pytest.approx(550.0)
    el, az, _ = ground.look_angles((ground.ecef[0] + 1000.0 * east)[None])
    assert (el[0], az[0]) == pytest.approx((0.0, 90.0))
    el, az, _ = ground.look_angles((ground.ecef[0] + 1000.0 * north - 1000.0 * up)[None])
    assert el[0] == pytest.approx(-45.0) and az[0] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(ground.elevation(overhead[None]), [90.0])
    np.testing.assert_allclose(ground.range_km(overhead[None]), [550.0])
    np.testing.assert_allclose(slant_range_km(ground.ecef[0], overhead), 550.0)


def test_nan_satellites_are_never_visible():
    el, az, rng = look_angles(0.0, 0.0, 0.0, np.array([[np.nan] * 3, [WGS84_A_KM + 550.0, 0.0, 0.0]]))
    assert np.isnan(el[0]) and el[1] == pytest.approx(90.0)
    np.testing.assert_array_equal(elevation_mask(el, 25.0), [False, True])
    with pytest.raises(ValueError, match="minimum elevation"):
        elevation_mask(el, 95.0)


def test_bad_satellite_array_shape():
    with pytest.raises(ValueError, match=r"\(N, 3\) or \(T, N, 3\)"):
        look_angles(0.0, 0.0, 0.0, np.zeros(3))

"""ElementSet behaviour, Walker shells (geometry invariants through SGP4) and constellation presets."""

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from skyhaul.core.constants import SGP4_J2, SGP4_RADIUS_KM
from skyhaul.core.constellations import (
    PRESET_MIN_ELEVATION_DEG,
    PRESETS,
    ShellSpec,
    UnknownPresetError,
    build_preset,
    build_shells,
    preset_shells,
)
from skyhaul.core.elements import ElementSet, kepler_mean_motion_rad_min, orbital_period_s, walker_shell
from skyhaul.core.propagate import Propagator

EPOCH = 1604016000.0  # 2020-10-30T00:00:00Z


def _radius_over(elements: ElementSet, duration_s: float, samples: int = 400):
    times = EPOCH + np.linspace(0.0, duration_s, samples)
    r, v, err = Propagator(elements).teme(times)
    assert np.all(err == 0)
    return np.linalg.norm(r, axis=-1), np.linalg.norm(v, axis=-1)


def _j2_short_period_km(altitude_km, inclination_deg):
    """Amplitude of SGP4's short-period J2 radius term, 0.25 J2 sin^2 i Re^2 / a, for a circular orbit."""
    a = SGP4_RADIUS_KM + altitude_km
    return 0.25 * SGP4_J2 * math.sin(math.radians(inclination_deg)) ** 2 * SGP4_RADIUS_KM**2 / a


@pytest.mark.parametrize(
    ("altitude", "inclination"),
    [
        (550.0, 53.0),
        (540.0, 53.2),
        (570.0, 70.0),
        (560.0, 97.6),
        (630.0, 51.9),
        (1015.0, 98.98),
        (8062.0, 0.0),
    ],
)
def test_walker_shell_flies_at_its_nominal_altitude(altitude, inclination):
    shell = walker_shell("s", 3, 4, altitude, inclination, 1, EPOCH)
    period = float(orbital_period_s(shell)[0])
    radius, _ = _radius_over(shell, period)
    flown = radius - SGP4_RADIUS_KM
    # Orbit-mean altitude: the nominal one (a naive mean motion misses by tens of km).
    assert abs(flown.mean() - altitude) < 0.05
    # Instantaneous altitude: within 1 km, widened only by the J2 short-period term that no mean-element
    # circular orbit can avoid (+-1.01 km at 550 km / 53 deg, 0 at the equator).
    bound = max(1.0, _j2_short_period_km(altitude, inclination) + 0.1)
    assert np.max(np.abs(flown - altitude)) < bound
    if inclination == 0.0:
        assert np.max(np.abs(flown - altitude)) < 1.0


def test_altitude_holds_over_a_day_and_the_naive_mean_motion_does_not():
    shell = walker_shell("s", 1, 3, 550.0, 53.0, 0, EPOCH)
    radius, speed = _radius_over(shell, 86400.0, samples=2000)
    flown = radius - SGP4_RADIUS_KM
    assert abs(flown.mean() - 550.0) < 0.05 and np.max(np.abs(flown - 550.0)) < 1.5
    assert abs(speed.mean() - 7.59) < 0.01  # km/s at 550 km
    # The same shell with plain Kepler mean motion and e = 0 misses: J2/J3 move it by kilometres.
    naive = ElementSet(
        **{
            **{name: getattr(shell, name) for name in ("satnum", "epoch_jd_whole", "epoch_jd_frac", "bstar")},
            **{name: getattr(shell, name) for name in ("ndot", "nddot", "inclo_rad", "mo_rad", "nodeo_rad")},
            "ecco": np.zeros(shell.size),
            "argpo_rad": np.zeros(shell.size),
            "no_kozai_rad_min": np.full(shell.size, kepler_mean_motion_rad_min(550.0)),
            "names": shell.names,
            "norad_id": shell.norad_id,
            "shell": shell.shell,
            "plane": shell.plane,
            "slot": shell.slot,
            "shells": shell.shells,
        }
    )
    naive_alt = _radius_over(naive, 86400.0, samples=2000)[0] - SGP4_RADIUS_KM
    assert np.max(np.abs(naive_alt - 550.0)) > 5.0


def test_walker_geometry_and_metadata():
    shell = walker_shell("w", 4, 6, 550.0, 53.0, 1, EPOCH)
    assert shell.size == 24 and shell.names[0] == "w-0-0" and shell.names[-1] == "w-3-5"
    np.testing.assert_array_equal(shell.plane, np.repeat(np.arange(4), 6))
    np.testing.assert_array_equal(shell.slot, np.tile(np.arange(6), 4))
    assert np.all(shell.norad_id == -1)
    np.testing.assert_allclose(np.degrees(shell.nodeo_rad[::6]), [0.0, 90.0, 180.0, 270.0])
    np.testing.assert_allclose(np.degrees(shell.inclo_rad), 53.0)
    np.testing.assert_allclose(shell.epoch_unix, EPOCH, atol=1e-6)
    # Argument of latitude: 60 deg apart within a plane, plane p shifted by 360 F p / T = 15 p deg.
    latitude_arg = np.degrees(shell.argpo_rad + shell.mo_rad) % 360.0
    expected = (60.0 * shell.slot + 15.0 * shell.plane) % 360.0
    np.testing.assert_allclose(np.cos(np.radians(latitude_arg - expected)), 1.0, atol=1e-12)
    info = shell.shells[0]
    assert (info.planes, info.sats_per_plane, info.phasing, info.count, info.kind) == (4, 6, 1, 24, "walker")


def test_version_is_a_content_hash():
    a = walker_shell("w", 3, 3, 550.0, 53.0, 1, EPOCH)
    b = walker_shell("w", 3, 3, 550.0, 53.0, 1, EPOCH)
    assert a.version == b.version and len(a.version) == 16
    assert walker_shell("w", 3, 3, 550.0, 53.0, 1, EPOCH + 1.0).version != a.version
    assert walker_shell("w", 3, 3, 551.0, 53.0, 1, EPOCH).version != a.version
    assert a.subset([0, 1]).version != a.version
    assert a.subset(np.arange(a.size)).version == a.version


def test_arrays_are_read_only():
    shell = walker_shell("w", 2, 2, 550.0, 53.0, 0, EPOCH)
    with pytest.raises(ValueError):
        shell.mo_rad[0] = 1.0
    with pytest.raises(AttributeError):
        shell.names = ()


def test_concat_and_subset_keep_metadata():
    a = walker_shell("a", 2, 3, 550.0, 53.0, 1, EPOCH)
    b = walker_shell("b", 1, 2, 8062.0, 0.0, 0, EPOCH)
    both = ElementSet.concat([a, b])
    assert both.size == 8 and [s.name for s in both.shells] == ["a", "b"]
    np.testing.assert_array_equal(both.shell, [0] * 6 + [1] * 2)
    assert both.names[6] == "b-0-0"
    picked = both.subset([7, 0])
    assert picked.names == ("b-0-1", "a-0-0") and list(picked.shell) == [1, 0]
    np.testing.assert_array_equal(picked.mo_rad, both.mo_rad[[7, 0]])
    mask = np.zeros(both.size, bool)
    mask[[1, 2]] = True
    assert both.subset(mask).names == ("a-0-1", "a-0-2")
    with pytest.raises(IndexError):
        both.subset([8])
    with pytest.raises(ValueError, match="at least one"):
        ElementSet.concat([])


def test_satrec_array_is_built_once():
    shell = walker_shell("w", 2, 2, 550.0, 53.0, 0, EPOCH)
    assert shell.to_satrec_array() is shell.to_satrec_array()
    assert len(shell.satrecs) == 4


@pytest.mark.parametrize(
    ("name", "count", "shells"),
    [
        ("starlink-shell1", 1584, 1),
        ("starlink-gen1", 4408, 4),
        ("starlink-2020-10", 792, 1),
        ("kuiper-630", 1156, 1),
        ("telesat-1015", 351, 1),
        ("o3b-meo", 20, 1),
    ],
)
def test_presets(name, count, shells):
    elements = build_preset(name, EPOCH)
    assert elements.size == count and len(elements.shells) == shells
    assert sum(s.count for s in elements.shells) == count
    assert name in PRESETS and name in PRESET_MIN_ELEVATION_DEG
    assert len(set(elements.names)) == count
    assert all(0 <= s.phasing < s.planes for s in preset_shells(name))


def test_gen1_shell_table():
    table = [
        (s.planes * s.sats_per_plane, s.altitude_km, s.inclination_deg)
        for s in preset_shells("starlink-gen1")
    ]
    assert table == [(1584, 550.0, 53.0), (1584, 540.0, 53.2), (720, 570.0, 70.0), (520, 560.0, 97.6)]


def test_2020_10_is_shell1_with_every_other_plane():
    sparse = build_preset("starlink-2020-10", EPOCH)
    assert set(np.unique(sparse.plane)) == set(range(0, 72, 2))
    assert np.all(np.bincount(sparse.plane)[::2] == 22)
    np.testing.assert_allclose(np.degrees(sparse.inclo_rad), 53.0)


def test_preset_phasing_keeps_satellites_apart():
    elements = build_preset("starlink-shell1", EPOCH)
    period = float(orbital_period_s(elements)[0])
    times = EPOCH + np.linspace(0.0, period / 22, 40)  # the pattern repeats every slot spacing
    closest = np.inf
    for r in Propagator(elements).ecef(times).r_km:
        distances, _ = cKDTree(r).query(r, k=2)
        closest = min(closest, distances[:, 1].min())
    assert closest > 50.0  # km; with F = 0 satellites of crossing planes would meet


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(KeyError) as caught:
        build_preset("starlink-gen9", EPOCH)
    assert isinstance(caught.value, UnknownPresetError)
    message = str(caught.value)
    assert "starlink-gen9" in message and all(name in message for name in PRESETS)


def test_build_shells_from_dicts_and_specs():
    elements = build_shells(
        [
            {
                "name": "s1",
                "planes": 4,
                "sats_per_plane": 5,
                "altitude_km": 550,
                "inclination_deg": 53,
                "phasing": 1,
            },
            ShellSpec("s2", 2, 3, 1200.0, 87.9),
        ],
        EPOCH,
    )
    assert elements.size == 26 and [s.name for s in elements.shells] == ["s1", "s2"]
    assert elements.shells[1].phasing == 1 and elements.shells[1].raan_spread_deg == 360.0


@pytest.mark.parametrize(
    ("shell", "message"),
    [
        (
            {
                "name": "x",
                "planes": 2,
                "sats_per_plane": 2,
                "altitude_km": 550,
                "inclination_deg": 53,
                "colour": 1,
            },
            "unknown field",
        ),
        (
            {"name": "x", "planes": 2, "altitude_km": 550, "inclination_deg": 53},
            "missing field(s) sats_per_plane",
        ),
        (
            {"name": "x", "planes": 0, "sats_per_plane": 2, "altitude_km": 550, "inclination_deg": 53},
            "planes must be a positive",
        ),
        (
            {
                "name": "x",
                "planes": 2,
                "sats_per_plane": 2,
                "altitude_km": 550,
                "inclination_deg": 53,
                "phasing": 2,
            },
            "phasing must be an integer in [0, 1]",
        ),
        (
            {"name": "x", "planes": 2, "sats_per_plane": 2, "altitude_km": 50, "inclination_deg": 53},
            "altitude_km 50 is outside",
        ),
        (
            {"name": "x", "planes": 2, "sats_per_plane": 2, "altitude_km": 550, "inclination_deg": 190},
            "inclination_deg 190 is outside",
        ),
        (
            {
                "name": "x",
                "planes": 2,
                "sats_per_plane": 2,
                "altitude_km": 550,
                "inclination_deg": 53,
                "raan_spread_deg": 0,
            },
            "raan_spread_deg 0",
        ),
        (
            {"name": "x", "planes": 1000, "sats_per_plane": 1000, "altitude_km": 550, "inclination_deg": 53},
            "more than the 100000",
        ),
    ],
)
def test_bad_shells_are_rejected_with_the_field(shell, message):
    with pytest.raises(ValueError) as caught:
        build_shells([shell], EPOCH)
    assert str(caught.value).startswith("shells[0]: ") and message in str(caught.value)


def test_duplicate_and_empty_shell_lists():
    spec = ShellSpec("same", 2, 2, 550.0, 53.0)
    with pytest.raises(ValueError, match="shells\\[1\\]: shell name 'same' is used twice"):
        build_shells([spec, spec], EPOCH)
    with pytest.raises(ValueError, match="at least one shell"):
        build_shells([], EPOCH)

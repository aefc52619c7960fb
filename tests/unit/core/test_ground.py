"""Ground segment: positions, moving terminals, fibre delays and input checks."""

import numpy as np
import pytest

from skyhaul.core.constants import C_KM_S, EARTH_RADIUS_KM
from skyhaul.core.frames import ecef_to_geodetic, geodetic_to_ecef
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal, UnknownId


def _unit(lat, lon):
    la, lo = np.radians(lat), np.radians(lon)
    return np.array([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


def _central_angle(a, b):
    # atan2 of |a×b| and a·b: a different formula from the haversine the code uses.
    return np.arctan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b))


def _segment():
    return GroundSegment(
        terminals=[
            Terminal("mdc-fixed", 70.2, -148.5, alt_km=0.01),
            Terminal.moving(
                "mdc-ship", [(0, 10.0, -30.0), (3600, 20.0, -10.0), (7200, 20.0, 10.0)], epoch_unix=1e9
            ),
        ],
        gateways=[
            Gateway("gw-fairbanks", "westus2", 64.84, -147.72, fibre_route_factor=1.5),
            Gateway("gw-quincy", "westus2", 47.233, -119.852, fibre_route_factor=1.0),
        ],
        regions=[Region("westus2", 47.233, -119.852)],
    )


def test_fibre_delay_is_great_circle_times_route_factor_at_c_over_1_47():
    gs = _segment()
    angle = _central_angle(_unit(64.84, -147.72), _unit(47.233, -119.852))
    expected_km = angle * EARTH_RADIUS_KM * 1.5
    assert gs.fibre_km[0] == pytest.approx(expected_km, rel=1e-9)
    assert gs.fibre_delay_s[0] == pytest.approx(expected_km * 1.47 / C_KM_S, rel=1e-9)
    # A gateway at its region has no fibre to cross.
    assert gs.fibre_delay_s[1] == pytest.approx(0.0, abs=1e-12)


def test_fixed_positions_are_the_wgs84_points_in_node_order():
    gs = _segment()
    r = gs.positions_ecef(1e9 + 10)
    assert r.shape == (4, 3)
    assert np.allclose(r[0], geodetic_to_ecef(70.2, -148.5, 0.01))
    assert np.allclose(r[2], geodetic_to_ecef(64.84, -147.72, 0.0))
    many = gs.positions_ecef(1e9 + np.array([0.0, 10.0, 20.0]))
    assert many.shape == (3, 4, 3)
    assert np.allclose(many[:, 0], r[0])


def test_a_moving_terminal_passes_its_waypoints_and_follows_the_great_circle_between():
    gs = _segment()
    times = 1e9 + np.array([-500.0, 0.0, 1800.0, 3600.0, 7200.0, 9000.0])
    lat, lon = gs.track_position(1, times)
    assert lat[[0, 1, 3, 4, 5]] == pytest.approx([10.0, 10.0, 20.0, 20.0, 20.0])
    assert lon[[0, 1, 3, 4, 5]] == pytest.approx([-30.0, -30.0, -10.0, 10.0, 10.0])
    # Halfway in time is halfway in angle, and on the great circle of the two waypoints.
    a, b, m = _unit(10, -30), _unit(20, -10), _unit(lat[2], lon[2])
    assert _central_angle(a, m) == pytest.approx(_central_angle(a, b) / 2, rel=1e-9)
    assert abs(np.dot(np.cross(a, b), m)) < 1e-12
    # Its ECEF position and up vector follow.
    r = gs.positions_ecef(times[2])
    glat, glon, galt = ecef_to_geodetic(r[1])
    assert (glat, glon, galt) == pytest.approx((lat[2], lon[2], 0.0), abs=1e-7)
    assert np.allclose(gs.up_vectors(times[2])[1], _unit(lat[2], lon[2]))


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: Terminal("t", 91.0, 0.0), ["terminal 't'", "latitude 91"]),
        (lambda: Terminal("t", 0.0, 0.0, min_elevation_deg=95), ["min_elevation_deg"]),
        (lambda: Terminal("t", 0.0, 0.0, uplink_mbps=0), ["uplink_mbps"]),
        (lambda: Terminal("t", track=((10.0, 0.0, 0.0), (5.0, 1.0, 1.0))), ["strictly increasing"]),
        (lambda: Gateway("g", "r", 0.0, 0.0, fibre_route_factor=0.5), ["fibre_route_factor"]),
        (lambda: Gateway("g", "r", 0.0, 0.0, capacity_mbps=-1), ["capacity_mbps"]),
        (
            lambda: GroundSegment([], [Gateway("g", "nowhere", 0.0, 0.0)], [Region("r", 0.0, 0.0)]),
            ["gateway 'g'", "'nowhere'"],
        ),
        (
            lambda: GroundSegment([Terminal("t", 0, 0), Terminal("t", 1, 1)], [], []),
            ["terminal id 't' appears twice"],
        ),
    ],
)
def test_bad_ground_input_is_refused_with_a_clear_message(build, words):
    with pytest.raises(ValueError) as err:
        build()
    for word in words:
        assert word in str(err.value)


def test_unknown_ids_name_the_known_ones():
    gs = _segment()
    with pytest.raises(UnknownId, match="unknown region 'eastus'; known: westus2"):
        gs.region("eastus")
    with pytest.raises(KeyError):
        gs.terminal("mdc-nowhere")

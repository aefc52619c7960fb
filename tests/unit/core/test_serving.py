"""Which satellite each ground node uses, and its look angles: ``LinkModel.serving_satellites`` and
``LinkModel.look_angles`` checked against the decision and an independent look-angle computation."""

import numpy as np
import pytest

from skyhaul.core.elements import walker_shell
from skyhaul.core.geometry import look_angles
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.propagate import Propagator
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.timeline import LinkModel

EPOCH = 1604016000.0  # 2020-10-30T00:00:00Z, on a minute: slots start at EPOCH + 12 + 15k
SHELL = walker_shell("s1", 72, 22, 550, 53, 17, EPOCH)
PROPAGATOR = Propagator(SHELL)
# A 53 deg shell at 550 km never rises 25 deg above 80 N: that terminal and gateway see nothing.
GROUND = GroundSegment(
    [
        Terminal("mdc-wa", 47.6, -122.3, home_region_id="westus2"),
        Terminal("mdc-arctic", 80.0, -100.0, home_region_id="westus2"),
    ],
    [
        Gateway("gw-quincy", "westus2", 47.233, -119.852),
        Gateway("gw-boydton", "westus2", 36.67, -78.39),
        Gateway("gw-alert", "westus2", 82.5, -62.3),
    ],
    [Region("westus2", 47.233, -119.852)],
)


def model(**config) -> LinkModel:
    return LinkModel.from_elements(SHELL, GROUND, SchedulerConfig(**config), propagator=PROPAGATOR)


def independent_angles(row: int, sat: int, t: float) -> np.ndarray:
    node = [*GROUND.terminals, *GROUND.gateways][row]
    r = PROPAGATOR.ecef(t).r_km[[sat]]
    el, az, rng = look_angles(node.lat_deg, node.lon_deg, node.alt_km, r)
    return np.array([np.ravel(el)[0], np.ravel(az)[0], np.ravel(rng)[0]])


@pytest.mark.parametrize("t", [EPOCH + 12.0, EPOCH + 20.5, EPOCH + 318.0])
def test_terminals_show_their_held_satellite_and_gateways_the_satellites_their_routes_use(t):
    links = model(isl="none", policy="highest-elevation")
    decision = links.decide(links.decision_time(t))
    rows, sats = links.serving_satellites(t, decision)
    # Terminals first, one entry each: the held satellite (the arctic one has none).
    assert rows[:2] == [0, 1]
    assert sats[0] == int(decision.terminal_sat[0]) >= 0
    assert sats[1] == -1
    gateway_sats = {row: [s for r, s in zip(rows, sats, strict=True) if r == row] for row in (2, 3, 4)}
    assert all(gateway_sats[row] for row in (2, 3, 4))  # every gateway shows at least one entry
    # Bent pipe: the terminal's satellite is the one its route's gateway sees.
    gateway_row = 2 + int(decision.routes.gateway[0, 0])
    assert sats[0] in gateway_sats[gateway_row]
    assert gateway_sats[4] == [-1]  # nothing rises 25 deg over 82.5 N


def test_a_gateway_without_routes_shows_its_highest_satellite():
    links = model(isl="none", policy="highest-elevation")
    t = EPOCH + 12.0
    decision = links.decide(t)
    rows, sats = links.serving_satellites(t, decision)
    carrying = {2 + int(g) for g in decision.routes.gateway.ravel() if g >= 0}
    idle = [row for row in (2, 3) if row not in carrying]
    assert idle, "one of the two gateways carries no route in this set-up"
    for row in idle:
        shown = [s for r, s in zip(rows, sats, strict=True) if r == row]
        r = PROPAGATOR.ecef(t).r_km
        gateway = GROUND.gateways[row - 2]
        el = np.ravel(look_angles(gateway.lat_deg, gateway.lon_deg, gateway.alt_km, r)[0])
        assert shown == [int(np.argmax(el))] and el[shown[0]] >= gateway.min_elevation_deg


def test_look_angles_match_an_independent_computation_and_are_nan_without_a_satellite():
    links = model(isl="none", policy="highest-elevation")
    t = EPOCH + 27.0
    rows, sats = links.serving_satellites(t, links.decide(t))
    angles = links.look_angles(t, rows, sats)
    assert angles.shape == (3, len(rows))
    for k, (row, sat) in enumerate(zip(rows, sats, strict=True)):
        if sat < 0:
            assert np.isnan(angles[:, k]).all()
        else:
            assert angles[:, k] == pytest.approx(independent_angles(row, sat, t), rel=1e-9, abs=1e-9)
            assert angles[0, k] >= 25.0  # above the mask of the node that uses it
    assert links.look_angles(t, [0, 1], [-1, -1]).shape == (3, 2)
    assert np.isnan(links.look_angles(t, [0, 1], [-1, -1])).all()

"""The links service's view of a LinkModel: slots, route messages, assignments and reasons in words."""

import math

import numpy as np
import pytest

from skyhaul.core.elements import walker_shell
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.links import route_view
from skyhaul.v1 import route_pb2

EPOCH = 1604016000.0  # 2020-10-30T00:00:00Z, on a minute: slots start at EPOCH + 12 + 15k
SHELL = walker_shell("s1", 72, 22, 550, 53, 17, EPOCH)
GROUND = GroundSegment(
    [
        Terminal("mdc-wa", 47.6, -122.3, home_region_id="westus2"),
        Terminal("mdc-arctic", 80.0, -100.0, home_region_id="westus2"),  # no 53 deg satellite up there
    ],
    [Gateway("gw-quincy", "westus2", 47.233, -119.852, fibre_route_factor=1.3)],
    [Region("westus2", 47.233, -119.852)],
)


@pytest.fixture(scope="module")
def model():
    return route_view.new_model(SHELL, GROUND, SchedulerConfig(isl="+grid", policy="shortest-path"))


def test_slot_of_in_slotted_mode_is_the_reconfiguration_slot():
    config = SchedulerConfig()
    index, start, end = route_view.slot_of(config, EPOCH + 20.0)
    assert (start, end) == (EPOCH + 12.0, EPOCH + 27.0)
    assert index == config.slot_index(EPOCH + 20.0)
    assert route_view.slot_of(config, EPOCH + 27.0) == (index + 1, EPOCH + 27.0, EPOCH + 42.0)
    assert route_view.step_start(config, EPOCH + 26.9) == EPOCH + 12.0


def test_slot_of_in_continuous_mode_is_the_sample_step_at_t():
    config = SchedulerConfig(mode="continuous", sample_step_s=2.0)
    assert route_view.slot_of(config, 101.3) == (50, 101.3, 103.3)
    assert route_view.slot_of(config, 100.0) == (50, 100.0, 102.0)
    assert route_view.step_start(config, 101.3) == 100.0


def test_new_model_names_satellites_by_index_and_owns_its_elements(model):
    assert model.sat_names[:3] == ("sat-0", "sat-1", "sat-2") and len(model.sat_names) == SHELL.size
    # sgp4 records hold per-call state: two models (two worker threads) must not share them.
    other = route_view.new_model(SHELL, GROUND, model.config)
    assert other.propagator._array is not model.propagator._array
    assert model.propagator._array is not SHELL.to_satrec_array()


def test_route_message_carries_the_core_route_and_its_samples(model):
    t = EPOCH + 20.0
    message = route_view.route_message(model, "mdc-wa", "westus2", t)
    route = model.route("mdc-wa", "westus2", t)
    times, delay_s = model.delay_samples("mdc-wa", "westus2", t)
    assert route.available and message.available
    assert (message.data_center_id, message.region_id, message.gateway_id) == (
        "mdc-wa",
        "westus2",
        "gw-quincy",
    )
    assert [h.delay_ms for h in message.hops] == pytest.approx(
        [h.delay_s * 1e3 for h in route.hops], abs=1e-12
    )
    assert [h.distance_km for h in message.hops] == [h.distance_km for h in route.hops]
    assert [(h.from_id, h.to_id) for h in message.hops] == [(h.src, h.dst) for h in route.hops]
    assert message.hops[0].to_id == f"sat-{route.first_satellite}"
    assert message.first_satellite_index == route.first_satellite >= 0
    assert message.one_way_delay_ms == pytest.approx(route.one_way_delay_s * 1e3, abs=1e-12)
    assert message.one_way_delay_ms == pytest.approx(sum(h.delay_ms for h in message.hops), rel=1e-9)
    assert list(message.delay_samples_ms) == pytest.approx((delay_s * 1e3).tolist(), abs=1e-12)
    assert len(message.delay_samples_ms) == 15  # one a second across the 15 s slot
    assert message.samples_start.seconds == int(times[0]) == int(EPOCH + 12)
    assert (message.slot.start.seconds, message.slot.end.seconds) == (int(EPOCH + 12), int(EPOCH + 27))
    assert (message.capacity_up_mbps, message.capacity_down_mbps) == (
        route.capacity_up_mbps,
        route.capacity_down_mbps,
    )


def test_an_outage_has_no_first_satellite_and_says_why(model):
    t = EPOCH + 20.0
    message = route_view.route_message(model, "mdc-arctic", "westus2", t)
    assert not message.available and message.first_satellite_index == -1
    assert all(math.isnan(v) for v in message.delay_samples_ms)
    decision = model.decide(model.decision_time(t))
    assert route_view.outage_reason(model, 1, "westus2", t, decision) == "no satellite above 25 deg"
    up = route_view.route_message(model, "mdc-wa", "westus2", t)
    assert route_view.up_reason(up) == f"route via {up.hops[0].to_id} and gw-quincy"


def test_assignments_name_each_ground_node_with_its_satellite_and_look_angles(model):
    t = EPOCH + 33.0
    decision = model.decide(model.decision_time(t))
    rows, sats = model.serving_satellites(t, decision)
    angles = model.look_angles(t, rows, sats)
    got = route_view.assignments(model, t, decision)
    assert [(a.ground_id, a.kind) for a in got][:2] == [
        ("mdc-wa", route_pb2.GROUND_KIND_TERMINAL),
        ("mdc-arctic", route_pb2.GROUND_KIND_TERMINAL),
    ]
    assert {(a.ground_id, a.kind) for a in got[2:]} == {("gw-quincy", route_pb2.GROUND_KIND_GATEWAY)}
    assert [a.satellite_index for a in got] == sats
    for k, a in enumerate(got):
        if sats[k] < 0:  # no satellite: zero angles, not NaN, on the wire
            assert (a.elevation_deg, a.azimuth_deg, a.range_km) == (0.0, 0.0, 0.0)
        else:
            assert [a.elevation_deg, a.azimuth_deg, a.range_km] == pytest.approx(angles[:, k].tolist())
    assert got[0].satellite_index == int(decision.terminal_sat[0]) >= 0 and got[0].elevation_deg >= 25.0
    assert got[1].satellite_index == -1
    assert np.isfinite([a.range_km for a in got]).all()

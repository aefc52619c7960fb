"""Core link values as protobuf messages: routes, hops, summaries, chunks, the scheduler, the ground."""

import math

import numpy as np
import pytest

from skyhaul.core.routing import Hop, Route
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.summary import TimelineSummary
from skyhaul.core.timeline import TimelineChunk
from skyhaul.links import codec
from skyhaul.links.ground_from_scenario import ground_segment
from skyhaul.runtime.scenario import default_scenario, parse_scenario
from skyhaul.v1 import links_pb2, route_pb2

T = 1604016020.25
HOPS = (
    Hop("uplink", "mdc-wa", "sat-7", 640.0, 640.0 / 299792.458),
    Hop("isl", "sat-7", "sat-8", 900.0, 900.0 / 299792.458),
    Hop("downlink", "sat-8", "gw-quincy", 700.0, 700.0 / 299792.458),
    Hop("fibre", "gw-quincy", "westus2", 10.0, 10.0 * 1.47 / 299792.458),
)


def route(available=True, handover=False) -> Route:
    return Route(
        terminal_id="mdc-wa",
        region_id="westus2",
        t_unix=T,
        available=available,
        one_way_delay_s=sum(h.delay_s for h in HOPS) if available else math.nan,
        hops=HOPS,
        satellites=(7, 8),
        gateway_id="gw-quincy",
        capacity_up_mbps=40.0 if available else 0.0,
        capacity_down_mbps=200.0 if available else 0.0,
        decided_at=T - 8.25,
        handover=handover,
    )


def test_a_route_keeps_its_hops_delays_and_samples():
    slot = codec.slot_to_proto(7, T - 8.25, T + 6.75)
    samples = np.array([0.0081, math.nan, 0.0083])
    message = codec.route_to_proto(
        route(), slot, np.array([T - 8.25, T - 7.25, T - 6.25]), samples, 1.0, 30.0
    )
    assert [h.segment for h in message.hops] == [
        route_pb2.SEGMENT_KIND_UPLINK,
        route_pb2.SEGMENT_KIND_ISL,
        route_pb2.SEGMENT_KIND_DOWNLINK,
        route_pb2.SEGMENT_KIND_FIBRE,
    ]
    assert [h.delay_ms for h in message.hops] == pytest.approx([h.delay_s * 1e3 for h in HOPS])
    assert message.one_way_delay_ms == pytest.approx(sum(h.delay_ms for h in message.hops))
    assert (message.first_satellite_index, message.gateway_id, message.slot.index) == (7, "gw-quincy", 7)
    assert message.delay_samples_ms[0] == pytest.approx(8.1) and math.isnan(message.delay_samples_ms[1])
    assert (message.samples_start.seconds, message.samples_start.nanos) == (1604016012, 0)
    assert (message.at.seconds, message.at.nanos) == (1604016020, 250_000_000)
    assert codec.duration_seconds(message.samples_step) == 1.0
    assert not message.HasField("handover_stall")  # no handover, no stall
    assert codec.path_key(message) == ("mdc-wa", "sat-7", "sat-8", "gw-quincy", "westus2")


def test_a_handover_carries_the_stall_and_an_outage_no_satellite():
    slot = codec.slot_to_proto(7, T, T + 15)
    handover = codec.route_to_proto(route(handover=True), slot, np.array([T]), np.array([0.008]), 1.0, 30.0)
    assert codec.duration_seconds(handover.handover_stall) == pytest.approx(0.030)
    no_stall = codec.route_to_proto(route(handover=True), slot, np.array([T]), np.array([0.008]), 1.0, 0.0)
    assert not no_stall.HasField("handover_stall")
    down = codec.route_to_proto(route(available=False), slot, np.array([]), np.array([]), 1.0, 0.0)
    assert not down.available and down.first_satellite_index == -1
    assert not down.HasField("samples_start") and list(down.delay_samples_ms) == []
    assert codec.path_key(route_pb2.Route()) == ()


def test_summary_chunk_and_scheduler_messages():
    summary = TimelineSummary(
        T, T + 100, 100, 90, 0.9, 20.0, 25.0, 30.0, 40.0, 3, 0.09, [(T + 10, T + 15), (T + 50, T + 55.5)]
    )
    message = codec.summary_to_proto(summary, compute_seconds=0.5)
    assert (message.samples, message.availability, message.handovers) == (100, 0.9, 3)
    assert (message.rtt_p50_ms, message.rtt_p95_ms) == (25.0, 30.0)
    assert [(w.start.seconds, w.end.seconds) for w in message.outages] == [
        (1604016030, 1604016035),
        (1604016070, 1604016075),
    ]
    assert message.longest_outage_s == 5.5 and message.compute_seconds == 0.5

    chunk = TimelineChunk(
        np.array([T, T + 1]),
        np.array([16.0, np.nan]),
        np.array([40.0, 0.0]),
        np.array([200.0, 0.0]),
        np.array([7, -1]),
        np.array([True, False]),
    )
    encoded = codec.chunk_to_proto(chunk, 1.0)
    assert encoded.rtt_ms[0] == 16.0 and math.isnan(encoded.rtt_ms[1])
    assert list(encoded.satellite_index) == [7, -1] and list(encoded.capacity_down_mbps) == [200.0, 0.0]

    config = SchedulerConfig(
        mode="continuous", policy="least-loaded", isl="+grid", handover_stall_ms=40.0, sample_step_s=0.5
    )
    scheduler = codec.scheduler_to_proto(config)
    assert scheduler.mode == links_pb2.SCHEDULER_MODE_CONTINUOUS
    assert scheduler.policy == links_pb2.ASSIGNMENT_POLICY_LEAST_LOADED
    assert scheduler.isl_mode == links_pb2.ISL_MODE_PLUS_GRID
    assert codec.duration_seconds(scheduler.handover_stall) == pytest.approx(0.04)
    assert codec.duration_seconds(scheduler.sample_step) == 0.5
    assert codec.duration_seconds(scheduler.slot_offset) == 12.0


def test_the_ground_segment_message_describes_the_scenario():
    scenario = parse_scenario(
        {
            "constellation": {"preset": "starlink-shell1"},
            "regions": [
                {"id": "westus2", "gateways": [{"id": "gw-quincy", "lat": 47.2, "lon": -119.9, "alt_m": 380}]}
            ],
            "data_centers": [
                {
                    "id": "mdc-ship",
                    "home_region": "westus2",
                    "track": [{"t_s": 0, "lat": 47, "lon": -125}, {"t_s": 60, "lat": 48, "lon": -126}],
                }
            ],
        }
    )
    message = codec.ground_segment_to_proto(scenario, scenario.scheduler, "starlink-shell1")
    assert message.constellation == "starlink-shell1"
    assert [(g.id, g.region_id, g.position.altitude_m) for g in message.gateways] == [
        ("gw-quincy", "westus2", 380.0)
    ]
    assert list(message.regions[0].gateway_ids) == ["gw-quincy"]
    terminal = message.terminals[0]
    assert (terminal.data_center_id, terminal.home_region_id) == ("mdc-ship", "westus2")
    assert (terminal.position.latitude_deg, terminal.position.longitude_deg) == (
        47.0,
        -125.0,
    )  # the track's start
    assert [p.offset_s for p in terminal.track] == [0.0, 60.0]
    # The message and the core ground segment agree on the dish.
    core = ground_segment(scenario).terminals[0]
    assert (terminal.min_elevation_deg, terminal.uplink_mbps, terminal.downlink_mbps) == (
        core.min_elevation_deg,
        core.uplink_mbps,
        core.downlink_mbps,
    )
    assert codec.ground_segment_to_proto(
        default_scenario(), default_scenario().scheduler, "x"
    ).scheduler.isl_mode == (links_pb2.ISL_MODE_PLUS_GRID)

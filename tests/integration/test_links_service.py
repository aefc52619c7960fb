"""LinkService over real gRPC on loopback, fed by a real orbit service: agreement with the links
core, physics floors, predictions, contact windows and bad input."""

import argparse
import asyncio
import json
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from skyhaul.cli import links as links_cli
from skyhaul.cli.plots import plot_rtt
from skyhaul.core.constants import C_KM_S, FIBRE_INDEX
from skyhaul.core.constellations import build_preset
from skyhaul.core.frames import ecef_to_geodetic
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.passes import find_passes
from skyhaul.core.propagate import Propagator
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.summary import summarize
from skyhaul.core.timeline import LinkModel
from skyhaul.links.service import LinksApp
from skyhaul.orbit.catalog import Catalog
from skyhaul.orbit.service import OrbitApp
from skyhaul.runtime.clock import EmulationClock, to_timestamp, to_unix
from skyhaul.runtime.server import start_server
from skyhaul.runtime.settings import Settings
from skyhaul.v1 import common_pb2, links_pb2, links_pb2_grpc, route_pb2

EPOCH = 1604016000.0  # 2020-10-30T00:00:00Z
SCENARIO = """
name: links-service-test
epoch: "2020-10-30T00:00:00Z"
speed: 1
constellation: {preset: starlink-2020-10}
scheduler: {isl: none, handover_stall_ms: 20}
regions:
  - id: westus2
    gateways:
      - {id: gw-kenai, lat: 60.55, lon: -151.26}
      - {id: gw-quincy, lat: 47.233, lon: -119.852}
  - id: eastus
data_centers:
  - {id: mdc-anchorage, home_region: westus2, location: {lat: 61.2, lon: -149.9}}
  - {id: mdc-seattle, home_region: westus2, location: {lat: 47.6, lon: -122.3}}
"""
DCS = ("mdc-anchorage", "mdc-seattle")


def reference_model() -> LinkModel:
    """The same link model built straight from the core (not through the service's conversions)."""
    ground = GroundSegment(
        [
            Terminal("mdc-anchorage", 61.2, -149.9, home_region_id="westus2"),
            Terminal("mdc-seattle", 47.6, -122.3, home_region_id="westus2"),
        ],
        [
            Gateway("gw-kenai", "westus2", 60.55, -151.26),
            Gateway("gw-quincy", "westus2", 47.233, -119.852),
            Gateway("gw-eastus", "eastus", 37.3719, -79.8164),
        ],
        [Region("westus2", 47.233, -119.852), Region("eastus", 37.3719, -79.8164)],
    )
    elements = build_preset("starlink-2020-10", EPOCH)
    names = [f"sat-{i}" for i in range(elements.size)]
    return LinkModel.from_elements(
        elements, ground, SchedulerConfig(isl="none", handover_stall_ms=20), sat_names=names
    )


async def wait_serving(channel, service="skyhaul.v1.LinkService", timeout=30.0):
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{service} never became SERVING")


@pytest.fixture
async def links(tmp_path, redis_url):
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    env = {"SKYHAUL_SCENARIO": str(path), "SKYHAUL_REDIS_URL": redis_url}
    scenario = Settings.from_env("orbit", env).scenario
    clock = EmulationClock(scenario.epoch_unix, scenario.speed, time.time())
    orbit = await start_server(OrbitApp(Catalog(scenario), clock), "127.0.0.1:0")
    settings = Settings.from_env("links", {**env, "SKYHAUL_ORBIT_ADDR": f"127.0.0.1:{orbit.port}"})
    app = LinksApp(settings, clock)
    server = await start_server(app, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        await wait_serving(channel)
        yield SimpleNamespace(
            stub=links_pb2_grpc.LinkServiceStub(channel), app=app, address=f"127.0.0.1:{server.port}"
        )
    finally:
        await channel.close()
        await server.stop(0.1)
        await orbit.stop(0.1)


def _samples(route) -> np.ndarray:
    return np.array(route.delay_samples_ms, dtype=float)


async def test_ground_segment_describes_the_scenario(links):
    reply = await links.stub.GetGroundSegment(links_pb2.GetGroundSegmentRequest(), timeout=10)
    assert reply.constellation == "starlink-2020-10"
    assert [t.data_center_id for t in reply.terminals] == list(DCS)
    assert {g.id: g.region_id for g in reply.gateways} == {
        "gw-kenai": "westus2",
        "gw-quincy": "westus2",
        "gw-eastus": "eastus",
    }
    assert reply.terminals[0].position.latitude_deg == pytest.approx(61.2)
    assert reply.scheduler.isl_mode == links_pb2.ISL_MODE_NONE
    assert reply.scheduler.slot_interval.seconds == 15 and reply.scheduler.slot_offset.seconds == 12
    assert reply.scheduler.handover_stall.nanos == 20_000_000


async def test_routes_and_link_state_agree_with_the_core(links):
    core = reference_model()
    for t in (EPOCH + 150.0, EPOCH + 1000.5, EPOCH + 2345.0):
        for dc in DCS:
            reply = await links.stub.GetRoute(
                links_pb2.GetRouteRequest(data_center_id=dc, at=to_timestamp(t)), timeout=10
            )
            route, expected = reply.route, core.route(dc, "westus2", t)
            assert route.region_id == "westus2"  # the home region by default
            assert route.available == expected.available
            assert route.first_satellite_index == (expected.first_satellite if expected.available else -1)
            assert [(h.from_id, h.to_id) for h in route.hops] == [(h.src, h.dst) for h in expected.hops]
            assert route.slot.start.seconds == int(core.decision_time(t))
            times, delay_s = core.delay_samples(dc, "westus2", t)
            np.testing.assert_allclose(_samples(route), delay_s * 1e3, rtol=0, atol=1e-9)
            assert to_unix(route.samples_start) == times[0]
            if expected.available:
                assert route.one_way_delay_ms == pytest.approx(expected.one_way_delay_s * 1e3, abs=1e-9)
                assert route.gateway_id == expected.gateway_id
                assert route.capacity_up_mbps == expected.capacity_up_mbps > 0
                assert (route.handover_stall.nanos > 0) == expected.handover
        state = await links.stub.GetLinkState(links_pb2.GetLinkStateRequest(at=to_timestamp(t)), timeout=10)
        core_state = core.state_at(t)
        assert state.isl_count == core_state.isl_count == 0
        assert state.satellite_count == 792
        home = core.ground.region("westus2")
        assert list(state.data_centers_in_outage) == [
            dc for k, dc in enumerate(DCS) if not np.isfinite(core_state.delay_s[k, home])
        ]
        terminals = {a.ground_id: a for a in state.assignments if a.kind == route_pb2.GROUND_KIND_TERMINAL}
        for k, dc in enumerate(DCS):
            held = int(core_state.terminal_sat[k])
            assert terminals[dc].satellite_index in (held, -1)
            if np.isfinite(core_state.delay_s[k, home]):
                assert terminals[dc].satellite_index == held


async def test_physics_floors_hold_through_grpc(links):
    """Bent-pipe RTT is never below 4·h/c; hop delays are lengths / c (fibre c / 1.47) to 1 µs; every
    assigned satellite is above its ground node's mask; samples are at most 1 s apart."""
    elements = build_preset("starlink-2020-10", EPOCH)
    propagator = Propagator(elements)
    seen_available = 0
    for t in EPOCH + np.linspace(0, 7200, 41):
        h_min = float(np.nanmin(ecef_to_geodetic(propagator.ecef(t).r_km)[2]))
        for dc in DCS:
            route = (
                await links.stub.GetRoute(
                    links_pb2.GetRouteRequest(data_center_id=dc, at=to_timestamp(t)), timeout=10
                )
            ).route
            assert route.samples_step.ToTimedelta().total_seconds() <= 1.0
            assert len(route.delay_samples_ms) == 15
            if not route.available:
                assert np.isnan(route.one_way_delay_ms) and route.first_satellite_index == -1
                continue
            seen_available += 1
            assert 2 * route.one_way_delay_ms >= 4 * h_min / C_KM_S * 1e3
            finite = _samples(route)[np.isfinite(_samples(route))]
            assert np.all(2 * finite >= 4 * (h_min - 1.0) / C_KM_S * 1e3)  # h at other instants of the slot
            for hop in route.hops:
                speed = C_KM_S / FIBRE_INDEX if hop.segment == route_pb2.SEGMENT_KIND_FIBRE else C_KM_S
                assert hop.delay_ms == pytest.approx(hop.distance_km / speed * 1e3, abs=1e-6)
            assert sum(h.delay_ms for h in route.hops) == pytest.approx(route.one_way_delay_ms, abs=1e-3)
            assert [h.segment for h in route.hops] == [
                route_pb2.SEGMENT_KIND_UPLINK,
                route_pb2.SEGMENT_KIND_DOWNLINK,
                route_pb2.SEGMENT_KIND_FIBRE,
            ]
        state = await links.stub.GetLinkState(links_pb2.GetLinkStateRequest(at=to_timestamp(t)), timeout=10)
        for a in state.assignments:
            if a.satellite_index >= 0:
                assert a.elevation_deg >= 25.0 - 1e-9, a
                assert 500 < a.range_km < 1500
    assert seen_available >= 20  # the floors were really exercised


async def test_a_region_out_of_reach_is_an_outage_not_an_error(links):
    route = (
        await links.stub.GetRoute(
            links_pb2.GetRouteRequest(
                data_center_id="mdc-seattle", region_id="eastus", at=to_timestamp(EPOCH + 150)
            ),
            timeout=10,
        )
    ).route
    assert route.region_id == "eastus" and not route.available and not route.hops
    assert np.all(np.isnan(_samples(route)))


async def test_predict_routes_streams_chunks_and_a_consistent_summary(links):
    start, end = EPOCH + 100.0, EPOCH + 100.0 + 2 * 3600
    request = links_pb2.PredictRoutesRequest(
        data_center_id="mdc-anchorage",
        window=common_pb2.TimeWindow(start=to_timestamp(start), end=to_timestamp(end)),
        step=duration_pb2.Duration(seconds=1),
    )
    chunks, summaries = [], []
    async for message in links.stub.PredictRoutes(request, timeout=120):
        (chunks if message.HasField("chunk") else summaries).append(
            getattr(message, message.WhichOneof("payload"))
        )
    assert len(summaries) == 1 and len(chunks) == 2
    summary = summaries[0]
    for k, chunk in enumerate(chunks):
        assert to_unix(chunk.start) == start + 3600 * k and chunk.step.seconds == 1
        assert len(chunk.rtt_ms) == len(chunk.satellite_index) == len(chunk.capacity_up_mbps) == 3600
    rtt = np.concatenate([np.array(c.rtt_ms) for c in chunks])
    sats = np.concatenate([np.array(c.satellite_index) for c in chunks])
    t = start + np.arange(rtt.size)
    ok = np.isfinite(rtt)
    assert np.array_equal(sats < 0, ~ok)
    assert summary.samples == rtt.size
    assert summary.availability == pytest.approx(ok.mean())
    assert 0.1 < summary.availability < 0.95  # Anchorage on the 2020 shell: real, repeated outages
    assert summary.rtt_min_ms == pytest.approx(np.nanmin(rtt)) and summary.rtt_max_ms == pytest.approx(
        np.nanmax(rtt)
    )
    assert abs(summary.rtt_p50_ms - np.nanmedian(rtt)) <= 0.01
    # Outages are the maximal runs of samples without a route.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (~ok).astype(int), [0]])))
    runs = [(t[a], t[b] if b < t.size else end) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    assert [(to_unix(w.start), to_unix(w.end)) for w in summary.outages] == runs
    assert summary.longest_outage_s == max(b - a for a, b in runs)
    # Handovers happen at slot starts only, where the satellite changes.
    boundary = (t[1:] - 12) % 15 == 0
    changed = (sats[1:] != sats[:-1]) & (sats[1:] >= 0) & (sats[:-1] >= 0)
    assert not np.any(changed & ~boundary)
    assert np.count_nonzero(changed) <= summary.handovers <= np.count_nonzero(boundary)
    expected = summarize(reference_model().predict_route("mdc-anchorage", "westus2", start, end, 1.0), 1.0)
    assert summary.handovers == expected.handovers
    assert summary.compute_seconds > 0
    # The link model (a Starlink catalogue: calibrated by default) on top of today's floor.
    floor = np.concatenate([np.array(c.floor_rtt_ms) for c in chunks])
    loss = np.concatenate([np.array(c.loss_probability) for c in chunks])
    reference = np.concatenate(
        [c.rtt_ms for c in reference_model().predict_route("mdc-anchorage", "westus2", start, end, 1.0)]
    )
    np.testing.assert_array_equal(floor, reference)
    assert summary.link_model == "calibrated"
    assert np.all(rtt[ok] > floor[ok]) and np.all((loss[ok] > 0) & (loss[ok] < 1))
    assert summary.expected_loss == pytest.approx(loss[ok].mean())
    assert summary.floor_rtt_p50_ms == pytest.approx(np.median(floor[ok]), abs=0.01)


async def test_contact_windows_are_the_passes_over_the_ground_node(links):
    start, end = EPOCH, EPOCH + 3600
    window = common_pb2.TimeWindow(start=to_timestamp(start), end=to_timestamp(end))
    reply = await links.stub.ListContacts(
        links_pb2.ListContactsRequest(ground_id="mdc-anchorage", window=window), timeout=60
    )
    expected = find_passes(
        Propagator(build_preset("starlink-2020-10", EPOCH)), 61.2, -149.9, 0.0, start, end, 25.0
    )
    assert len(reply.contacts) == len(expected) > 0
    assert [c.satellite_index for c in reply.contacts] == [p.satellite_index for p in expected]
    np.testing.assert_allclose(
        [to_unix(c.rise_time) for c in reply.contacts], [p.rise_unix for p in expected], atol=1e-3
    )
    assert all(c.max_elevation_deg >= 25.0 for c in reply.contacts)
    steep = await links.stub.ListContacts(
        links_pb2.ListContactsRequest(
            ground_id="gw-quincy",
            window=window,
            min_elevation_deg=40,
            min_duration=duration_pb2.Duration(seconds=60),
        ),
        timeout=60,
    )
    assert steep.ground_id == "gw-quincy" and len(steep.contacts) > 0
    assert all(c.max_elevation_deg >= 40 and c.duration_s >= 60 for c in steep.contacts)


def _window(a, b):
    return common_pb2.TimeWindow(start=to_timestamp(a), end=to_timestamp(b))


BAD_INPUT = [
    (
        "GetRoute",
        links_pb2.GetRouteRequest(data_center_id="mdc-atlantis"),
        grpc.StatusCode.NOT_FOUND,
        "mdc-anchorage",
    ),
    ("GetRoute", links_pb2.GetRouteRequest(), grpc.StatusCode.INVALID_ARGUMENT, "data_center_id is required"),
    (
        "GetRoute",
        links_pb2.GetRouteRequest(data_center_id="mdc-seattle", region_id="mars-north"),
        grpc.StatusCode.NOT_FOUND,
        "unknown region 'mars-north'",
    ),
    (
        "PredictRoutes",
        links_pb2.PredictRoutesRequest(data_center_id="mdc-seattle", window=_window(EPOCH + 60, EPOCH)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must be after window.start",
    ),
    (
        "PredictRoutes",
        links_pb2.PredictRoutesRequest(
            data_center_id="mdc-seattle", window=_window(EPOCH, EPOCH + 60), step=duration_pb2.Duration()
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "step must be > 0",
    ),
    (
        "PredictRoutes",
        links_pb2.PredictRoutesRequest(data_center_id="mdc-seattle", window=_window(EPOCH, EPOCH + 1e9)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "7 days at 1 s",
    ),
    (
        "PredictRoutes",
        links_pb2.PredictRoutesRequest(data_center_id="mdc-nowhere", window=_window(EPOCH, EPOCH + 60)),
        grpc.StatusCode.NOT_FOUND,
        "unknown data center",
    ),
    (
        "ListContacts",
        links_pb2.ListContactsRequest(ground_id="gw-nowhere"),
        grpc.StatusCode.NOT_FOUND,
        "gw-kenai",
    ),
    (
        "ListContacts",
        links_pb2.ListContactsRequest(ground_id="gw-kenai", min_elevation_deg=95),
        grpc.StatusCode.INVALID_ARGUMENT,
        "min_elevation_deg 95",
    ),
    (
        "ListContacts",
        links_pb2.ListContactsRequest(ground_id="gw-kenai", window=_window(EPOCH, EPOCH + 20 * 86400)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "days",
    ),
    (
        "WatchEvents",
        links_pb2.WatchEventsRequest(data_center_ids=["mdc-atlantis"]),
        grpc.StatusCode.NOT_FOUND,
        "unknown data center 'mdc-atlantis'",
    ),
    (
        "WatchEvents",
        links_pb2.WatchEventsRequest(region_ids=["mars-north"]),
        grpc.StatusCode.NOT_FOUND,
        "unknown region",
    ),
]


async def test_bad_input_is_refused_clearly(links):
    for call, request, code, words in BAD_INPUT:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            result = getattr(links.stub, call)(request, timeout=10)
            if hasattr(result, "__aiter__"):
                async for _ in result:
                    pass
            else:
                await result
        assert err.value.code() == code, (call, request)
        assert words in err.value.details(), err.value.details()


def _cli(*argv):
    parser = argparse.ArgumentParser(prog="skyhaul")
    links_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


async def test_cli_route_rtt_contacts_and_events(links, tmp_path, capsys):
    addr = ("--links", links.address)
    assert (
        await links_cli.cmd_route(_cli("route", "mdc-anchorage", "--at", "2020-10-30T00:02:30Z", *addr)) == 0
    )
    out = capsys.readouterr().out
    assert "mdc-anchorage -> westus2" in out and "sat-372" in out and "gw-kenai" in out and "RTT" in out
    assert (
        await links_cli.cmd_route(
            _cli("route", "mdc-seattle", "--at", "2020-10-30T00:02:30Z", "--json", *addr)
        )
        == 0
    )
    route = json.loads(capsys.readouterr().out)
    assert route["data_center"] == "mdc-seattle" and [h["segment"] for h in route["hops"]] == [
        "uplink",
        "downlink",
        "fibre",
    ]
    assert (
        route["rtt_ms"] == pytest.approx(2 * route["one_way_delay_ms"])
        and len(route["delay_samples_ms"]) == 15
    )

    png = tmp_path / "rtt.png"
    args = _cli(
        "rtt", "mdc-anchorage", "--hours", "0.5", "--start", "2020-10-30T00:00:00Z", "--plot", str(png), *addr
    )
    assert await links_cli.cmd_rtt(args) == 0
    out = capsys.readouterr().out
    assert "1800 samples" in out and "availability" in out and "outages" in out
    assert "link model    calibrated (propagation floor p50" in out  # a Starlink catalogue
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] >= 1200 and image.size[1] >= 500

    assert await links_cli.cmd_contacts(_cli("contacts", "gw-quincy", "--hours", "0.5", *addr)) == 0
    out = capsys.readouterr().out
    assert "contact windows of gw-quincy" in out and out.count("STARLINK") + out.count("starlink") > 0

    assert await links_cli.cmd_events(_cli("events", *addr)) == 0
    out = capsys.readouterr().out
    assert "snapshot" in out and "mdc-anchorage -> westus2" in out

    code = await links_cli.cmd_route(_cli("route", "mdc-atlantis", *addr))
    err = capsys.readouterr().err
    assert code == 2 and "unknown data center 'mdc-atlantis'" in err


@pytest.mark.parametrize("hours", [0.25, 6.0, 24.0])
def test_rtt_plot_is_a_readable_png(tmp_path, hours):
    t = EPOCH + np.arange(0, hours * 3600, 1.0)
    rtt = 50 + 5 * np.sin(t / 300)
    rtt[(t % 600) < 90] = np.nan
    starts = t[np.flatnonzero(np.diff(np.isnan(rtt).astype(int)) == 1) + 1]
    outages = [(a, a + 90 - (a % 600)) for a in starts]
    out = plot_rtt(t, rtt, outages, 15.0, 12.0, tmp_path / "p.png", f"test {hours} h")
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.size == (1800, 750)
        # Not blank: the line, the shading and the text put many distinct colours on it.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50

"""Live link-state events through a real Redis and over gRPC, at high emulation speed.

Anchorage (61.2°N) on the October 2020 shell in bent-pipe mode sits at the edge of coverage: the
route drops every few minutes (a held satellite sets mid-slot) and comes back at a slot start.
At speed 120 a 15 s slot lasts 0.125 s of wall time, so 12 emulated minutes take 6 s.
"""

import asyncio
import contextlib
import logging
import time
from collections import defaultdict

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skyhaul.core.constellations import build_preset
from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.summary import summarize
from skyhaul.core.timeline import LinkModel
from skyhaul.links import route_view
from skyhaul.links.engine import LinkEngine, compute_slot
from skyhaul.links.service import LinksApp
from skyhaul.orbit.catalog import Catalog
from skyhaul.orbit.service import OrbitApp
from skyhaul.runtime.bus import (
    HEAD_FIELD,
    LINK_EVENTS_CHANNEL,
    EventPublisher,
    EventSubscriber,
    data_center_field,
    log_key,
    state_key,
)
from skyhaul.runtime.clock import EmulationClock, to_timestamp, to_unix
from skyhaul.runtime.redis_server import start_redis_server
from skyhaul.runtime.server import start_server
from skyhaul.runtime.settings import Settings
from skyhaul.v1 import common_pb2, links_pb2, links_pb2_grpc, route_pb2

EPOCH = 1604016000.0  # 2020-10-30T00:00:00Z
RUN_S = 12 * 60.0  # emulated seconds of live events per test


def scenario_yaml(constellation="starlink-2020-10", isl="none", speed=120, stall_ms=20):
    return f"""
name: links-events-test
epoch: "2020-10-30T00:00:00Z"
speed: {speed}
constellation: {{preset: {constellation}}}
scheduler: {{isl: "{isl}", handover_stall_ms: {stall_ms}}}
regions:
  - id: westus2
    gateways:
      - {{id: gw-kenai, lat: 60.55, lon: -151.26}}
      - {{id: gw-quincy, lat: 47.233, lon: -119.852}}
data_centers:
  - {{id: mdc-anchorage, home_region: westus2, location: {{lat: 61.2, lon: -149.9}}}}
  - {{id: mdc-seattle, home_region: westus2, location: {{lat: 47.6, lon: -122.3}}}}
"""


def predicted_outages(start, end):
    """The core's own prediction of Anchorage's outages (1 s samples)."""
    ground = GroundSegment(
        [Terminal("mdc-anchorage", 61.2, -149.9, home_region_id="westus2")],
        [Gateway("gw-kenai", "westus2", 60.55, -151.26), Gateway("gw-quincy", "westus2", 47.233, -119.852)],
        [Region("westus2", 47.233, -119.852)],
    )
    lm = LinkModel.from_elements(build_preset("starlink-2020-10", EPOCH), ground, SchedulerConfig(isl="none"))
    return summarize(lm.predict_route("mdc-anchorage", "westus2", start, end, 1.0), 1.0).outages


async def wait_health(channel, status, timeout=30.0):
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service="skyhaul.v1.LinkService"), timeout=2
            )
            if reply.status == status:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"LinkService health never became {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
    )


@contextlib.asynccontextmanager
async def running(tmp_path, redis_url, yamls, orbit_port=None):
    """orbit (unless given) and one links service per scenario text, all SERVING."""
    servers, channels, apps = [], [], []
    try:
        clock = None
        for k, text in enumerate(yamls):
            path = tmp_path / f"scenario-{k}.yaml"
            path.write_text(text)
            env = {"SKYHAUL_SCENARIO": str(path), "SKYHAUL_REDIS_URL": redis_url}
            scenario = Settings.from_env("links", env).scenario
            clock = clock or EmulationClock(scenario.epoch_unix, scenario.speed, time.time())
            if orbit_port is None:
                orbit = await start_server(OrbitApp(Catalog(scenario), clock), "127.0.0.1:0")
                servers.append(orbit)
                orbit_port = orbit.port
            settings = Settings.from_env("links", {**env, "SKYHAUL_ORBIT_ADDR": f"127.0.0.1:{orbit_port}"})
            app = LinksApp(
                settings, clock, channel=f"{LINK_EVENTS_CHANNEL}-{k}" if k else LINK_EVENTS_CHANNEL
            )
            server = await start_server(app, "127.0.0.1:0")
            servers.append(server)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            channels.append(channel)
            apps.append(app)
            await wait_health(channel, health_pb2.HealthCheckResponse.SERVING)
        yield clock, apps, channels
    finally:
        for channel in channels:
            await channel.close()
        for server in reversed(servers):
            await server.stop(0.1)


async def collect_until(events, until_unix, on_event=None):
    got = []
    async for event in events:
        got.append(event)
        if on_event is not None:
            await on_event(event)
        if to_unix(event.emulated_time) >= until_unix:
            return got
    return got


def _body(event):
    return event.WhichOneof("body")


async def test_live_events_are_gap_free_ordered_and_match_the_predicted_outages(tmp_path, redis_url):
    admin = aioredis.Redis.from_url(redis_url)
    killed = []

    async def kill_once(event):
        if event.sequence == 30 and not killed:
            killed.append(await admin.client_kill_filter(_type="pubsub"))

    async with running(tmp_path, redis_url, [scenario_yaml()]):
        subscriber = EventSubscriber(redis_url, after_sequence=0)
        stream = subscriber.events()
        try:
            events = await asyncio.wait_for(collect_until(stream, EPOCH + RUN_S, kill_once), 60)
        finally:
            await stream.aclose()
            await subscriber.aclose()
        # A subscriber that joins late starts from the latest snapshot and goes on from there.
        late = EventSubscriber(redis_url, after_sequence=None)
        stream = late.events()
        try:
            joined = []
            async for event in stream:
                joined.append(event)
                if len(joined) == 12:
                    break
        finally:
            await stream.aclose()
            await late.aclose()
    await admin.aclose()
    assert killed == [1]  # the subscriber's connection was really cut once

    # 1..N with no gap and no duplicate, through the reconnect.
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    first_slot = to_unix(events[0].emulated_time)
    assert _body(events[0]) == "slot_started"
    times = [to_unix(e.emulated_time) for e in events]
    assert times == sorted(times)

    # Within each slot: SlotStarted, then handovers, then routes, then link status.
    order = {"slot_started": 0, "handover": 1, "route_changed": 2, "link_status": 3}
    by_time = defaultdict(list)
    for e in events:
        by_time[to_unix(e.emulated_time)].append(order[_body(e)])
    slot_starts = {to_unix(e.slot_started.slot.start) for e in events if _body(e) == "slot_started"}
    for t, kinds in by_time.items():
        if t in slot_starts:
            assert kinds[0] == 0 and kinds == sorted(kinds), (t, kinds)
        else:  # between slot starts only link-status changes
            assert set(kinds) == {3}, (t, kinds)

    # Assignments change only at slot boundaries (:12, :27, :42, :57).
    handovers = [e for e in events if _body(e) == "handover"]
    assert handovers
    for e in handovers:
        start = to_unix(e.handover.slot.start)
        assert to_unix(e.emulated_time) == start and round(start) % 60 in (12, 27, 42, 57)
        if e.handover.from_satellite >= 0 and e.handover.to_satellite >= 0:
            assert e.handover.stall.nanos == 20_000_000

    # Terminal-facing routes: samples at most 1 s apart across the whole slot, from its start.
    routes = [e.route_changed.route for e in events if _body(e) == "route_changed"]
    assert {r.data_center_id for r in routes} == {"mdc-anchorage", "mdc-seattle"}
    for r in routes:
        assert r.samples_step.ToTimedelta().total_seconds() <= 1.0
        assert to_unix(r.samples_start) == to_unix(r.slot.start)
        assert len(r.delay_samples_ms) * r.samples_step.ToTimedelta().total_seconds() == pytest.approx(15.0)
        assert r.available == bool(np.isfinite(r.delay_samples_ms[0]))
        # The link model: its parameters for the terminal, its RTT and loss per sample.
        assert len(r.rtt_samples_ms) == len(r.loss_probability) == len(r.delay_samples_ms)
        if r.available:
            assert r.terminal_model.mode == "calibrated" and r.terminal_model.terminal_id == r.data_center_id
            assert r.rtt_samples_ms[0] > 2 * r.delay_samples_ms[0]

    # Link down/up alternate per data center and sit exactly where the core predicts the outages.
    status = defaultdict(list)
    for e in events:
        if _body(e) == "link_status":
            status[e.link_status.data_center_id].append(
                (to_unix(e.emulated_time), e.link_status.up, e.link_status.reason)
            )
    anchorage = status["mdc-anchorage"]
    ups = [s[1] for s in anchorage]
    assert all(a != b for a, b in zip(ups, ups[1:], strict=False)), anchorage
    # (An outage in progress when the engine started begins at its first slot in this prediction.)
    outages = predicted_outages(first_slot, EPOCH + RUN_S + 60)
    assert sum(first_slot < a < times[-1] for a, _ in outages) >= 2  # real outages inside the window we ran
    downs = {t for t, up, _ in anchorage[1:] if not up}
    recoveries = {t for t, up, _ in anchorage[1:] if up}
    # A host stalled for more than a slot makes the engine skip to the current slot; a change in a
    # skipped slot is then reported at the next slot start. Without skips both sets are exact.
    slots = SchedulerConfig()
    skipped = set(first_slot + 15.0 * np.arange(round((max(slot_starts) - first_slot) / 15))) - slot_starts
    after_skip = {s for s in slot_starts if s - 15.0 in skipped}
    expected_downs = {
        a for a, _ in outages if first_slot < a <= times[-1] and slots.slot_start(a) not in skipped
    }
    expected_ups = {b for _, b in outages if first_slot < b <= times[-1] and b not in skipped}
    assert expected_downs <= downs and downs - expected_downs <= after_skip
    assert expected_ups <= recoveries and recoveries - expected_ups <= after_skip
    assert all("deg" in reason for _, up, reason in anchorage if not up)
    seattle = [s[1] for s in status["mdc-seattle"]]
    assert all(a != b for a, b in zip(seattle, seattle[1:], strict=False))

    # The late subscriber got the snapshot of the latest state first, then every later event.
    assert _body(joined[0]) == "snapshot"
    snapshot = joined[0].snapshot
    assert {r.data_center_id for r in snapshot.routes} == {"mdc-anchorage", "mdc-seattle"}
    assert [e.sequence for e in joined[1:]] == list(range(joined[0].sequence + 1, joined[0].sequence + 12))


async def test_watch_events_filters_by_data_center_and_resumes(tmp_path, redis_url):
    async with running(tmp_path, redis_url, [scenario_yaml()]) as (clock, _, channels):
        stub = links_pb2_grpc.LinkServiceStub(channels[0])
        filtered = stub.WatchEvents(
            links_pb2.WatchEventsRequest(data_center_ids=["mdc-anchorage"], include_snapshot=True)
        )
        got = []
        async for event in filtered:
            got.append(event)
            if len(got) == 40:
                break
        filtered.cancel()
        assert _body(got[0]) == "snapshot"
        assert [r.data_center_id for r in got[0].snapshot.routes] == ["mdc-anchorage"]
        assert "mdc-seattle" not in {a.ground_id for a in got[0].snapshot.assignments}
        kinds = {_body(e) for e in got[1:]}
        assert {"slot_started", "route_changed"} <= kinds
        for e in got[1:]:
            if _body(e) == "route_changed":
                assert e.route_changed.route.data_center_id == "mdc-anchorage"
            if _body(e) in ("handover", "link_status"):
                assert "mdc-seattle" not in str(e)
        sequences = [e.sequence for e in got[1:]]
        assert sequences == sorted(sequences) and sequences[0] > got[0].sequence

        # Resume after a sequence: everything after it, in order, no gap (no filter).
        after = sequences[5]
        resumed = stub.WatchEvents(links_pb2.WatchEventsRequest(after_sequence=after))
        again = []
        async for event in resumed:
            again.append(event.sequence)
            if len(again) == 25:
                break
        resumed.cancel()
        assert again == list(range(after + 1, after + 26))

        # From now on without a snapshot: the first event is a live one.
        live = stub.WatchEvents(links_pb2.WatchEventsRequest())
        first = await live.__aiter__().__anext__()
        live.cancel()
        assert _body(first) != "snapshot" and first.sequence > again[-1] - 25


async def test_gen1_with_grid_closes_the_outages_of_the_2020_bent_pipe(tmp_path, redis_url):
    """Compared through PredictRoutes: the same site and hour, two constellations and ISL modes."""
    scenarios = [scenario_yaml(speed=1), scenario_yaml("starlink-gen1", "+grid", speed=1)]
    async with running(tmp_path, redis_url, scenarios) as (_, __, channels):
        window = common_pb2.TimeWindow(start=to_timestamp(EPOCH), end=to_timestamp(EPOCH + 3600))
        summaries = []
        for channel in channels:
            request = links_pb2.PredictRoutesRequest(
                data_center_id="mdc-anchorage", window=window, step=duration_pb2.Duration(seconds=1)
            )
            async for message in links_pb2_grpc.LinkServiceStub(channel).PredictRoutes(request, timeout=300):
                if message.HasField("summary"):
                    summaries.append(message.summary)
    old, new = summaries
    assert len(old.outages) >= 5 and old.availability < 0.9
    assert len(new.outages) < len(old.outages)
    assert new.availability > old.availability + 0.05


async def test_engine_rides_out_a_redis_outage(tmp_path, caplog):
    """Redis gone: health NOT_SERVING, one warning, computing goes on; Redis back: SERVING, and
    events flow again with the numbering going on."""
    caplog.set_level(logging.WARNING, logger="skyhaul.links.engine")
    own = start_redis_server(data_dir=tmp_path / "redis")
    port = own.port
    try:
        async with running(tmp_path, own.url, [scenario_yaml()]) as (_, apps, channels):
            engine = apps[0].engine
            client = aioredis.Redis.from_url(own.url)
            before = (await client.xrevrange(log_key(LINK_EVENTS_CHANNEL), count=1))[0][0]
            await client.aclose()
            own.stop()
            await wait_health(channels[0], health_pb2.HealthCheckResponse.NOT_SERVING)
            dropped = engine.events_dropped
            await asyncio.sleep(0.5)
            assert engine.events_dropped > dropped or not engine.publishing  # it kept walking slots
            own = start_redis_server(port=port, data_dir=tmp_path / "redis")
            await wait_health(channels[0], health_pb2.HealthCheckResponse.SERVING)
            client = aioredis.Redis.from_url(own.url)
            for _ in range(100):
                entries = await client.xrange(log_key(LINK_EVENTS_CHANNEL))
                if len(entries) >= 3:
                    break
                await asyncio.sleep(0.05)
            await client.aclose()
        sequences = [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]
        assert sequences[0] > int(before.split(b"-")[0]) and sequences == sorted(sequences)
        warnings = [r for r in caplog.records if "cannot publish link events" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        own.stop()


async def test_a_mid_slot_outage_rewrites_only_that_data_center_s_state(redis_url):
    ground = GroundSegment(
        [
            Terminal("mdc-anchorage", 61.2, -149.9, home_region_id="westus2"),
            Terminal("mdc-seattle", 47.6, -122.3, home_region_id="westus2"),
        ],
        [Gateway("gw-kenai", "westus2", 60.55, -151.26), Gateway("gw-quincy", "westus2", 47.233, -119.852)],
        [Region("westus2", 47.233, -119.852)],
    )
    config = SchedulerConfig(isl="none", handover_stall_ms=20)
    model = route_view.new_model(build_preset("starlink-2020-10", EPOCH), ground, config)
    # An outage that starts inside a slot: the held satellite sets before the slot ends.
    start = next(a for a, _ in predicted_outages(EPOCH, EPOCH + 3600) if EPOCH < a != config.slot_start(a))
    plan = compute_slot(model, config.slot_start(start))
    change = next(c for c in plan.changes if not c.up)
    assert plan.data_centers[change.data_center].id == "mdc-anchorage" and change.t_unix == start

    clock = EmulationClock(EPOCH, 1.0, time.time())
    engine = LinkEngine(ground, config, clock, redis_url, "mid-slot")
    engine._publisher = EventPublisher(redis_url, "mid-slot")
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await engine._publish_slot(plan)
        before = await admin.hgetall(state_key("mid-slot"))
        await engine._publish_change(plan, change)
        after = await admin.hgetall(state_key("mid-slot"))
        anchorage = await engine._publisher.latest_snapshot(["mdc-anchorage"])
        whole = await engine._publisher.latest_snapshot()
    finally:
        await engine._publisher.aclose()
        engine._executor.shutdown()
        await admin.aclose()

    assert {name for name in after if after[name] != before.get(name)} == {
        data_center_field("mdc-anchorage"),
        HEAD_FIELD,
    }
    route = anchorage.routes[0]
    assert not route.available and to_unix(route.at) == start and route.capacity_up_mbps == 0.0
    terminals = [a for a in anchorage.assignments if a.kind == route_pb2.GROUND_KIND_TERMINAL]
    assert [(a.ground_id, a.satellite_index) for a in terminals] == [("mdc-anchorage", -1)]
    assert {a.ground_id for a in anchorage.assignments} - {"mdc-anchorage"} == {"gw-kenai", "gw-quincy"}
    assert anchorage.sequence == whole.sequence == engine._publisher._last_sequence
    assert whole.routes[1].available == plan.data_centers[1].up  # Seattle's entry untouched

"""Each bad input named in issue 16, against the real services on loopback: a clear
INVALID_ARGUMENT, an echo of at most 200 characters, and no change of state."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from support.storage import clock_for, list_blobs, list_objects, make_settings, put_object

from skyhaul.contract import bounds
from skyhaul.links.service import LinksApp
from skyhaul.mdc.service import MdcApp
from skyhaul.mdc.sync import SyncConfig
from skyhaul.orbit.catalog import Catalog
from skyhaul.orbit.service import OrbitApp
from skyhaul.region.service import RegionApp
from skyhaul.runtime.bus import EventPublisher
from skyhaul.runtime.redis_server import free_port
from skyhaul.runtime.server import start_server
from skyhaul.terminal.service import TerminalApp
from skyhaul.v1 import (
    common_pb2,
    events_pb2,
    links_pb2,
    links_pb2_grpc,
    mdc_pb2,
    mdc_pb2_grpc,
    orbit_pb2,
    orbit_pb2_grpc,
    region_pb2,
    region_pb2_grpc,
    terminal_pb2,
    terminal_pb2_grpc,
)

EPOCH = 1604016000
DC, REGION, CONTAINER = "mdc-test", "westus2", "bounds"
SCENARIO = f"""
name: bounds
epoch: "2020-10-30T00:00:00Z"
speed: 1
constellation: {{preset: o3b-meo}}
regions:
  - id: {REGION}
    gateways:
      - {{id: gw-belem, lat: -1.45, lon: -48.5}}
data_centers:
  - {{id: {DC}, home_region: {REGION}, location: {{lat: 0.5, lon: -50.0}}}}
"""
HUGE = "z" * (10 * 2**20)


@pytest.fixture
async def services(tmp_path, redis_url):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    env = {"SKYHAUL_REDIS_URL": redis_url}
    settings = make_settings("orbit", scenario, tmp_path / "orbit", **env)
    clock = clock_for(settings)
    orbit = await start_server(OrbitApp(Catalog(settings.scenario), clock), "127.0.0.1:0")
    links_app = LinksApp(
        make_settings("links", scenario, tmp_path, SKYHAUL_ORBIT_ADDR=f"127.0.0.1:{orbit.port}", **env), clock
    )
    links = await start_server(links_app, "127.0.0.1:0")
    region = await start_server(
        RegionApp(make_settings("region", scenario, tmp_path, **env), clock), "127.0.0.1:0"
    )
    mdc_app = MdcApp(
        make_settings("mdc", scenario, tmp_path, SKYHAUL_REGION_ADDR=f"127.0.0.1:{free_port()}", **env),
        clock,
        sync_config=SyncConfig(rpc_timeout_s=1, backoff_max_s=1),
        reconcile_interval_s=0,
    )
    mdc = await start_server(mdc_app, "127.0.0.1:0")
    terminal = await start_server(
        TerminalApp(make_settings("terminal", scenario, tmp_path, SKYHAUL_DATA_CENTER_ID=DC, **env), clock),
        "127.0.0.1:0",
    )
    servers = [terminal, mdc, region, links, orbit]
    options = [("grpc.max_receive_message_length", 64 * 2**20), ("grpc.max_send_message_length", 64 * 2**20)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{s.port}", options=options)
        for s in (orbit, links, region, mdc, terminal)
    ]
    deadline = time.monotonic() + 60
    while links_app.elements is None:
        assert time.monotonic() < deadline, "links never loaded the elements"
        await asyncio.sleep(0.1)
    try:
        yield SimpleNamespace(
            orbit=orbit_pb2_grpc.OrbitServiceStub(channels[0]),
            links=links_pb2_grpc.LinkServiceStub(channels[1]),
            region=region_pb2_grpc.CloudRegionServiceStub(channels[2]),
            mdc=mdc_pb2_grpc.ModularDataCenterServiceStub(channels[3]),
            terminal=terminal_pb2_grpc.TerminalServiceStub(channels[4]),
            redis_url=redis_url,
        )
    finally:
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.stop(0.1)


async def refused(call, code=grpc.StatusCode.INVALID_ARGUMENT) -> str:
    """Run a call (unary or stream), expect `code`; returns the details."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        result = call()
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    assert error.value.code() == code, error.value.details()
    details = error.value.details()
    assert len(details) <= 2100 and "z" * 201 not in details
    return details


def stamp(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def window(start, end=None) -> common_pb2.TimeWindow:
    w = common_pb2.TimeWindow(start=start)
    if end is not None:
        w.end.CopyFrom(end)
    return w


async def test_get_route_far_in_the_past_or_future_is_invalid_argument(services) -> None:
    for seconds in (2**62, -(2**62)):
        details = await refused(
            lambda s=seconds: services.links.GetRoute(
                links_pb2.GetRouteRequest(data_center_id=DC, at=stamp(s)), timeout=10
            )
        )
        assert "emulation range" in details and "1957" in details
    # Inside the range every time answers, its edges included (no IndexError deep in the core).
    for seconds in (int(bounds.EARLIEST_UNIX), EPOCH, int(time.time()), int(bounds.LATEST_UNIX)):
        reply = await services.links.GetRoute(
            links_pb2.GetRouteRequest(data_center_id=DC, at=stamp(seconds)), timeout=30
        )
        assert reply.route.data_center_id == DC


@pytest.mark.parametrize("nanos", [-1, 2_000_000_000])
async def test_timestamp_nanos_out_of_range_are_refused_by_every_rpc_that_takes_a_time(
    services, nanos
) -> None:
    bad = stamp(EPOCH, nanos)
    observer = common_pb2.GeoPoint(latitude_deg=0.5, longitude_deg=-50)
    step = duration_pb2.Duration(seconds=1)
    calls = {
        "GetPositions": lambda: services.orbit.GetPositions(
            orbit_pb2.GetPositionsRequest(at=bad), timeout=10
        ),
        "StreamPositions": lambda: services.orbit.StreamPositions(
            orbit_pb2.StreamPositionsRequest(start=bad, step=step, count=2), timeout=10
        ),
        "GetLookAngles": lambda: services.orbit.GetLookAngles(
            orbit_pb2.GetLookAnglesRequest(observer=observer, at=bad), timeout=10
        ),
        "ListPasses start": lambda: services.orbit.ListPasses(
            orbit_pb2.ListPassesRequest(observer=observer, window=window(bad)), timeout=10
        ),
        "ListPasses end": lambda: services.orbit.ListPasses(
            orbit_pb2.ListPassesRequest(observer=observer, window=window(stamp(EPOCH), bad)), timeout=10
        ),
        "GetLinkState": lambda: services.links.GetLinkState(
            links_pb2.GetLinkStateRequest(at=bad), timeout=10
        ),
        "GetRoute": lambda: services.links.GetRoute(
            links_pb2.GetRouteRequest(data_center_id=DC, at=bad), timeout=10
        ),
        "PredictRoutes": lambda: services.links.PredictRoutes(
            links_pb2.PredictRoutesRequest(data_center_id=DC, window=window(bad)), timeout=10
        ),
        "ListContacts": lambda: services.links.ListContacts(
            links_pb2.ListContactsRequest(ground_id=DC, window=window(stamp(EPOCH), bad)), timeout=10
        ),
        "Echo": lambda: services.region.Echo(region_pb2.EchoRequest(payload=b"x", sent_at=bad), timeout=10),
    }
    for name, call in calls.items():
        details = await refused(call)
        assert "nanos" in details and str(nanos) in details, (name, details)


async def test_observer_altitude_and_max_passes_are_bounded(services) -> None:
    deep = common_pb2.GeoPoint(latitude_deg=0.5, longitude_deg=-50, altitude_m=-1e9)
    details = await refused(
        lambda: services.orbit.GetLookAngles(
            orbit_pb2.GetLookAnglesRequest(observer=deep, at=stamp(EPOCH)), timeout=10
        )
    )
    assert "altitude_m" in details
    await refused(lambda: services.orbit.ListPasses(orbit_pb2.ListPassesRequest(observer=deep), timeout=10))
    ground = common_pb2.GeoPoint(latitude_deg=0.5, longitude_deg=-50)
    details = await refused(
        lambda: services.orbit.ListPasses(
            orbit_pb2.ListPassesRequest(
                observer=ground, window=window(stamp(EPOCH), stamp(EPOCH + 3600)), max_passes=-1
            ),
            timeout=10,
        )
    )
    assert "max_passes -1" in details


async def test_a_10_mb_name_is_refused_without_being_echoed(services) -> None:
    calls = [
        lambda: services.links.GetRoute(links_pb2.GetRouteRequest(data_center_id=HUGE), timeout=30),
        lambda: services.orbit.GetConstellation(
            orbit_pb2.GetConstellationRequest(constellation=HUGE), timeout=30
        ),
        lambda: services.region.CreateContainer(
            region_pb2.CreateContainerRequest(container=HUGE), timeout=30
        ),
        lambda: services.region.GetBlobProperties(
            region_pb2.GetBlobPropertiesRequest(container="mdc-sync", blob=HUGE), timeout=30
        ),
        lambda: services.mdc.GetObject(mdc_pb2.GetObjectRequest(key=HUGE), timeout=30),
        lambda: services.mdc.DeleteObject(mdc_pb2.DeleteObjectRequest(key=HUGE), timeout=30),
    ]
    for call in calls:
        await refused(call)
    await refused(lambda: put_object(services.mdc, HUGE, b"data"))
    assert await list_objects(services.mdc) == []
    assert (
        await services.region.ListContainers(region_pb2.ListContainersRequest(), timeout=5)
    ).containers == []


async def test_watch_events_from_a_future_sequence_is_refused(services) -> None:
    details = await refused(
        lambda: services.links.WatchEvents(links_pb2.WatchEventsRequest(after_sequence=5), timeout=10)
    )
    assert "after_sequence 5" in details and "newest" in details
    async with EventPublisher(services.redis_url) as publisher:
        for _ in range(3):
            event = events_pb2.LinkEvent()
            event.link_status.data_center_id = DC
            event.link_status.region_id = REGION
            event.link_status.up = True
            newest = await publisher.publish(event)
    await refused(
        lambda: services.links.WatchEvents(
            links_pb2.WatchEventsRequest(after_sequence=newest + 1), timeout=10
        )
    )
    # Resuming from a sequence the log holds replays what came after it, nothing before.
    stream = services.links.WatchEvents(links_pb2.WatchEventsRequest(after_sequence=newest - 1), timeout=5)
    first = await stream.read()
    assert first.sequence == newest
    stream.cancel()


async def test_commit_block_list_with_mixed_block_id_lengths_changes_nothing(services) -> None:
    region = services.region
    await region.CreateContainer(region_pb2.CreateContainerRequest(container=CONTAINER), timeout=5)
    ids = ["QUFBQQ==", "QkJCQg=="]  # 8 characters each
    for block_id in ids:
        await region.StageBlock(
            region_pb2.StageBlockRequest(container=CONTAINER, blob="b", block_id=block_id, data=b"0123"),
            timeout=5,
        )
    before = await region.GetBlockList(
        region_pb2.GetBlockListRequest(container=CONTAINER, blob="b"), timeout=5
    )
    details = await refused(
        lambda: region.CommitBlockList(
            region_pb2.CommitBlockListRequest(container=CONTAINER, blob="b", block_ids=[ids[0], "QkJC"]),
            timeout=5,
        )
    )
    assert "same length" in details
    # Staging a block of another length next to them is refused too (Azure's rule holds per blob).
    await refused(
        lambda: region.StageBlock(
            region_pb2.StageBlockRequest(container=CONTAINER, blob="b", block_id="QkJC", data=b"01"),
            timeout=5,
        )
    )
    after = await region.GetBlockList(
        region_pb2.GetBlockListRequest(container=CONTAINER, blob="b"), timeout=5
    )
    assert after == before and not after.blob_exists
    assert await list_blobs(region, CONTAINER) == []
    committed = await region.CommitBlockList(
        region_pb2.CommitBlockListRequest(container=CONTAINER, blob="b", block_ids=ids), timeout=5
    )
    assert committed.properties.size == 8


async def test_overrides_and_workloads_with_absurd_durations_change_nothing(services) -> None:
    before = (await services.terminal.GetStats(terminal_pb2.GetStatsRequest(), timeout=5)).overrides
    details = await refused(
        lambda: services.terminal.SetOverrides(
            terminal_pb2.SetOverridesRequest(
                forced_outage=True, duration=duration_pb2.Duration(seconds=3 * 10**11)
            ),
            timeout=5,
        )
    )
    assert "duration" in details
    assert (await services.terminal.GetStats(terminal_pb2.GetStatsRequest(), timeout=5)).overrides == before
    spec = mdc_pb2.WorkloadSpec(objects_per_batch=1, interval=duration_pb2.Duration(seconds=1, nanos=-5))
    status_before = await services.mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
    await refused(lambda: services.mdc.SetWorkload(mdc_pb2.SetWorkloadRequest(workload=spec), timeout=5))
    status_after = await services.mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
    assert status_after.workload == status_before.workload

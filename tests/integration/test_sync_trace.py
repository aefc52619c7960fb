"""The sync span of a real `skyhaul serve mdc`, exported to a real OTLP/gRPC receiver, against a
real region and link events published on a real Redis.

Issue 14: a sync span said link_up=false while syncing over satellite 372. skyhaul.link_up came
from the dish's state at that instant (down in a handover stall, before it applies a route just
published, after its satellite set), not from the link the sync obeys. Now it is the data center's
view, and that view ends exactly when the route says its satellite sets, as the dish's does: the
links service's link_status event for that instant is no longer needed on time (without it the
view stayed up for the stale grace, 1 s, and the data center synced into the dead link)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import duration_pb2
from support.otlp import OtlpReceiver
from support.storage import (
    DATA_CENTER,
    REGION,
    ServiceProcess,
    all_synced,
    put_object,
    start_region,
    wait_until,
    write_scenario,
)

from skyhaul.runtime import telemetry
from skyhaul.runtime.bus import EventPublisher
from skyhaul.runtime.clock import to_timestamp
from skyhaul.v1 import events_pb2, mdc_pb2_grpc, route_pb2

EPOCH = "2020-10-30T00:00:00Z"
EPOCH_UNIX = 1_604_016_000.0


def _route(start: float, satellite: int, samples: list[float]) -> events_pb2.LinkEvent:
    route = route_pb2.Route(
        data_center_id=DATA_CENTER,
        region_id=REGION,
        at=to_timestamp(start),
        available=True,
        one_way_delay_ms=20.0,
        capacity_up_mbps=50.0,
        capacity_down_mbps=50.0,
        slot=route_pb2.Slot(index=1, start=to_timestamp(start), end=to_timestamp(start + 15.0)),
        first_satellite_index=satellite,
        samples_start=to_timestamp(start),
        samples_step=duration_pb2.Duration(seconds=1),
        delay_samples_ms=samples,
    )
    return events_pb2.LinkEvent(emulated_time=route.at, route_changed=events_pb2.RouteChanged(route=route))


def _down() -> events_pb2.LinkEvent:
    event = events_pb2.LinkEvent()
    event.link_status.data_center_id = DATA_CENTER
    event.link_status.region_id = REGION
    event.link_status.up = False
    event.link_status.reason = "no satellite above 25.0 deg"
    return event


@pytest.mark.timeout(120)
async def test_no_sync_starts_after_the_satellite_set_and_the_span_says_the_link_it_crossed(
    tmp_path, redis_url, monkeypatch
):
    scenario = write_scenario(tmp_path / "scenario.yaml")
    region_app, region_server = await start_region(scenario, tmp_path / "region")
    clock_start = time.time()

    def emulated_now() -> float:
        return EPOCH_UNIX + time.time() - clock_start

    with OtlpReceiver() as receiver:
        mdc = ServiceProcess(
            "mdc",
            {
                "SKYHAUL_SCENARIO": str(scenario),
                "SKYHAUL_DATA_DIR": str(tmp_path / "mdc"),
                "SKYHAUL_REGION_ADDR": f"127.0.0.1:{region_server.port}",
                "SKYHAUL_TERMINAL_ADDR": "127.0.0.1:9",  # no dish: the span notes the error
                "SKYHAUL_REDIS_URL": redis_url,
                "SKYHAUL_CLOCK_START": repr(clock_start),
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "SKYHAUL_TRACE_VERBOSE": "0",
            },
            tmp_path / "mdc.log",
        )
        try:
            await mdc.wait_serving()
            async with EventPublisher(redis_url) as publisher:
                async with grpc.aio.insecure_channel(mdc.address) as channel:
                    stub = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
                    await publisher.publish(_down())
                    await put_object(stub, "probe/after-set", b"x" * 10_000)
                    # Satellite 372's slot began 1.1 s ago; its samples end after 1 s: it has set.
                    start = emulated_now() - 1.1
                    await publisher.publish(_route(start, 372, [20.0] + [float("nan")] * 15))
                    await asyncio.sleep(0.5)  # the old view stayed up 1 s past the set: a sync started
                    assert not await all_synced(stub, 1)
                    # The next slot: satellite 9, up for the whole slot.
                    await publisher.publish(_route(emulated_now(), 9, [21.0] * 16))
                    await wait_until(lambda: all_synced(stub, 1), "the probe synced")
        finally:
            mdc.stop()
            await region_server.stop(grace=0.1)
        spans = receiver.spans()
    assert region_app.calls["CommitBlockList"] == 1
    syncs = [
        s
        for s in spans
        if s.service == telemetry.service_name("mdc")
        and s.name == "sync object"
        and s.attributes.get("skyhaul.key") == "probe/after-set"
    ]
    assert syncs, sorted({s.name for s in spans})
    for sync in syncs:
        assert sync.attributes["skyhaul.link_up"] is True
        assert sync.attributes["skyhaul.satellite"] == 9
        assert sync.attributes["skyhaul.terminal_error"] == "UNAVAILABLE"

"""The data center service and its sync worker against a real region, real Redis and real files:
every object arrives exactly once with its sha256; an mdc killed with SIGKILL mid-upload resumes
from its last block; a link-down event stops every RPC until the link is up; failures without
events back off and never fail an object; priorities; the put API's bad input; the workload."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest
from support.storage import (
    DATA_CENTER,
    REGION,
    ServiceProcess,
    all_synced,
    list_blobs,
    list_objects,
    payload,
    put_object,
    read_blob,
    sha256_hex,
    start_mdc,
    start_region,
    wait_until,
    write_scenario,
)

from skyhaul.mdc.sync import SyncConfig
from skyhaul.mdc.workload import object_content, workload_key
from skyhaul.runtime.bus import EventPublisher
from skyhaul.runtime.redis_server import free_port
from skyhaul.terminal import EmulatedLink, LinkProfile, TerminalRelay
from skyhaul.v1 import events_pb2, mdc_pb2, mdc_pb2_grpc, region_pb2_grpc

CONTAINER = "mdc-sync"
FAST_RETRY = SyncConfig(
    block_size_bytes=64 * 1024, backoff_initial_s=0.05, backoff_max_s=0.3, rpc_timeout_s=5
)


class Pair:
    """A region and a data center wired straight together (no terminal), with stubs."""

    def __init__(self, region_app, region_server, mdc_app, mdc_server) -> None:
        self.region_app, self.region_server = region_app, region_server
        self.mdc_app, self.mdc_server = mdc_app, mdc_server
        self.region_channel = grpc.aio.insecure_channel(f"127.0.0.1:{region_server.port}")
        self.mdc_channel = grpc.aio.insecure_channel(f"127.0.0.1:{mdc_server.port}")
        self.region = region_pb2_grpc.CloudRegionServiceStub(self.region_channel)
        self.mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(self.mdc_channel)

    async def close(self) -> None:
        await self.mdc_channel.close()
        await self.region_channel.close()
        await self.mdc_server.stop(grace=0.1)
        if self.region_server is not None:
            await self.region_server.stop(grace=0.1)


@pytest.fixture
async def pair(tmp_path: Path, redis_url: str):
    scenario = write_scenario(tmp_path / "scenario.yaml")
    region_app, region_server = await start_region(scenario, tmp_path / "region")
    mdc_app, mdc_server = await start_mdc(
        scenario, tmp_path / "mdc", f"127.0.0.1:{region_server.port}", redis_url, FAST_RETRY
    )
    pair = Pair(region_app, region_server, mdc_app, mdc_server)
    yield pair
    await pair.close()


def link_status(up: bool) -> events_pb2.LinkEvent:
    event = events_pb2.LinkEvent()
    event.link_status.data_center_id = DATA_CENTER
    event.link_status.region_id = REGION
    event.link_status.up = up
    event.link_status.reason = "" if up else "no satellite above 25.0 deg"
    return event


async def test_many_objects_arrive_exactly_once_with_equal_sha256(pair: Pair) -> None:
    sizes = [0, 1, 65535, 65536, 65537, 200_000, 1_000_000] + [(i * 37_911) % 300_000 for i in range(33)]
    priorities = [
        mdc_pb2.PRIORITY_CLASS_TELEMETRY,
        mdc_pb2.PRIORITY_CLASS_INTERACTIVE,
        mdc_pb2.PRIORITY_CLASS_BULK,
    ]
    data = {f"site/{i:03d}.bin": payload(size, i) for i, size in enumerate(sizes)}
    infos = await asyncio.gather(
        *(
            put_object(
                pair.mdc,
                key,
                blob,
                priorities[i % 3],
                metadata={"n": str(i)},
                content_type="application/x-test",
            )
            for i, (key, blob) in enumerate(data.items())
        )
    )
    assert all(info.sha256_hex == sha256_hex(data[info.key]) for info in infos)
    await wait_until(lambda: all_synced(pair.mdc, len(data)), "every object synced")

    blobs = {b.name: b for b in await list_blobs(pair.region, CONTAINER)}
    assert set(blobs) == set(data)  # none missing, none extra
    objects = {o.key: o for o in await list_objects(pair.mdc)}
    for key, blob in data.items():
        assert blobs[key].sha256_hex == sha256_hex(blob) and blobs[key].size == len(blob)
        assert objects[key].region_etag == blobs[key].etag  # the mdc verified this very commit
        assert blobs[key].content_type == "application/x-test" and "n" in blobs[key].metadata
        assert "skyhaul_content_type" not in blobs[key].metadata
    assert pair.region_app.calls["CommitBlockList"] == len(data)  # each committed exactly once
    for key in ("site/006.bin", "site/001.bin", "site/000.bin"):
        assert await read_blob(pair.region, CONTAINER, key) == data[key]

    status = await pair.mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
    total = sum(sizes)
    assert status.totals.objects_put == len(data) and status.totals.objects_synced == len(data)
    assert status.totals.bytes_synced == total and status.totals.bytes_sent == total  # nothing re-sent
    assert status.backlog.objects == 0 and status.backlog.bytes == 0 and not status.sync_paused
    assert status.link.up and status.data_center_id == DATA_CENTER

    # The data center still serves its copy, with the sync state.
    messages = [m async for m in pair.mdc.GetObject(mdc_pb2.GetObjectRequest(key="site/006.bin"), timeout=10)]
    assert messages[0].object.state == mdc_pb2.SYNC_STATE_SYNCED and messages[0].object.metadata == {"n": "6"}
    assert b"".join(m.data for m in messages) == data["site/006.bin"]


async def test_put_refuses_bad_input_and_stores_nothing(pair: Pair) -> None:
    def header(**fields) -> mdc_pb2.PutObjectRequest:
        return mdc_pb2.PutObjectRequest(header=mdc_pb2.ObjectHeader(**fields))

    async def put(messages: list[mdc_pb2.PutObjectRequest]) -> grpc.aio.AioRpcError:
        async def stream():
            for message in messages:
                yield message

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pair.mdc.PutObject(stream(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        return refused.value

    data = mdc_pb2.PutObjectRequest(data=b"payload")
    assert "before the header" in (await put([data, header(key="a")])).details()
    assert "second header" in (await put([header(key="a"), data, header(key="b")])).details()
    assert "no header" in (await put([])).details()
    assert "'..' path segment" in (await put([header(key="../../etc/passwd"), data])).details()
    assert "is empty" in (await put([header(key=""), data])).details()
    mismatch = await put([header(key="a", expected_sha256=hashlib.sha256(b"other").digest()), data])
    assert "nothing was stored" in mismatch.details()
    assert "32 raw bytes" in (await put([header(key="a", expected_sha256=b"short"), data])).details()
    assert (
        "reserved" in (await put([header(key="a", metadata={"skyhaul_content_type": "x"}), data])).details()
    )
    assert "PriorityClass" in (await put([header(key="a", priority=9), data])).details()
    assert await list_objects(pair.mdc) == []
    assert pair.mdc_app.store.used_bytes() == 0
    assert list((pair.mdc_app.store_dir / "tmp").iterdir()) == []

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        async for _ in pair.mdc.GetObject(mdc_pb2.GetObjectRequest(key="nope"), timeout=5):
            pass
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_link_down_event_stops_every_rpc_until_up_then_telemetry_goes_first(
    pair: Pair, redis_url: str
) -> None:
    await put_object(pair.mdc, "before", payload(10_000, 1))
    await wait_until(lambda: all_synced(pair.mdc, 1), "the first object synced")

    async with EventPublisher(redis_url) as publisher:
        await publisher.publish(link_status(up=False))

        async def paused() -> bool:
            return (await pair.mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)).sync_paused

        await wait_until(paused, "the data center to see the link down")
        calls_while_down = sum(pair.region_app.calls.values())
        bulk = {f"bulk/{i}": payload(150_000, 100 + i) for i in range(4)}
        telemetry = {f"telemetry/{i}": payload(5_000, 200 + i) for i in range(2)}
        for key, blob in bulk.items():
            await put_object(pair.mdc, key, blob, mdc_pb2.PRIORITY_CLASS_BULK)
        for key, blob in telemetry.items():
            await put_object(pair.mdc, key, blob, mdc_pb2.PRIORITY_CLASS_TELEMETRY)
        # A window in which an unpaused worker would have uploaded everything many times over.
        await asyncio.sleep(1.0)
        assert sum(pair.region_app.calls.values()) == calls_while_down  # not a single RPC
        status = await pair.mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
        assert status.backlog.objects == 6 and status.backlog.bytes == 4 * 150_000 + 2 * 5_000
        assert not status.link.up and status.link.last_event_sequence > 0 and status.link.since.seconds > 0
        pending = await list_objects(pair.mdc, state=mdc_pb2.SYNC_STATE_PENDING)
        assert len(pending) == 6 and all(o.attempts == 0 for o in pending)

        await publisher.publish(link_status(up=True))
        await wait_until(lambda: all_synced(pair.mdc, 7), "the backlog drained")

    blobs = {b.name: b for b in await list_blobs(pair.region, CONTAINER)}
    assert {k: blobs[k].sha256_hex for k in [*bulk, *telemetry]} == {
        k: sha256_hex(v) for k, v in {**bulk, **telemetry}.items()
    }
    last_telemetry = max(blobs[k].committed_at.ToNanoseconds() for k in telemetry)
    first_bulk = min(blobs[k].committed_at.ToNanoseconds() for k in bulk)
    assert last_telemetry < first_bulk  # telemetry before bulk, although put after it


async def test_failures_without_events_back_off_and_never_fail_an_object(
    tmp_path: Path, redis_url: str
) -> None:
    """The region is not there (no event says so): the worker retries with backoff, the object
    stays pending; once a region listens on that address the object syncs."""
    scenario = write_scenario(tmp_path / "scenario.yaml")
    region_port = free_port()
    mdc_app, mdc_server = await start_mdc(
        scenario, tmp_path / "mdc", f"127.0.0.1:{region_port}", redis_url, FAST_RETRY
    )
    region_server = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mdc_server.port}") as channel:
            mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
            data = payload(300_000, 7)
            await put_object(mdc, "waiting.bin", data)

            async def retried_a_few_times() -> bool:
                return mdc_app.worker.stats.transient_errors >= 3

            await wait_until(retried_a_few_times, "a few failed attempts")
            (info,) = await list_objects(mdc)
            assert info.state in (mdc_pb2.SYNC_STATE_PENDING, mdc_pb2.SYNC_STATE_UPLOADING) and not info.error
            assert "UNAVAILABLE" in mdc_app.worker.stats.last_error
            status = await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
            assert status.link.up and not status.sync_paused  # no event: the link is assumed up

            region_app, region_server = await start_region(
                scenario, tmp_path / "region", f"127.0.0.1:{region_port}"
            )
            await wait_until(lambda: all_synced(mdc, 1), "the object synced once the region is there")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{region_port}") as region_channel:
                region = region_pb2_grpc.CloudRegionServiceStub(region_channel)
                assert await read_blob(region, CONTAINER, "waiting.bin") == data
    finally:
        await mdc_server.stop(grace=0.1)
        if region_server is not None:
            await region_server.stop(grace=0.1)


async def test_a_silent_stall_in_the_terminal_times_out_backs_off_and_recovers(
    tmp_path: Path, redis_url: str
) -> None:
    """The terminal holds all traffic (a forced outage) and no event says so: calls pass their
    deadline, the worker backs off without failing anything, and syncs once the link is back."""
    scenario = write_scenario(tmp_path / "scenario.yaml")
    region_app, region_server = await start_region(scenario, tmp_path / "region")
    link = EmulatedLink(LinkProfile.constant(0.002))
    relay = TerminalRelay(link)
    await relay.add_forward("127.0.0.1", 0, "127.0.0.1", region_server.port)
    await relay.start()
    (forward,) = relay.forwards  # with the ephemeral port it bound
    config = SyncConfig(
        block_size_bytes=64 * 1024, rpc_timeout_s=0.3, backoff_initial_s=0.1, backoff_max_s=0.5
    )
    mdc_app, mdc_server = await start_mdc(
        scenario, tmp_path / "mdc", f"127.0.0.1:{forward.listen_port}", redis_url, config
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mdc_server.port}") as channel:
            mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
            data = {"before": payload(1000, 299)}
            await put_object(mdc, "before", data["before"])
            await wait_until(lambda: all_synced(mdc, 1), "a first object (the connection is up)")
            link.force_outage(3600)
            data |= {f"stalled/{i}": payload(100_000, 300 + i) for i in range(3)}
            for key, blob in list(data.items())[1:]:
                await put_object(mdc, key, blob)

            async def timed_out_twice() -> bool:
                return mdc_app.worker.stats.transient_errors >= 2

            await wait_until(timed_out_twice, "calls to pass their deadline")
            assert "DEADLINE_EXCEEDED" in mdc_app.worker.stats.last_error
            objects = await list_objects(mdc)
            assert all(o.state != mdc_pb2.SYNC_STATE_FAILED and not o.error for o in objects)
            assert (
                await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
            ).link.up  # nobody said otherwise

            link.clear_overrides()
            await wait_until(lambda: all_synced(mdc, len(data)), "the objects synced after the stall")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{region_server.port}") as channel:
            blobs = {
                b.name: b.sha256_hex
                for b in await list_blobs(region_pb2_grpc.CloudRegionServiceStub(channel), CONTAINER)
            }
        assert blobs == {key: sha256_hex(blob) for key, blob in data.items()}
    finally:
        await mdc_server.stop(grace=0.1)
        await relay.stop(drain_timeout_s=0)
        await region_server.stop(grace=0.1)


async def test_mdc_killed_mid_upload_resumes_from_its_last_block(tmp_path: Path, redis_url: str) -> None:
    """An 8 MiB object in 256 KiB blocks through a 16 Mbit/s terminal relay; the mdc process is
    killed with SIGKILL halfway, restarted on the same directory, and finishes the upload."""
    block = 256 * 1024
    size = 8 << 20
    scenario = write_scenario(
        tmp_path / "scenario.yaml",
        data_center={
            "sync": {"block_size_bytes": block},
            "terminal": {"uplink_mbps": 16, "downlink_mbps": 16},
        },
    )
    region_app, region_server = await start_region(scenario, tmp_path / "region")
    link = EmulatedLink(LinkProfile.constant(0.005, uplink_bps=16e6, downlink_bps=16e6))
    relay = TerminalRelay(link)
    await relay.add_forward("127.0.0.1", 0, "127.0.0.1", region_server.port)
    await relay.start()
    (forward,) = relay.forwards  # with the ephemeral port it bound
    env = {
        "SKYHAUL_SCENARIO": str(scenario),
        "SKYHAUL_DATA_DIR": str(tmp_path / "mdc"),
        "SKYHAUL_REGION_ADDR": f"127.0.0.1:{forward.listen_port}",
        "SKYHAUL_REDIS_URL": redis_url,
    }
    data = payload(size, 42)
    mdc = ServiceProcess("mdc", env, tmp_path / "mdc.log")
    try:
        await mdc.wait_serving()
        async with grpc.aio.insecure_channel(mdc.address) as channel:
            stub = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
            await put_object(stub, "lidar/scan.bin", data)

            async def halfway() -> bool:
                (info,) = await list_objects(stub)
                return info.bytes_confirmed >= size // 3

            await wait_until(halfway, "a third of the object staged")
        mdc.kill()
        (confirmed_before,) = [o.bytes_confirmed for o in await _objects_offline(tmp_path / "mdc")]
        assert 0 < confirmed_before < size

        mdc = ServiceProcess("mdc", env, tmp_path / "mdc.log")
        await mdc.wait_serving()
        async with grpc.aio.insecure_channel(mdc.address) as channel:
            stub = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
            await wait_until(lambda: all_synced(stub, 1), "the upload finished after the restart")
            (info,) = await list_objects(stub)
            status = await stub.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
    finally:
        mdc.stop()
        await relay.stop(drain_timeout_s=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{region_server.port}") as channel:
            region = region_pb2_grpc.CloudRegionServiceStub(channel)
            (blob,) = await list_blobs(region, CONTAINER)
            assert blob.name == "lidar/scan.bin" and blob.sha256_hex == sha256_hex(data) and blob.size == size
            assert info.region_etag == blob.etag and info.attempts == 2
    finally:
        await region_server.stop(grace=0.1)
    # Blocks staged before the kill were not sent again: neither by the outbox's count (each
    # confirmed block counted once)...
    assert status.totals.bytes_sent - size < 2 * block
    # ...nor by what the region received (blocks whose answer the kill lost were adopted, not re-sent).
    assert region_app.calls["staged_bytes"] - size < 2 * block
    assert region_app.calls["CommitBlockList"] == 1


async def _objects_offline(store_dir: Path):
    """Read the outbox of a stopped data center directly (its process is gone)."""
    from skyhaul.mdc.objectstore import ObjectStore

    store = await asyncio.to_thread(ObjectStore, store_dir / "mdc")
    try:
        return store.outbox.list_entries()
    finally:
        store.close()


async def test_info_status_and_the_synthetic_workload(tmp_path: Path, redis_url: str) -> None:
    track = [
        {"t_s": 0, "lat": 60.0, "lon": -150.0},
        {"t_s": 1_000_000, "lat": 62.0, "lon": -140.0, "alt_m": 100.0},
    ]
    scenario = write_scenario(
        tmp_path / "scenario.yaml",
        speed=100,
        data_center={"track": track, "storage_bytes": 50_000_000, "workload": {"objects": 0}},
    )
    region_app, region_server = await start_region(scenario, tmp_path / "region")
    region_address = f"127.0.0.1:{region_server.port}"
    mdc_app, mdc_server = await start_mdc(scenario, tmp_path / "mdc", region_address, redis_url, FAST_RETRY)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mdc_server.port}") as channel:
            mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
            info = await mdc.GetInfo(mdc_pb2.GetInfoRequest(), timeout=5)
            assert info.data_center_id == DATA_CENTER and info.home_region_id == REGION and info.moving
            assert (
                60.0 <= info.position.latitude_deg <= 62.0 and -150.0 <= info.position.longitude_deg <= -140.0
            )
            assert 0.0 <= info.position.altitude_m <= 100.0
            assert info.storage_capacity_bytes == 50_000_000 and info.storage_used_bytes == 0

            spec = mdc_pb2.WorkloadSpec(
                objects_per_batch=3,
                object_size_bytes=20_000,
                priority=mdc_pb2.PRIORITY_CLASS_TELEMETRY,
                key_prefix="sensors/",
            )
            spec.interval.FromSeconds(10)  # emulated: 0.1 s of wall time at speed 100
            reply = await mdc.SetWorkload(mdc_pb2.SetWorkloadRequest(workload=spec), timeout=5)
            assert reply.workload == spec

            async def batches(count: int) -> bool:
                return len(await list_objects(mdc)) >= count

            await wait_until(lambda: batches(6), "two batches")
            await mdc.SetWorkload(
                mdc_pb2.SetWorkloadRequest(workload=mdc_pb2.WorkloadSpec(objects_per_batch=0)), timeout=5
            )
            produced = len(await list_objects(mdc))
            await wait_until(lambda: all_synced(mdc, produced), "the workload synced")

            status = await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
            assert status.workload.objects_per_batch == 0 and status.workload.key_prefix == "sensors/"
            assert (
                status.totals.objects_synced == produced and status.totals.bytes_synced == produced * 20_000
            )
            assert (
                await mdc.GetInfo(mdc_pb2.GetInfoRequest(), timeout=5)
            ).storage_used_bytes == produced * 20_000

            bad_interval = mdc_pb2.WorkloadSpec(objects_per_batch=2, object_size_bytes=100)
            bad_interval.interval.FromSeconds(-1)
            bad_size = mdc_pb2.WorkloadSpec(objects_per_batch=2, object_size_bytes=-5)
            bad_prefix = mdc_pb2.WorkloadSpec(objects_per_batch=2, key_prefix="../")
            for bad, field in (
                (bad_interval, "interval"),
                (bad_size, "object_size_bytes"),
                (bad_prefix, "'..'"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await mdc.SetWorkload(mdc_pb2.SetWorkloadRequest(workload=bad), timeout=5)
                assert (
                    refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    and field in refused.value.details()
                )
            status = await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
            assert status.workload.objects_per_batch == 0  # a refused workload changes nothing
        await mdc_server.stop(grace=0.1)

        async with grpc.aio.insecure_channel(region_address) as channel:
            region = region_pb2_grpc.CloudRegionServiceStub(channel)
            blobs = await list_blobs(region, CONTAINER)
            assert [b.name for b in blobs] == [
                workload_key("sensors/", DATA_CENTER, i) for i in range(produced)
            ]
            expected = b"".join(object_content(DATA_CENTER, 1, 20_000))
            assert await read_blob(region, CONTAINER, workload_key("sensors/", DATA_CENTER, 1)) == expected

        # After a restart the sequence continues: no key is reused.
        mdc_app, mdc_server = await start_mdc(
            scenario, tmp_path / "mdc", region_address, redis_url, FAST_RETRY
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mdc_server.port}") as channel:
            mdc = mdc_pb2_grpc.ModularDataCenterServiceStub(channel)
            spec.objects_per_batch = 1
            await mdc.SetWorkload(mdc_pb2.SetWorkloadRequest(workload=spec), timeout=5)
            await wait_until(lambda: batches(produced + 1), "one more object")
            await mdc.SetWorkload(mdc_pb2.SetWorkloadRequest(workload=mdc_pb2.WorkloadSpec()), timeout=5)
            keys = [o.key for o in await list_objects(mdc)]
            assert keys[produced] == workload_key("sensors/", DATA_CENTER, produced)
    finally:
        await mdc_server.stop(grace=0.1)
        await region_server.stop(grace=0.1)

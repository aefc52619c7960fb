"""Retention at the data center against a real region, real Redis and real files: DeleteObject and
`skyhaul rm`, the retention policy evicting synced objects (never unsynced ones), reconciliation
re-uploading a blob deleted at the region or reporting it lost, and a really full disk (a 2 MiB
tmpfs, root only) answering RESOURCE_EXHAUSTED with the store's state in GetStatus."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.storage import (
    clock_for,
    list_blobs,
    list_objects,
    make_settings,
    payload,
    put_object,
    read_blob,
    sha256_hex,
    start_region,
    wait_until,
    write_scenario,
)

from skyhaul.cli import data as data_cli
from skyhaul.mdc.retention import RetentionPolicy
from skyhaul.mdc.service import MdcApp
from skyhaul.mdc.sync import SyncConfig
from skyhaul.runtime.redis_server import free_port
from skyhaul.runtime.server import start_server
from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc, region_pb2, region_pb2_grpc

CONTAINER = "mdc-sync"
FAST = SyncConfig(block_size_bytes=64 * 1024, backoff_initial_s=0.05, backoff_max_s=0.3, rpc_timeout_s=5)


async def start_mdc(tmp_path: Path, region_address: str, redis_url: str, **app_args):
    scenario = write_scenario(tmp_path / "scenario.yaml")
    settings = make_settings(
        "mdc",
        scenario,
        app_args.pop("data_dir", tmp_path / "mdc"),
        SKYHAUL_REGION_ADDR=region_address,
        SKYHAUL_REDIS_URL=redis_url,
    )
    app = MdcApp(settings, clock_for(settings), sync_config=FAST, reconcile_interval_s=0, **app_args)
    server = await start_server(app, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return app, server, channel, mdc_pb2_grpc.ModularDataCenterServiceStub(channel)


async def states(stub) -> dict[str, int]:
    return {o.key: o.state for o in await list_objects(stub)}


async def synced(stub, keys) -> bool:
    current = await states(stub)
    return all(current.get(k) == mdc_pb2.SYNC_STATE_SYNCED for k in keys)


@pytest.fixture
async def region(tmp_path: Path):
    scenario = write_scenario(tmp_path / "region-scenario.yaml")
    app, server = await start_region(scenario, tmp_path / "region")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield app, f"127.0.0.1:{server.port}", region_pb2_grpc.CloudRegionServiceStub(channel)
    await channel.close()
    await server.stop(0.1)


async def test_delete_keeps_the_region_copy_and_refuses_unsynced_objects_without_force(
    tmp_path: Path, region, redis_url: str
) -> None:
    _, region_address, region_stub = region
    app, server, channel, mdc = await start_mdc(tmp_path, region_address, redis_url)
    try:
        data = payload(100_000, 1)
        await put_object(mdc, "keep/a.bin", data)
        await wait_until(lambda: synced(mdc, ["keep/a.bin"]), "a.bin synced")
        reply = await mdc.DeleteObject(mdc_pb2.DeleteObjectRequest(key="keep/a.bin"), timeout=5)
        assert reply.object.state == mdc_pb2.SYNC_STATE_SYNCED and reply.object.size == 100_000
        assert await states(mdc) == {}
        assert await read_blob(region_stub, CONTAINER, "keep/a.bin") == data  # the region keeps it
        status = await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
        assert status.store.objects_released == 1 and status.store.bytes_released == 100_000
        assert status.store.used_bytes == 0 and status.store.state == mdc_pb2.STORE_STATE_OK
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await mdc.DeleteObject(mdc_pb2.DeleteObjectRequest(key="keep/a.bin"), timeout=5)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await channel.close()
        await server.stop(0.1)

    # A data center whose region is unreachable: its objects stay pending.
    app, server, channel, mdc = await start_mdc(
        tmp_path, f"127.0.0.1:{free_port()}", redis_url, data_dir=tmp_path / "mdc-offline"
    )
    try:
        await put_object(mdc, "only/copy.bin", b"precious")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mdc.DeleteObject(mdc_pb2.DeleteObjectRequest(key="only/copy.bin"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "force" in refused.value.details() and "lose" in refused.value.details()
        assert set(await states(mdc)) == {"only/copy.bin"}  # unchanged (pending, or uploading and retrying)

        # The CLI says the same and exits non-zero; --force deletes it.
        parser = argparse.ArgumentParser()
        data_cli.register(parser.add_subparsers())
        address = f"127.0.0.1:{server.port}"
        code = await data_cli.cmd_rm(parser.parse_args(["rm", "only/copy.bin", "--mdc-addr", address]))
        assert code != 0 and "only/copy.bin" in await states(mdc)
        code = await data_cli.cmd_rm(
            parser.parse_args(["rm", "only/copy.bin", "--force", "--mdc-addr", address])
        )
        assert code == 0 and await states(mdc) == {}
    finally:
        await channel.close()
        await server.stop(0.1)


async def test_retention_evicts_synced_objects_oldest_first_and_never_unsynced_ones(
    tmp_path: Path, region, redis_url: str
) -> None:
    region_app, region_address, region_stub = region
    # At most 250 kB on the data center's disk.
    app, server, channel, mdc = await start_mdc(
        tmp_path, region_address, redis_url, retention=RetentionPolicy(max_bytes=250_000)
    )
    try:
        first = [f"batch1/{i}" for i in range(4)]
        for i, key in enumerate(first):
            await put_object(mdc, key, payload(100_000, i))
            await wait_until(lambda key=key: synced(mdc, [key]), f"{key} synced")
        # Retention keeps the two most recently synced of the four.
        await wait_until(lambda: _keys_are(mdc, first[2:]), "the two oldest synced evicted")
        blobs = {b.name for b in await list_blobs(region_stub, CONTAINER)}
        assert set(first) <= blobs  # evicted from the data center only

        # Now the region goes away: new objects stay unsynced, and the policy may not touch them
        # even though they alone exceed its limit; the synced ones go.
        await region_app.stop()
        region_app.store = None  # every region call fails: FAILED_PRECONDITION, retried
        unsynced = [f"batch2/{i}" for i in range(3)]
        for i, key in enumerate(unsynced):
            await put_object(mdc, key, payload(100_000, 10 + i))
        await wait_until(lambda: _keys_are(mdc, unsynced), "every synced object evicted, no unsynced one")
        assert all(state != mdc_pb2.SYNC_STATE_SYNCED for state in (await states(mdc)).values())
        status = await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
        assert status.store.retention.max_bytes == 250_000 and status.store.objects_released == 4
        assert status.store.used_bytes == 300_000  # above the limit: unsynced bytes exist nowhere else
    finally:
        await channel.close()
        await server.stop(0.1)


async def _keys_are(stub, keys) -> bool:
    return sorted(await states(stub)) == sorted(keys)


async def test_a_blob_deleted_at_the_region_is_uploaded_again_or_reported_lost(
    tmp_path: Path, region, redis_url: str, capsys
) -> None:
    region_app, region_address, region_stub = region
    app, server, channel, mdc = await start_mdc(tmp_path, region_address, redis_url)
    try:
        data = {f"r/{i}": payload(70_000 + i, 20 + i) for i in range(3)}
        for key, blob in data.items():
            await put_object(mdc, key, blob)
        await wait_until(lambda: synced(mdc, list(data)), "all synced")
        report = (await mdc.Reconcile(mdc_pb2.ReconcileRequest(), timeout=30)).report
        assert (report.objects_checked, report.objects_reuploading, report.objects_lost) == (3, 0, 0)

        # Someone deletes a synced blob in the region: the data center still has it, so it re-uploads.
        await region_stub.DeleteBlob(region_pb2.DeleteBlobRequest(container=CONTAINER, blob="r/1"), timeout=5)
        report = (await mdc.Reconcile(mdc_pb2.ReconcileRequest(), timeout=30)).report
        assert report.objects_reuploading == 1 and report.objects_lost == 0
        await wait_until(lambda: synced(mdc, list(data)), "r/1 synced again")
        blobs = {b.name: b for b in await list_blobs(region_stub, CONTAINER)}
        assert blobs["r/1"].sha256_hex == sha256_hex(data["r/1"])
        assert await read_blob(region_stub, CONTAINER, "r/1") == data["r/1"]

        # The data center releases r/2, then the region loses it: nothing can bring it back, so it
        # is reported (Reconcile, GetStatus, the CLI's exit code), never silently lost.
        await mdc.DeleteObject(mdc_pb2.DeleteObjectRequest(key="r/2"), timeout=5)
        await region_stub.DeleteBlob(region_pb2.DeleteBlobRequest(container=CONTAINER, blob="r/2"), timeout=5)
        report = (await mdc.Reconcile(mdc_pb2.ReconcileRequest(), timeout=30)).report
        assert report.objects_lost == 1 and list(report.lost_keys) == ["r/2"]
        status = await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
        assert status.store.objects_lost == 1 and status.last_reconcile.objects_lost == 1
        parser = argparse.ArgumentParser()
        data_cli.register(parser.add_subparsers())
        capsys.readouterr()
        code = await data_cli.cmd_reconcile(
            parser.parse_args(["reconcile", "--json", "--mdc-addr", f"127.0.0.1:{server.port}"])
        )
        out = json.loads(capsys.readouterr().out)
        assert code != 0 and out["lostKeys"] == ["r/2"]
    finally:
        await channel.close()
        await server.stop(0.1)


# --------------------------------------------------------------------------- a really full disk


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 2 MiB tmpfs (root only): fails under CI=true without root, skips otherwise."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the full-disk test needs root (mount -t tmpfs) and CI=true")
        pytest.skip("needs root to mount a 2 MiB tmpfs")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_answers_resource_exhausted_and_the_status_says_so(
    tmp_path: Path, tiny_disk: Path, redis_url: str
) -> None:
    # The region is unreachable: nothing syncs, nothing can be released, the disk fills up.
    app, server, channel, mdc = await start_mdc(
        tmp_path, f"127.0.0.1:{free_port()}", redis_url, data_dir=tiny_disk
    )
    try:
        await put_object(mdc, "small/0", payload(300_000, 1))
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await put_object(mdc, "big/0", payload(3_000_000, 2))
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "full" in full.value.details() and "skyhaul rm" in full.value.details()
        assert set(await states(mdc)) == {"small/0"}  # nothing of the refused put was kept
        assert list((tiny_disk / "mdc" / "tmp").iterdir()) == []
        status = await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
        assert status.store.state == mdc_pb2.STORE_STATE_FULL and "skyhaul rm" in status.store.message
        # Health stays SERVING on purpose (docs/retention.md): reads and deletes must still work.
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        # Freeing space (here: the operator gives up the unsynced object) lets puts in again.
        await mdc.DeleteObject(mdc_pb2.DeleteObjectRequest(key="small/0", force=True), timeout=5)
        status = await mdc.GetStatus(mdc_pb2.GetStatusRequest(), timeout=5)
        assert status.store.state == mdc_pb2.STORE_STATE_OK
        await put_object(mdc, "small/1", payload(200_000, 3))
        assert set(await states(mdc)) == {"small/1"}
    finally:
        await channel.close()
        await server.stop(0.1)


async def test_the_regions_full_disk_is_resource_exhausted_too(tmp_path: Path, tiny_disk: Path) -> None:
    scenario = write_scenario(tmp_path / "scenario.yaml")
    app, server = await start_region(scenario, tiny_disk)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    region = region_pb2_grpc.CloudRegionServiceStub(channel)
    try:
        await region.CreateContainer(region_pb2.CreateContainerRequest(container="full"), timeout=5)
        block = payload(700_000, 5)
        codes = []
        for i in range(4):  # 2.8 MB into 2 MiB
            try:
                await region.StageBlock(
                    region_pb2.StageBlockRequest(container="full", blob="b", block_id=f"blk{i}", data=block),
                    timeout=10,
                )
                codes.append("OK")
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code().name)
                assert "disk is full" in exc.details()
        assert codes[0] == "OK" and "RESOURCE_EXHAUSTED" in codes
        staged = await region.GetBlockList(
            region_pb2.GetBlockListRequest(container="full", blob="b"), timeout=5
        )
        assert len(staged.uncommitted) == codes.count("OK")  # a refused block left nothing behind
    finally:
        await channel.close()
        await server.stop(0.1)

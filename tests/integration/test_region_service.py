"""The region service over real gRPC on 127.0.0.1 and a real blob store on disk: block-blob
semantics, ranges, paging, bad input (each a clear INVALID_ARGUMENT that changes nothing) and a
region process killed with SIGKILL around a commit."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

import grpc
import pytest
from support.storage import REGION, ServiceProcess, list_blobs, read_blob, start_region, write_scenario

from skyhaul.v1 import region_pb2, region_pb2_grpc

CONTAINER = "telemetry"


def block_id(index: int) -> str:
    return base64.b64encode(f"block-{index:06d}".encode()).decode()


def files_snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture
async def region(tmp_path: Path):
    scenario = write_scenario(tmp_path / "scenario.yaml")
    app, running = await start_region(scenario, tmp_path / "data")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = region_pb2_grpc.CloudRegionServiceStub(channel)
    yield app, stub
    await channel.close()
    await running.stop(grace=0.1)


async def stage_and_commit(stub, blob: str, blocks: list[bytes], container: str = CONTAINER):
    for index, data in enumerate(blocks):
        reply = await stub.StageBlock(
            region_pb2.StageBlockRequest(
                container=container,
                blob=blob,
                block_id=block_id(index),
                data=data,
                content_sha256=hashlib.sha256(data).digest(),
            ),
            timeout=10,
        )
        assert reply.size == len(data)
    whole = b"".join(blocks)
    reply = await stub.CommitBlockList(
        region_pb2.CommitBlockListRequest(
            container=container,
            blob=blob,
            block_ids=[block_id(i) for i in range(len(blocks))],
            expected_sha256=hashlib.sha256(whole).digest(),
            metadata={"sensor": "lidar"},
            content_type="application/octet-stream",
        ),
        timeout=10,
    )
    return reply.properties


async def test_blocks_roundtrip_ranges_properties_and_delete(region) -> None:
    app, stub = region
    info = await stub.GetRegion(region_pb2.GetRegionRequest(), timeout=5)
    assert info.region_id == REGION and info.display_name == "West US 2"
    assert info.location.latitude_deg == pytest.approx(47.233) and list(info.gateway_ids)

    assert (
        await stub.CreateContainer(region_pb2.CreateContainerRequest(container=CONTAINER), timeout=5)
    ).created
    again = await stub.CreateContainer(
        region_pb2.CreateContainerRequest(container=CONTAINER, exist_ok=True), timeout=5
    )
    assert not again.created
    with pytest.raises(grpc.aio.AioRpcError) as exists:
        await stub.CreateContainer(region_pb2.CreateContainerRequest(container=CONTAINER), timeout=5)
    assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS

    # Three blocks, the middle one larger than a GetBlob message, so the read spans messages.
    blocks = [b"a" * 1000, bytes(range(256)) * 8192, b"z" * 5]
    whole = b"".join(blocks)
    listing = await stub.GetBlockList(
        region_pb2.GetBlockListRequest(container=CONTAINER, blob="dir/x.bin"), timeout=5
    )
    assert not listing.blob_exists and not listing.committed and not listing.uncommitted

    for index, data in enumerate(blocks[:2]):
        await stub.StageBlock(
            region_pb2.StageBlockRequest(
                container=CONTAINER, blob="dir/x.bin", block_id=block_id(index), data=data
            ),
            timeout=10,
        )
    listing = await stub.GetBlockList(
        region_pb2.GetBlockListRequest(container=CONTAINER, blob="dir/x.bin"), timeout=5
    )
    assert [(b.block_id, b.size) for b in listing.uncommitted] == [
        (block_id(0), 1000),
        (block_id(1), len(blocks[1])),
    ]
    assert not listing.blob_exists

    props = await stage_and_commit(stub, "dir/x.bin", blocks)
    assert props.size == len(whole) and props.sha256_hex == hashlib.sha256(whole).hexdigest()
    assert props.block_count == 3 and props.metadata == {"sensor": "lidar"} and props.etag
    assert props.content_type == "application/octet-stream" and props.committed_at.seconds > 0
    listing = await stub.GetBlockList(
        region_pb2.GetBlockListRequest(container=CONTAINER, blob="dir/x.bin"), timeout=5
    )
    assert listing.blob_exists and len(listing.committed) == 3 and not listing.uncommitted

    # Committing the same list again is a retry: same etag, nothing changes.
    retry = await stub.CommitBlockList(
        region_pb2.CommitBlockListRequest(
            container=CONTAINER,
            blob="dir/x.bin",
            block_ids=[block_id(i) for i in range(3)],
            metadata={"sensor": "lidar"},
            content_type="application/octet-stream",
        ),
        timeout=10,
    )
    assert retry.properties.etag == props.etag

    messages = [
        m
        async for m in stub.GetBlob(
            region_pb2.GetBlobRequest(container=CONTAINER, blob="dir/x.bin"), timeout=10
        )
    ]
    assert len(messages) > 1 and messages[0].properties.etag == props.etag
    assert not any(m.HasField("properties") for m in messages[1:])
    assert b"".join(m.data for m in messages) == whole
    offsets = [m.offset for m in messages]
    assert offsets == [sum(len(m.data) for m in messages[:i]) for i in range(len(messages))]

    async def ranged(offset: int, length: int) -> bytes:
        request = region_pb2.GetBlobRequest(
            container=CONTAINER, blob="dir/x.bin", offset=offset, length=length
        )
        return b"".join([m.data async for m in stub.GetBlob(request, timeout=10)])

    assert await ranged(990, 20) == whole[990:1010]
    assert await ranged(len(whole) - 3, 0) == whole[-3:]
    assert await ranged(len(whole) - 3, 100) == whole[-3:]  # cut at the end
    assert await ranged(len(whole), 0) == b""
    with pytest.raises(grpc.aio.AioRpcError) as beyond:
        await ranged(len(whole) + 1, 0)
    assert (
        beyond.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "beyond the end" in beyond.value.details()
    )

    fetched = await stub.GetBlobProperties(
        region_pb2.GetBlobPropertiesRequest(container=CONTAINER, blob="dir/x.bin"), timeout=5
    )
    assert fetched == props

    # An empty blob: committed from an empty block list, read back as one message with properties.
    empty = await stub.CommitBlockList(
        region_pb2.CommitBlockListRequest(
            container=CONTAINER, blob="empty", expected_sha256=hashlib.sha256(b"").digest()
        ),
        timeout=5,
    )
    assert empty.properties.size == 0
    assert (
        await stub.GetBlockList(region_pb2.GetBlockListRequest(container=CONTAINER, blob="empty"), timeout=5)
    ).blob_exists
    assert await read_blob(stub, CONTAINER, "empty") == b""

    await stub.DeleteBlob(region_pb2.DeleteBlobRequest(container=CONTAINER, blob="dir/x.bin"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetBlobProperties(
            region_pb2.GetBlobPropertiesRequest(container=CONTAINER, blob="dir/x.bin"), timeout=5
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND and "dir/x.bin" in gone.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await stub.DeleteContainer(region_pb2.DeleteContainerRequest(container=CONTAINER), timeout=5)
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await stub.DeleteBlob(region_pb2.DeleteBlobRequest(container=CONTAINER, blob="empty"), timeout=5)
    await stub.DeleteContainer(region_pb2.DeleteContainerRequest(container=CONTAINER), timeout=5)
    assert list((await stub.ListContainers(region_pb2.ListContainersRequest(), timeout=5)).containers) == []

    echo = await stub.Echo(region_pb2.EchoRequest(payload=b"ping"), timeout=5)
    assert echo.payload == b"ping" and echo.region_id == REGION and echo.received_at.seconds > 0
    assert app.calls["StageBlock"] == 5 and app.calls["CommitBlockList"] == 3


async def test_list_blobs_pages_by_name_with_a_prefix(region) -> None:
    _, stub = region
    await stub.CreateContainer(region_pb2.CreateContainerRequest(container=CONTAINER), timeout=5)
    names = [f"a/{i:02d}" for i in range(7)] + ["b/0", "b/1"]
    for name in reversed(names):
        await stage_and_commit(stub, name, [name.encode()])
    pages = []
    token = ""
    while True:
        reply = await stub.ListBlobs(
            region_pb2.ListBlobsRequest(container=CONTAINER, prefix="a/", page_token=token, max_results=3),
            timeout=5,
        )
        pages.append([b.name for b in reply.blobs])
        token = reply.next_page_token
        if not token:
            break
    assert pages == [["a/00", "a/01", "a/02"], ["a/03", "a/04", "a/05"], ["a/06"]]
    everything = await list_blobs(stub, CONTAINER)
    assert [b.name for b in everything] == sorted(names)
    assert all(b.sha256_hex == hashlib.sha256(b.name.encode()).hexdigest() for b in everything)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.ListBlobs(region_pb2.ListBlobsRequest(container=CONTAINER, max_results=-1), timeout=5)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_results" in bad.value.details()


async def test_bad_input_is_refused_clearly_and_changes_nothing(region, tmp_path: Path) -> None:
    app, stub = region
    await stub.CreateContainer(region_pb2.CreateContainerRequest(container=CONTAINER), timeout=5)
    await stage_and_commit(stub, "kept", [b"keep me"])
    await stub.StageBlock(
        region_pb2.StageBlockRequest(
            container=CONTAINER, blob="pending", block_id=block_id(0), data=b"staged"
        ),
        timeout=5,
    )
    before = files_snapshot(app.store_dir)

    good_sha = hashlib.sha256(b"data").digest()
    cases = [
        (
            "StageBlock",
            region_pb2.StageBlockRequest(
                container=CONTAINER, blob="../../etc/passwd", block_id=block_id(0), data=b"x"
            ),
            "'..' path segment",
        ),
        (
            "StageBlock",
            region_pb2.StageBlockRequest(
                container=CONTAINER, blob="/abs/path", block_id=block_id(0), data=b"x"
            ),
            "absolute",
        ),
        (
            "StageBlock",
            region_pb2.StageBlockRequest(
                container=CONTAINER, blob="nul\x00name", block_id=block_id(0), data=b"x"
            ),
            "control character",
        ),
        (
            "StageBlock",
            region_pb2.StageBlockRequest(
                container=CONTAINER, blob="x" * 1025, block_id=block_id(0), data=b"x"
            ),
            "the limit is 1024",
        ),
        (
            "StageBlock",
            region_pb2.StageBlockRequest(
                container=CONTAINER,
                blob="pending",
                block_id=block_id(1),
                data=b"data",
                content_sha256=b"\x00" * 32,
            ),
            "sha256 of the data is",
        ),
        (
            "StageBlock",
            region_pb2.StageBlockRequest(container="", blob="b", block_id=block_id(0), data=b"x"),
            "container name is empty",
        ),
        (
            "CommitBlockList",
            region_pb2.CommitBlockListRequest(
                container=CONTAINER, blob="pending", block_ids=[block_id(0), block_id(9)]
            ),
            "neither staged nor committed",
        ),
        (
            "CommitBlockList",
            region_pb2.CommitBlockListRequest(
                container=CONTAINER, blob="pending", block_ids=[block_id(0)], expected_sha256=good_sha
            ),
            "the request expects",
        ),
        ("CreateContainer", region_pb2.CreateContainerRequest(container=""), "container name is empty"),
        ("CreateContainer", region_pb2.CreateContainerRequest(container="Bad_Name"), "lowercase"),
        ("GetBlob", region_pb2.GetBlobRequest(container=CONTAINER, blob="kept", offset=-1), "non-negative"),
        ("ListBlobs", region_pb2.ListBlobsRequest(container=""), "container name is empty"),
    ]
    for method, request, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            call = getattr(stub, method)(request, timeout=5)
            if method == "GetBlob":
                async for _ in call:
                    pass
            else:
                await call
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, refused.value.details())
        assert message in refused.value.details(), (method, refused.value.details())

    assert files_snapshot(app.store_dir) == before
    assert [b.name for b in await list_blobs(stub, CONTAINER)] == ["kept"]
    assert await read_blob(stub, CONTAINER, "kept") == b"keep me"
    listing = await stub.GetBlockList(
        region_pb2.GetBlockListRequest(container=CONTAINER, blob="pending"), timeout=5
    )
    assert [(b.block_id, b.size) for b in listing.uncommitted] == [(block_id(0), 6)]


async def test_region_killed_around_a_commit_never_lists_a_half_blob(tmp_path: Path) -> None:
    """SIGKILL the region process at several moments around a commit of a 16 MiB blob; after each
    restart the blob is either absent (its staged blocks intact) or whole, and retrying commits."""
    scenario = write_scenario(tmp_path / "scenario.yaml")
    env = {"SKYHAUL_SCENARIO": str(scenario), "SKYHAUL_DATA_DIR": str(tmp_path / "data")}
    blocks = [bytes([i]) * (4 << 20) for i in range(4)]
    whole_sha = hashlib.sha256(b"".join(blocks)).hexdigest()
    outcomes = []
    region = ServiceProcess("region", env, tmp_path / "region.log")
    try:
        await region.wait_serving()
        # Kill delays after sending the commit: before it arrives, while it assembles, after it answered.
        for attempt, kill_after_s in enumerate((0.0, 0.04, 0.6)):
            commit = region_pb2.CommitBlockListRequest(
                container=CONTAINER,
                blob=f"big-{attempt}.bin",
                block_ids=[block_id(i) for i in range(len(blocks))],
                expected_sha256=bytes.fromhex(whole_sha),
            )
            async with grpc.aio.insecure_channel(region.address) as channel:
                stub = region_pb2_grpc.CloudRegionServiceStub(channel)
                await stub.CreateContainer(
                    region_pb2.CreateContainerRequest(container=CONTAINER, exist_ok=True), timeout=5
                )
                for index, data in enumerate(blocks):
                    await stub.StageBlock(
                        region_pb2.StageBlockRequest(
                            container=CONTAINER, blob=commit.blob, block_id=block_id(index), data=data
                        ),
                        timeout=30,
                    )
                call = stub.CommitBlockList(commit, timeout=30)
                await asyncio.sleep(kill_after_s)
                region.kill()
                try:
                    await call
                    outcomes.append("answered")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), exc
                    outcomes.append("lost")

            region = ServiceProcess("region", env, tmp_path / "region.log")
            await region.wait_serving()
            async with grpc.aio.insecure_channel(region.address) as channel:
                stub = region_pb2_grpc.CloudRegionServiceStub(channel)
                listed = {b.name: b for b in await list_blobs(stub, CONTAINER)}
                # Every blob listed is whole, this one and the earlier ones.
                assert all(b.sha256_hex == whole_sha and b.size == 4 * (4 << 20) for b in listed.values())
                if commit.blob not in listed:
                    listing = await stub.GetBlockList(
                        region_pb2.GetBlockListRequest(container=CONTAINER, blob=commit.blob), timeout=5
                    )
                    assert sorted(b.block_id for b in listing.uncommitted) == sorted(commit.block_ids)
                # Retrying the commit (what an uploader that lost the answer does) succeeds either way.
                props = (await stub.CommitBlockList(commit, timeout=30)).properties
                assert props.sha256_hex == whole_sha
                assert hashlib.sha256(await read_blob(stub, CONTAINER, commit.blob)).hexdigest() == whole_sha
    finally:
        region.stop()
    assert "lost" in outcomes  # at least one kill landed before the answer

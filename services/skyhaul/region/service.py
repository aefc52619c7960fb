"""The region service: `CloudRegionService` over the durable block-blob store.

The servicer is a thin adapter: every store call runs in a worker thread (`asyncio.to_thread`),
so a commit that assembles and fsyncs a large blob never stalls other RPCs. Validation and the
error messages live in the store (`skyhaul.region.blobstore`); the interceptor maps them.

Times: a blob's commit time is on the emulation clock (so it lines up with link events and the
data center's object times); `Echo` answers with the region's wall clock, as RTT probes want.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
from opentelemetry import trace

from skyhaul.contract import bounds
from skyhaul.contract.blobs import MAX_BLOB_NAME_CHARS, show_value
from skyhaul.region.blobstore import MAX_LIST_RESULTS, READ_CHUNK_BYTES, BlobProperties, BlobStore
from skyhaul.runtime.clock import EmulationClock, to_timestamp
from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from skyhaul.runtime.server import ServiceApp, service_full_name
from skyhaul.runtime.settings import Settings
from skyhaul.v1 import common_pb2, region_pb2, region_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_LIST_RESULTS = 1000
_PROPERTIES_RETRIES = 3  # a blob replaced between reading its properties and opening its data


def properties_message(container: str, props: BlobProperties) -> region_pb2.BlobProperties:
    return region_pb2.BlobProperties(
        container=container,
        name=props.name,
        size=props.size,
        sha256_hex=props.sha256_hex,
        etag=props.etag,
        committed_at=to_timestamp(props.committed_unix),
        block_count=props.block_count,
        metadata=props.metadata,
        content_type=props.content_type,
    )


def _annotate(container: str, blob: str | None = None) -> None:
    span = trace.get_current_span()
    span.set_attribute("skyhaul.container", container)
    if blob is not None:
        span.set_attribute("skyhaul.blob", blob)


async def _write(fn, *args):
    """A store call that writes, off the event loop; a full disk is RESOURCE_EXHAUSTED, not INTERNAL."""
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceExhausted(
                f"the region's disk is full ({exc.strerror}); nothing of this request was kept. Delete blobs "
                "or containers, or free space on the region's disk, then retry"
            ) from exc
        raise


def _list_size(max_results: int) -> int:
    if max_results == 0:
        return DEFAULT_LIST_RESULTS
    if not 1 <= max_results <= MAX_LIST_RESULTS:
        raise InvalidArgument(f"max_results {max_results} is outside 1..{MAX_LIST_RESULTS} (0 means 1000)")
    return max_results


class RegionServicer(region_pb2_grpc.CloudRegionServiceServicer):
    def __init__(self, app: RegionApp) -> None:
        self._app = app

    @property
    def _store(self) -> BlobStore:
        return self._app.require_store()

    def _count(self, method: str) -> None:
        self._app.calls[method] += 1

    async def GetRegion(self, request, context):
        self._count("GetRegion")
        spec = self._app.settings.scenario.region(self._app.settings.region_id)
        return region_pb2.GetRegionResponse(
            region_id=spec.id,
            display_name=spec.display_name,
            location=common_pb2.GeoPoint(
                latitude_deg=spec.location.lat,
                longitude_deg=spec.location.lon,
                altitude_m=spec.location.alt_m,
            ),
            gateway_ids=[g.id for g in spec.gateways],
        )

    async def CreateContainer(self, request, context):
        self._count("CreateContainer")
        _annotate(request.container)
        created = await _write(self._store.create_container, request.container, request.exist_ok)
        return region_pb2.CreateContainerResponse(created=created)

    async def ListContainers(self, request, context):
        self._count("ListContainers")
        return region_pb2.ListContainersResponse(
            containers=await asyncio.to_thread(self._store.list_containers)
        )

    async def DeleteContainer(self, request, context):
        self._count("DeleteContainer")
        _annotate(request.container)
        await asyncio.to_thread(self._store.delete_container, request.container)
        return region_pb2.DeleteContainerResponse()

    async def StageBlock(self, request, context):
        self._count("StageBlock")
        _annotate(request.container, request.blob)
        size = await _write(self._stage, request)
        return region_pb2.StageBlockResponse(size=size)

    def _stage(self, request: region_pb2.StageBlockRequest) -> int:
        size = self._store.stage_block(
            request.container,
            request.blob,
            request.block_id,
            request.data,
            request.content_md5 or None,
            request.content_sha256 or None,
        )
        # Counted here, in the thread: a block staged after its caller went away counts too.
        with self._app.calls_lock:
            self._app.calls["staged_bytes"] += size
        return size

    async def GetBlockList(self, request, context):
        self._count("GetBlockList")
        _annotate(request.container, request.blob)
        committed, uncommitted, exists = await asyncio.to_thread(
            _block_list, self._store, request.container, request.blob
        )
        return region_pb2.GetBlockListResponse(
            committed=[region_pb2.Block(block_id=b, size=s) for b, s in committed],
            uncommitted=[region_pb2.Block(block_id=b, size=s) for b, s in uncommitted],
            blob_exists=exists,
        )

    async def CommitBlockList(self, request, context):
        self._count("CommitBlockList")
        _annotate(request.container, request.blob)
        props = await _write(
            self._store.commit_block_list,
            request.container,
            request.blob,
            list(request.block_ids),
            request.expected_sha256 or None,
            dict(request.metadata),
            request.content_type,
        )
        return region_pb2.CommitBlockListResponse(properties=properties_message(request.container, props))

    async def GetBlob(self, request, context) -> AsyncIterator[region_pb2.GetBlobResponse]:
        self._count("GetBlob")
        _annotate(request.container, request.blob)
        store = self._store
        length = request.length or None
        props, chunks = await asyncio.to_thread(
            _open_blob, store, request.container, request.blob, request.offset, length
        )
        first = region_pb2.GetBlobResponse(
            properties=properties_message(request.container, props), offset=request.offset
        )
        offset = request.offset
        try:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is not None:
                first.data = chunk
                offset += len(chunk)
            yield first
            while chunk is not None:
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is not None:
                    yield region_pb2.GetBlobResponse(data=chunk, offset=offset)
                    offset += len(chunk)
        finally:
            await asyncio.to_thread(_close_iterator, chunks)

    async def GetBlobProperties(self, request, context):
        self._count("GetBlobProperties")
        _annotate(request.container, request.blob)
        props = await asyncio.to_thread(self._store.get_properties, request.container, request.blob)
        return properties_message(request.container, props)

    async def ListBlobs(self, request, context):
        self._count("ListBlobs")
        _annotate(request.container)
        wanted = _list_size(request.max_results)
        bounds.check_name(request.prefix, "prefix", max_chars=MAX_BLOB_NAME_CHARS)
        bounds.check_name(request.page_token, "page_token", max_chars=MAX_BLOB_NAME_CHARS)
        # One more than asked says whether another page exists (the store caps a page at its maximum).
        ask = min(wanted + 1, MAX_LIST_RESULTS)
        found = await asyncio.to_thread(
            self._store.list_blobs, request.container, request.prefix, request.page_token, ask
        )
        page = found[:wanted]
        more = len(found) > wanted or (ask == wanted and len(found) == wanted)
        return region_pb2.ListBlobsResponse(
            blobs=[properties_message(request.container, p) for p in page],
            next_page_token=page[-1].name if more and page else "",
        )

    async def DeleteBlob(self, request, context):
        self._count("DeleteBlob")
        _annotate(request.container, request.blob)
        await asyncio.to_thread(self._store.delete_blob, request.container, request.blob)
        return region_pb2.DeleteBlobResponse()

    async def Echo(self, request, context):
        self._count("Echo")
        response = region_pb2.EchoResponse(
            payload=request.payload,
            received_at=to_timestamp(time.time()),
            region_id=self._app.settings.region_id,
        )
        if request.HasField("sent_at"):
            bounds.check_timestamp(request.sent_at, "sent_at")
            response.sent_at.CopyFrom(request.sent_at)
        return response


def _block_list(
    store: BlobStore, container: str, blob: str
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], bool]:
    committed, uncommitted = store.get_block_list(container, blob)
    # An empty blob has no committed blocks, so the block list alone cannot say whether it exists.
    try:
        store.get_properties(container, blob)
    except NotFound:
        return committed, uncommitted, False
    return committed, uncommitted, True


def _open_blob(
    store: BlobStore, container: str, blob: str, offset: int, length: int | None
) -> tuple[BlobProperties, Iterator[bytes]]:
    """Properties and data of the same version: re-read the properties if a commit slipped in between."""
    for _ in range(_PROPERTIES_RETRIES):
        before = store.get_properties(container, blob)
        chunks = store.get_blob(container, blob, offset, length, READ_CHUNK_BYTES)
        after = store.get_properties(container, blob)
        if after.etag == before.etag:
            return before, chunks
        _close_iterator(chunks)
    raise FailedPrecondition(f"blob {show_value(blob)} keeps changing while being read; retry the read")


def _close_iterator(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


class RegionApp(ServiceApp):
    """The region process: the blob store under `<data dir>/region` and its servicer."""

    name = "region"
    service_names = (service_full_name(region_pb2, "CloudRegionService"),)

    def __init__(self, settings: Settings, clock: EmulationClock, *, store_dir: Path | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.store_dir = Path(store_dir) if store_dir is not None else Path(settings.data_dir) / "region"
        self.store: BlobStore | None = None
        # Calls served per RPC (and bytes staged): cheap counters for logs, tests and benchmarks.
        self.calls: collections.Counter[str] = collections.Counter()
        self.calls_lock = threading.Lock()

    def require_store(self) -> BlobStore:
        if self.store is None:
            raise FailedPrecondition(
                "the region's blob store is not open (the service is starting or stopping)"
            )
        return self.store

    def register(self, server: grpc.aio.Server) -> None:
        region_pb2_grpc.add_CloudRegionServiceServicer_to_server(RegionServicer(self), server)

    async def start(self) -> None:
        # Opening recovers from a crash (removes half-written files): off the event loop.
        self.store = await asyncio.to_thread(BlobStore, self.store_dir, clock=self.clock.now)
        log.info("blob store open", extra={"skyhaul.data_dir": str(self.store_dir)})

    async def stop(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            store.close()

    async def ready(self) -> bool:
        return self.store is not None


def build(settings: Settings, clock: EmulationClock) -> RegionApp:
    return RegionApp(settings, clock)

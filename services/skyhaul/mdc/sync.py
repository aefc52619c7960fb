"""The sync worker: store-and-forward of the outbox to the home region, in blocks, resumable.

For each object:

1. claim it in the outbox (`start_upload`, which fixes the block size of its first attempt);
2. ask the region what it already has (`GetBlockList`): if the blob is committed with the same
   sha256 (a crash after the commit, before `mark_synced`), mark it synced without sending a byte;
3. skip the blocks the region still holds uncommitted at the right length (recording in the outbox
   those whose confirmation a crash lost); if the region lost blocks the outbox recorded, forget
   the progress and start over;
4. stage the remaining blocks with their sha256, each read from disk only when it is about to go
   and recorded durably in the outbox the moment the region confirms it;
5. commit the block list with the expected sha256, check the sha256 the region reports, and only
   then mark the object synced.

Throughput: at 100 Mbit/s and 30 ms one way a 1 MiB block takes 84 ms to send but a round trip
is 60 ms, and every object costs two more round trips (block list, commit) plus the region's
assembly. So several blocks are in flight (`max_in_flight`, shared by all objects) and several
objects upload at once (`max_objects`), which keeps the link busy between one object's commit and
the next object's blocks. Priority classes are strict (telemetry, interactive, bulk; oldest first
within a class): no object starts while a more urgent one waits or uploads, and a more urgent
object's blocks take the next free slot.

Failures: the link being down (from the link events) pauses everything: in-flight calls are
cancelled and no RPC is made until it is up again. Without events (a forced outage on the
terminal, links not running, the region restarting) calls fail with UNAVAILABLE or
DEADLINE_EXCEEDED; the worker then backs off (capped exponential, with jitter) before it starts
anything again. Transient errors never fail an object. INVALID_ARGUMENT is permanent only if it
persists: the first one resets the object's progress and re-sends it whole; a second one marks the
object failed with the region's message.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Callable

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from skyhaul.contract.blobs import show_value
from skyhaul.mdc.link import LinkView, LinkWatcher
from skyhaul.mdc.objectstore import ObjectStore
from skyhaul.mdc.outbox import PRIORITIES, OutboxEntry, UploadProgress, block_id_for
from skyhaul.runtime import clients
from skyhaul.runtime.errors import FailedPrecondition, NotFound
from skyhaul.runtime.server import GRPC_OPTIONS
from skyhaul.v1 import region_pb2, region_pb2_grpc, terminal_pb2, terminal_pb2_grpc

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# Status codes that say "this request is wrong"; everything else is worth retrying later.
_PERMANENT_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})

COMMIT_BYTES_PER_S = 50e6  # a commit copies and fsyncs the blob in the region: allow for a slow disk

# Reconnect quickly after an outage: gRPC's default reconnect backoff grows to two minutes.
_CHANNEL_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclasses.dataclass(frozen=True)
class SyncConfig:
    container: str = "mdc-sync"
    block_size_bytes: int = 1 << 20
    bandwidth_share: float = 1.0  # < 1: pace uploads to this fraction of the link's capacity
    max_in_flight: int = 4  # StageBlock calls in flight, over all objects
    max_objects: int = 16  # objects uploading at once, per priority class (hides per-object round trips)
    rpc_timeout_s: float = 10.0  # every call; block transfers get their expected transfer time on top
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 10.0
    idle_poll_s: float = 5.0  # re-check the outbox this often even without a put notification
    fallback_capacity_mbps: float = 40.0  # for pacing and deadlines while no route has been heard


class TransientSyncError(Exception):
    """Retry later (outage, timeout, region restarting)."""


class PermanentSyncError(Exception):
    """This object cannot be uploaded as it is."""


class _RestartObject(Exception):
    """The region refused something of this object: forget its progress and send it whole once more."""


def priority_rank(priority: str) -> int:
    return PRIORITIES.index(priority)


class ThroughputMeter:
    """Goodput over the last `window_s` seconds of wall time."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, nbytes: int) -> None:
        self._samples.append((self._clock(), nbytes))
        self._trim()

    def mbps(self) -> float:
        self._trim()
        return sum(n for _, n in self._samples) * 8 / self.window_s / 1e6

    def _trim(self) -> None:
        horizon = self._clock() - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()


class Pacer:
    """Spaces block sends so the average rate stays at most `rate_bps` (a virtual finish clock)."""

    def __init__(self) -> None:
        self._free_at = 0.0

    def book(self, nbytes: int, rate_bps: float, now: float) -> float:
        """Book `nbytes` at `rate_bps`; returns how long to wait before sending them."""
        start = max(self._free_at, now)
        self._free_at = start + nbytes * 8 / rate_bps
        return start - now

    async def reserve(self, nbytes: int, rate_bps: float) -> None:
        wait = self.book(nbytes, rate_bps, time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)


class Backoff:
    """Capped exponential backoff with full jitter; `reset()` after a success."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2**self.failures)
        self.failures += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


def make_channel(address: str) -> grpc.aio.Channel:
    # The runtime's channel: the run's token (region writes need it) and TLS when configured.
    return clients.channel(address, options=_CHANNEL_OPTIONS)


@dataclasses.dataclass
class SyncStats:
    wire_bytes: int = 0  # block bytes handed to StageBlock, whether or not the region confirmed them
    objects_synced: int = 0
    objects_skipped_upload: int = 0  # found committed at the region already (idempotent re-run)
    transient_errors: int = 0
    last_error: str = ""


class PrioritySlots:
    """A semaphore whose waiters are served by key (lowest first), not by arrival.

    Block sends take a slot keyed by their object's priority and age, so a telemetry object's
    blocks overtake the blocks of bulk objects already uploading.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: list[tuple[tuple, int, asyncio.Future]] = []
        self._counter = itertools.count()

    async def acquire(self, key: tuple) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (key, next(self._counter), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


@dataclasses.dataclass
class _Upload:
    entry: OutboxEntry
    task: asyncio.Task

    @property
    def rank(self) -> int:
        return priority_rank(self.entry.priority)


class SyncWorker:
    """Uploads the outbox of `store` to the region at `region_address`. Run with `run()`.

    Several objects upload at once (`max_objects` per priority class), so one object's round
    trips (block list, commit) overlap another's blocks and small objects do not leave the link
    idle; `max_in_flight` bounds the StageBlock calls (and block buffers) over all of them.
    Classes are strict: no object of a class starts while a more urgent one is waiting or
    uploading, and a more urgent object's blocks get the next free slots.
    """

    def __init__(
        self,
        store: ObjectStore,
        region_address: str,
        link: LinkWatcher,
        config: SyncConfig,
        terminal_address: str | None = None,
    ) -> None:
        self.store = store
        self.outbox = store.outbox
        self.region_address = region_address
        self.terminal_address = terminal_address
        self._terminal = None
        self.link = link
        self.config = config
        self.stats = SyncStats()
        self.meter = ThroughputMeter()
        self._pacer = Pacer()
        self._slots = PrioritySlots(config.max_in_flight)
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s)
        self._retry_at = 0.0  # monotonic time before which no object starts (after a failure)
        self._kick = asyncio.Event()  # new work, an upload finished, the link changed
        self._active: dict[str, _Upload] = {}
        self._held: dict[str, OutboxEntry] = {}  # claimed ('uploading') objects waiting for a retry
        self._restarted: set[str] = set()  # objects already re-sent whole after an INVALID_ARGUMENT
        self._container_ready = False
        self._stub: region_pb2_grpc.CloudRegionServiceStub | None = None
        link.on_change(self._link_changed)

    @property
    def region(self) -> region_pb2_grpc.CloudRegionServiceStub | None:
        """The stub on the one channel to the region (None until `run` opened it)."""
        return self._stub

    # ----------------------------------------------------------------- signals

    def notify(self, priority: str) -> None:
        """A new object (of this priority) is in the outbox."""
        self._kick.set()

    def _link_changed(self, state) -> None:
        if state.up:
            self._backoff.reset()  # a fresh link deserves a prompt try
            self._retry_at = 0.0
        else:
            for upload in self._active.values():
                upload.task.cancel()  # no RPC while the link is down
        self._kick.set()

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        channel = make_channel(self.region_address)
        self._stub = region_pb2_grpc.CloudRegionServiceStub(channel)
        if self.terminal_address:
            self._terminal = terminal_pb2_grpc.TerminalServiceStub(make_channel(self.terminal_address))
        try:
            while True:
                self._kick.clear()
                self._reap()
                if not self.link.up:
                    await self.link.wait_up()
                    continue
                now = time.monotonic()
                if now >= self._retry_at:
                    await self._fill()
                    wait_s = self.config.idle_poll_s
                else:
                    # Backing off: new puts wake the loop but start nothing (no retry storm).
                    wait_s = self._retry_at - now
                await _wait_event(self._kick, wait_s)
        finally:
            for upload in self._active.values():
                upload.task.cancel()
            await asyncio.gather(*(u.task for u in self._active.values()), return_exceptions=True)
            await channel.close(grace=None)

    def _reap(self) -> None:
        for key, upload in list(self._active.items()):
            if not upload.task.done():
                continue
            del self._active[key]
            if upload.task.cancelled():
                self._held[key] = upload.entry  # the link went down: resume later
            elif upload.task.result() == "retry":
                self._held[key] = upload.entry
                now = time.monotonic()
                # The uploads in flight when the link stalls fail one after another: one backoff
                # step per wave of failures, not one per object.
                if now >= self._retry_at:
                    delay = self._backoff.next_delay()
                    self._retry_at = now + delay
                    log.info("sync: retrying in %.2f s", delay, extra={"skyhaul.key": key})
            else:
                self._backoff.reset()

    async def _fill(self) -> None:
        """Start the most urgent objects while their class has room."""
        pending = await asyncio.to_thread(self.outbox.next_batch, self.config.max_objects)
        if not self.link.up:
            return  # it went down while the outbox was read
        candidates = [e for e in self._held.values() if e.key not in self._active]
        candidates += [e for e in pending if e.key not in self._active and e.key not in self._held]
        candidates.sort(key=lambda e: (priority_rank(e.priority), e.created_unix))
        for entry in candidates:
            rank = priority_rank(entry.priority)
            if any(u.rank < rank for u in self._active.values()):
                return  # strict classes: a more urgent object is still uploading
            if sum(1 for u in self._active.values() if u.rank == rank) >= self.config.max_objects:
                return
            self._held.pop(entry.key, None)
            task = asyncio.create_task(self._run_object(entry), name=f"sync {entry.key}")
            task.add_done_callback(lambda _: self._kick.set())
            self._active[entry.key] = _Upload(entry, task)

    async def _run_object(self, entry: OutboxEntry) -> str:
        """One attempt at one object: "done" (synced, or failed for good) or "retry"."""
        try:
            await self._sync_object(entry)
        except TransientSyncError as exc:
            self.stats.transient_errors += 1
            self.stats.last_error = str(exc)
            log.warning("sync: %s", exc, extra={"skyhaul.key": entry.key})
            return "retry"
        except PermanentSyncError as exc:
            await self._fail(entry, str(exc))
        except NotFound as exc:
            # The object's local data file is gone: no retry can bring it back.
            await self._fail(entry, f"local data is missing: {exc}")
        except Exception as exc:  # noqa: BLE001 - a local hiccup (disk, SQLite busy) must not stop the worker
            log.exception("sync: unexpected error on %s; retrying later", entry.key)
            self.stats.transient_errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            return "retry"
        self._restarted.discard(entry.key)
        return "done"

    async def _fail(self, entry: OutboxEntry, reason: str) -> None:
        self.stats.last_error = reason
        log.error("sync: giving up on %s: %s", entry.key, reason, extra={"skyhaul.key": entry.key})
        self._restarted.discard(entry.key)
        try:
            await asyncio.to_thread(self.outbox.mark_failed, entry.key, reason)
        except (NotFound, FailedPrecondition) as exc:  # removed or synced meanwhile
            log.info("sync: could not mark %s failed: %s", entry.key, exc)

    # ----------------------------------------------------------------- one object

    async def _sync_object(self, entry: OutboxEntry) -> None:
        # Its own trace, with a Link to the PutObject's span: the sync of an object may come
        # minutes or hours after the put (outages, backlog, a restart), and may take several
        # attempts, each a "sync object" span; as children they would stretch the put's trace over
        # all of that. Jaeger shows the link and both spans carry skyhaul.key.
        put = put_span_link(entry.traceparent)
        with tracer.start_as_current_span(
            "sync object",
            context=Context(),  # a root: never a child of whatever woke the worker
            links=[put] if put is not None else None,
            attributes={
                "skyhaul.key": entry.key,
                "skyhaul.size": entry.size,
                "skyhaul.priority": entry.priority,
                **link_attributes(self.link.view),
            },
        ) as span:
            await self._note_dish(span)
            while True:
                try:
                    return await self._upload(entry)
                except _RestartObject as exc:
                    if entry.key in self._restarted:
                        raise PermanentSyncError(str(exc)) from None
                    self._restarted.add(entry.key)
                    log.warning("sync: %s; re-sending %s whole", exc, entry.key)
                    await asyncio.to_thread(self.outbox.reset_progress, entry.key)

    async def _note_dish(self, span) -> None:
        """Record what the dish applies as the object starts, so its trace shows the link it crossed.

        The dish's own up/down is an instant's (false during the tens of ms of a handover stall):
        it goes under skyhaul.dish.link_up; skyhaul.link_up is the data center's view of the
        link (see `link_attributes`), which the worker obeys.
        """
        if self._terminal is None:
            return
        try:
            request = terminal_pb2.GetStatsRequest(data_center_id=self.link.data_center_id)
            stats = await self._terminal.GetStats(request, timeout=1.0)
        except grpc.aio.AioRpcError as exc:  # the dish is optional for syncing: note it and go on
            span.set_attribute("skyhaul.terminal_error", exc.code().name)
            return
        span.set_attribute("skyhaul.dish.link_up", stats.link_up)
        span.set_attribute("skyhaul.dish.satellite", stats.satellite_index)
        span.set_attribute("skyhaul.uplink_delay_ms", stats.uplink.current_delay_ms)
        span.set_attribute("skyhaul.uplink_rate_mbps", stats.uplink.current_rate_mbps)

    async def _upload(self, entry: OutboxEntry) -> str:
        key = entry.key
        try:
            progress = await asyncio.to_thread(self.outbox.start_upload, key, self.config.block_size_bytes)
        except (NotFound, FailedPrecondition) as exc:
            # Synced, failed or removed meanwhile: nothing to upload.
            log.info("sync: skipping %s (%s)", key, exc)
            return "done"
        await self._ensure_container()
        listing = await self._call(
            "GetBlockList",
            region_pb2.GetBlockListRequest(container=self.config.container, blob=key),
        )
        if listing.blob_exists and await self._already_committed(entry):
            return "done"
        progress, todo = await self._plan(progress, listing)
        if todo:
            await self._send_blocks(entry, progress, todo)
        await self._commit(entry, progress)
        return "done"

    async def _already_committed(self, entry: OutboxEntry) -> bool:
        props = await self._call(
            "GetBlobProperties",
            region_pb2.GetBlobPropertiesRequest(container=self.config.container, blob=entry.key),
        )
        if props.sha256_hex == entry.sha256_hex:
            await asyncio.to_thread(self.outbox.mark_synced, entry.key, props.etag)
            self.stats.objects_skipped_upload += 1
            self.stats.objects_synced += 1
            log.info("sync: %s was already committed in the region (etag %s)", entry.key, props.etag)
            return True
        raise PermanentSyncError(
            f"the region already holds a different blob {show_value(entry.key)} in container {self.config.container!r} "
            f"(sha256 {props.sha256_hex}, this object has {entry.sha256_hex}); another data center may use the "
            "same key: delete that blob in the region or put the object under another key"
        )

    async def _plan(
        self, progress: UploadProgress, listing: region_pb2.GetBlockListResponse
    ) -> tuple[UploadProgress, list[int]]:
        """Which block indices still have to be staged; records the ones the region already holds.

        A block the region holds uncommitted at the expected length is kept even if the outbox never
        heard its confirmation (the process died with the answer in flight): its id names this
        object's sha256 and the block index, and the region checked the bytes against the sha256
        they were sent with. The commit's expected sha256 guards the rest; after a refused commit
        the object is re-sent whole, without adopting anything.
        """
        block_size = progress.block_size
        assert block_size is not None
        region_has = {b.block_id: b.size for b in listing.uncommitted}
        recorded = set(progress.staged_block_ids)
        if any(block_id not in region_has for block_id in recorded):
            log.warning(
                "sync: the region lost staged blocks of %s; uploading it again from the start", progress.key
            )
            await asyncio.to_thread(self.outbox.reset_progress, progress.key)
            progress = await asyncio.to_thread(
                self.outbox.start_upload, progress.key, self.config.block_size_bytes
            )
            block_size = progress.block_size
            assert block_size is not None
            recorded = set()
        adopt = progress.key not in self._restarted
        todo = []
        for index in range(math.ceil(progress.size / block_size)):
            block_id = block_id_for(progress.sha256_hex, index)
            end = min(progress.size, (index + 1) * block_size)
            if region_has.get(block_id) == end - index * block_size:
                if block_id in recorded:
                    continue
                if adopt:
                    await asyncio.to_thread(self.outbox.mark_block_staged, progress.key, block_id, end)
                    continue
            todo.append(index)
        return progress, todo

    async def _send_blocks(self, entry: OutboxEntry, progress: UploadProgress, todo: list[int]) -> None:
        remaining = iter(todo)
        block_size = progress.block_size
        assert block_size is not None
        slot_key = (priority_rank(entry.priority), entry.created_unix)

        async def lane() -> None:
            for index in remaining:  # lanes share the iterator: each takes the next block
                offset = index * block_size
                length = min(block_size, progress.size - offset)
                block_id = block_id_for(progress.sha256_hex, index)
                await self._slots.acquire(slot_key)
                try:
                    if self.config.bandwidth_share < 1.0:
                        await self._pacer.reserve(length, self._capacity_bps() * self.config.bandwidth_share)
                    # Read only once the block may go: memory stays at max_in_flight blocks.
                    data, digest = await asyncio.to_thread(self._read_block, entry.key, offset, length)
                    if len(data) != length:
                        raise PermanentSyncError(
                            f"the local data of {show_value(entry.key)} is shorter than its recorded {entry.size} bytes"
                        )
                    self.stats.wire_bytes += length
                    await self._call(
                        "StageBlock",
                        region_pb2.StageBlockRequest(
                            container=self.config.container,
                            blob=entry.key,
                            block_id=block_id,
                            data=data,
                            content_sha256=digest,
                        ),
                        # Every slot shares the link: allow for all of them in flight.
                        extra_s=self._transfer_s(length * self.config.max_in_flight),
                    )
                    del data
                finally:
                    self._slots.release()
                await asyncio.to_thread(self.outbox.mark_block_staged, entry.key, block_id, offset + length)
                self.meter.add(length)

        lanes = min(self.config.max_in_flight, len(todo))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(lanes):
                    group.create_task(lane())
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None

    def _read_block(self, key: str, offset: int, length: int) -> tuple[bytes, bytes]:
        data = self.store.read_range(key, offset, length)
        return data, hashlib.sha256(data).digest()

    async def _commit(self, entry: OutboxEntry, progress: UploadProgress) -> None:
        block_size = progress.block_size
        assert block_size is not None
        count = math.ceil(entry.size / block_size)
        metadata, content_type = entry.metadata, entry.content_type
        reply = await self._call(
            "CommitBlockList",
            region_pb2.CommitBlockListRequest(
                container=self.config.container,
                blob=entry.key,
                block_ids=[block_id_for(entry.sha256_hex, i) for i in range(count)],
                expected_sha256=bytes.fromhex(entry.sha256_hex),
                metadata=metadata,
                content_type=content_type,
            ),
            # The region assembles and fsyncs the whole blob before it answers.
            extra_s=entry.size / COMMIT_BYTES_PER_S,
        )
        committed = reply.properties
        if committed.sha256_hex != entry.sha256_hex or committed.size != entry.size:
            raise _RestartObject(
                f"the region committed {show_value(entry.key)} as {committed.size} bytes with sha256 {committed.sha256_hex}, "
                f"expected {entry.size} bytes with {entry.sha256_hex}"
            )
        await asyncio.to_thread(self.outbox.mark_synced, entry.key, committed.etag)
        self.stats.objects_synced += 1
        log.info("sync: %s synced (%d bytes, etag %s)", entry.key, entry.size, committed.etag)

    async def _ensure_container(self) -> None:
        if self._container_ready:
            return
        await self._call(
            "CreateContainer",
            region_pb2.CreateContainerRequest(container=self.config.container, exist_ok=True),
        )
        self._container_ready = True

    # ----------------------------------------------------------------- calls

    def _capacity_bps(self) -> float:
        mbps = self.link.view.capacity_up_mbps or self.config.fallback_capacity_mbps
        return mbps * 1e6

    def _transfer_s(self, nbytes: int) -> float:
        """Four times the expected time to send `nbytes` (a slow link must not look like an outage)."""
        rate = self._capacity_bps() * min(1.0, self.config.bandwidth_share)
        return 4 * nbytes * 8 / rate

    async def _call(self, method: str, request, extra_s: float = 0.0):
        """One RPC with a deadline; gRPC errors become TransientSyncError or _RestartObject."""
        assert self._stub is not None
        try:
            return await getattr(self._stub, method)(request, timeout=self.config.rpc_timeout_s + extra_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            message = f"{method} {getattr(request, 'blob', '') or ''}: {code.name}: {exc.details()}"
            if code == grpc.StatusCode.NOT_FOUND:
                self._container_ready = False  # the container may be gone: create it again
                raise TransientSyncError(message) from None
            if code in _PERMANENT_CODES:
                raise _RestartObject(message) from None
            raise TransientSyncError(message) from None


def put_span_link(traceparent: str) -> trace.Link | None:
    """A span Link to the PutObject span named by a stored W3C traceparent (None: none stored)."""
    if not traceparent:
        return None
    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent}, context=Context())
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return None
    return trace.Link(span_context, {"skyhaul.link": "put"})


def link_attributes(view: LinkView) -> dict[str, object]:
    """The sync span's view of the link: the data center's, from the links service's events (what
    the worker obeys: it starts an object only while this says up). Until an event names the data
    center the link is only assumed up: skyhaul.link_known is false and skyhaul.link_up absent."""
    if not view.known:
        return {"skyhaul.link_known": False}
    attributes: dict[str, object] = {
        "skyhaul.link_known": True,
        "skyhaul.link_up": view.up,
        "skyhaul.satellite": view.satellite_index,
        "skyhaul.link_event_sequence": view.last_event_sequence,
    }
    if view.up and view.one_way_delay_ms > 0:
        attributes["skyhaul.one_way_delay_ms"] = view.one_way_delay_ms
    return attributes


def _first_error(group_error: BaseExceptionGroup) -> BaseException:
    """The most telling exception of a task group: a sync error before a cancellation."""
    flat: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            flat.append(error)

    walk(group_error)
    for kind in (PermanentSyncError, _RestartObject, TransientSyncError):
        for error in flat:
            if isinstance(error, kind):
                return error
    return flat[0]


async def _wait_event(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass

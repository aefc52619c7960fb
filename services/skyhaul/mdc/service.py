"""The modular data center service: local store, sync status and the synthetic workload.

Pieces (all started by `MdcApp.start`):

- the object store under `<data dir>/mdc` (data durable before a put is answered, queued in the
  outbox in the same step);
- the link watcher (`mdc.link`), following this data center's link events on Redis;
- the sync worker (`mdc.sync`), uploading the outbox to the home region through
  `SKYHAUL_REGION_ADDR` (in a deployment, the terminal's relay port);
- the synthetic workload (`mdc.workload`), started from the scenario, changed by SetWorkload;
- retention and reconciliation (`mdc.retention`): synced objects leave the disk by the policy
  (oldest synced first, unsynced never); the region's copy of every synced object is checked now
  and then, and re-uploaded or reported when it is gone.

Health: a full disk does not make the service NOT_SERVING (that would take it out of a
Service's endpoints and block the very reads and deletes that free space); GetStatus.store says
whether puts are accepted and what to do (docs/retention.md).

Ready means the local store is open and Redis answers. The region being unreachable is an outage
the data center rides out, not a sign the service is unhealthy.

Object times (created, synced, backlog age) are on the emulation clock; throughput is physical
(wall time), as the data plane is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import duration_pb2
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from skyhaul.contract import bounds
from skyhaul.contract.blobs import MAX_BLOB_NAME_CHARS, validate_blob_name, validate_container_name
from skyhaul.mdc.link import LinkWatcher
from skyhaul.mdc.objectstore import FULL_ADVICE, ObjectStore, StoredObject, is_disk_full
from skyhaul.mdc.outbox import CONTENT_TYPE_METADATA_KEY, MAX_LIST, OutboxEntry
from skyhaul.mdc.retention import (
    RETENTION_CHECK_S,
    Reconciler,
    ReconcileReport,
    RegionCheck,
    RetentionPolicy,
    apply_retention,
    reconcile_interval,
)
from skyhaul.mdc.sync import SyncConfig, SyncWorker
from skyhaul.mdc.workload import Workload, WorkloadGenerator
from skyhaul.runtime.bus import redis_ping
from skyhaul.runtime.clock import EmulationClock, to_timestamp
from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, SkyhaulError, Unavailable
from skyhaul.runtime.link_follower import LinkFollower
from skyhaul.runtime.link_group import LinkFollowerGroup
from skyhaul.runtime.scenario import DataCenterSpec
from skyhaul.runtime.server import ServiceApp, service_full_name
from skyhaul.runtime.settings import Settings, parse_hostport
from skyhaul.v1 import common_pb2, mdc_pb2, mdc_pb2_grpc

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1 << 20
WRITE_BATCH_BYTES = 1 << 20  # put data is handed to the disk thread in batches of about this size
DEFAULT_LIST_RESULTS = 1000

PRIORITY_NAMES = {
    mdc_pb2.PRIORITY_CLASS_UNSPECIFIED: "bulk",
    mdc_pb2.PRIORITY_CLASS_TELEMETRY: "telemetry",
    mdc_pb2.PRIORITY_CLASS_INTERACTIVE: "interactive",
    mdc_pb2.PRIORITY_CLASS_BULK: "bulk",
}
PRIORITY_CLASSES = {
    "telemetry": mdc_pb2.PRIORITY_CLASS_TELEMETRY,
    "interactive": mdc_pb2.PRIORITY_CLASS_INTERACTIVE,
    "bulk": mdc_pb2.PRIORITY_CLASS_BULK,
}
SYNC_STATES = {
    "pending": mdc_pb2.SYNC_STATE_PENDING,
    "uploading": mdc_pb2.SYNC_STATE_UPLOADING,
    "synced": mdc_pb2.SYNC_STATE_SYNCED,
    "failed": mdc_pb2.SYNC_STATE_FAILED,
}
STATE_NAMES = {value: name for name, value in SYNC_STATES.items()}


def priority_name(value: int) -> str:
    if value not in PRIORITY_NAMES:
        raise InvalidArgument(
            f"priority {value} is not a PriorityClass; use TELEMETRY (1), INTERACTIVE (2) or BULK (3)"
        )
    return PRIORITY_NAMES[value]


def object_info(entry: OutboxEntry) -> mdc_pb2.ObjectInfo:
    info = mdc_pb2.ObjectInfo(
        key=entry.key,
        size=entry.size,
        sha256_hex=entry.sha256_hex,
        priority=PRIORITY_CLASSES[entry.priority],
        state=SYNC_STATES[entry.state],
        created_at=to_timestamp(entry.created_unix),
        bytes_confirmed=entry.bytes_confirmed,
        attempts=entry.attempts,
        error=entry.failure_reason or "",
        region_etag=entry.etag or "",
        metadata=entry.metadata,
    )
    if entry.synced_unix is not None:
        info.synced_at.CopyFrom(to_timestamp(entry.synced_unix))
    return info


def report_message(report: ReconcileReport) -> mdc_pb2.ReconcileReport:
    return mdc_pb2.ReconcileReport(
        finished_at=to_timestamp(report.finished_unix),
        objects_checked=report.checked,
        objects_reuploading=report.reuploading,
        objects_lost=report.lost,
        lost_keys=report.lost_keys,
        error=report.error,
    )


def workload_message(workload: Workload) -> mdc_pb2.WorkloadSpec:
    message = mdc_pb2.WorkloadSpec(
        objects_per_batch=workload.objects_per_batch,
        object_size_bytes=workload.object_size_bytes,
        priority=PRIORITY_CLASSES[workload.priority],
        key_prefix=workload.key_prefix,
    )
    message.interval.FromNanoseconds(int(round(workload.interval_s * 1e9)))
    return message


def position_at(spec: DataCenterSpec, epoch_unix: float, at_unix: float) -> tuple[float, float, float]:
    """(lat, lon, alt_m) of the data center at an emulated time: fixed, or along its track.

    Latitude and longitude come from the same great-circle interpolation the links service uses
    for the terminal (`core.ground`), so the data center and its dish never disagree.
    """
    if not spec.track:
        location = spec.start_location
        return location.lat, location.lon, location.alt_m
    if len(spec.track) == 1:
        point = spec.track[0].location
        return point.lat, point.lon, point.alt_m
    from skyhaul.core.ground import GroundSegment, Terminal

    waypoints = [(p.t_s, p.location.lat, p.location.lon) for p in spec.track]
    segment = GroundSegment(
        terminals=(Terminal.moving(spec.id, waypoints, epoch_unix),), gateways=(), regions=()
    )
    lat, lon = segment.track_position(0, at_unix)
    times = [epoch_unix + p.t_s for p in spec.track]
    alt = float(np.interp(at_unix, times, [p.location.alt_m for p in spec.track]))
    return float(lat), float(lon), alt


class MdcServicer(mdc_pb2_grpc.ModularDataCenterServiceServicer):
    def __init__(self, app: MdcApp) -> None:
        self._app = app

    async def GetInfo(self, request, context):
        app = self._app.host(request.data_center_id)
        spec = app.spec
        lat, lon, alt = position_at(spec, app.settings.scenario.epoch_unix, app.clock.now())
        store = app.store
        return mdc_pb2.GetInfoResponse(
            data_center_id=spec.id,
            home_region_id=spec.home_region,
            position=common_pb2.GeoPoint(latitude_deg=lat, longitude_deg=lon, altitude_m=alt),
            moving=len(spec.track) > 1,
            storage_capacity_bytes=spec.storage_bytes,
            storage_used_bytes=store.used_bytes() if store is not None else 0,
        )

    async def PutObject(self, request_iterator, context):
        app = store = None  # the data center the header names
        handle = None
        expected = None
        buffered: list[bytes] = []
        buffered_bytes = 0
        try:
            async for message in request_iterator:
                part = message.WhichOneof("part")
                if part == "header":
                    if handle is not None:
                        raise InvalidArgument(
                            "PutObject got a second header; send one header first, then only data chunks"
                        )
                    header = message.header
                    expected = header.expected_sha256 or None
                    if expected is not None and len(expected) != 32:
                        raise InvalidArgument(f"expected_sha256 must be 32 raw bytes, got {len(expected)}")
                    app = self._app.host(header.data_center_id)
                    store = app.require_store()
                    handle = await self._begin(store, header)
                    trace.get_current_span().set_attribute("skyhaul.key", header.key)
                elif part == "data":
                    if handle is None:
                        raise InvalidArgument(
                            "PutObject got data before the header; the first message must carry the header"
                        )
                    buffered.append(message.data)
                    buffered_bytes += len(message.data)
                    if buffered_bytes >= WRITE_BATCH_BYTES:
                        await asyncio.to_thread(_write_all, handle, buffered)
                        buffered, buffered_bytes = [], 0
                else:
                    raise InvalidArgument("PutObject got a message with neither header nor data")
            if handle is None:
                raise InvalidArgument("PutObject got no header; the first message must carry the header")
            if buffered:
                await asyncio.to_thread(_write_all, handle, buffered)
            stored = await asyncio.to_thread(handle.finish, expected)
        finally:
            if handle is not None:
                handle.abort()  # nothing if finished; a failed or cancelled put leaves nothing behind
        app.object_added(stored)
        entry = await asyncio.to_thread(store.get, stored.key)
        return mdc_pb2.PutObjectResponse(object=object_info(entry))

    async def _begin(self, store: ObjectStore, header: mdc_pb2.ObjectHeader):
        priority = priority_name(header.priority)
        metadata = dict(header.metadata)
        if CONTENT_TYPE_METADATA_KEY in metadata:
            raise InvalidArgument(
                f"metadata key {CONTENT_TYPE_METADATA_KEY!r} is reserved; use the content_type field"
            )
        return await asyncio.to_thread(
            store.begin_put, header.key, priority, metadata, header.content_type, current_traceparent()
        )

    async def GetObject(self, request, context) -> AsyncIterator[mdc_pb2.GetObjectResponse]:
        store = self._app.host(request.data_center_id).require_store()
        bounds.check_name(request.key, "key", max_chars=MAX_BLOB_NAME_CHARS)
        trace.get_current_span().set_attribute("skyhaul.key", request.key)
        entry = await asyncio.to_thread(store.get, request.key)
        source = await asyncio.to_thread(store.open_object, request.key)
        try:
            first = mdc_pb2.GetObjectResponse(object=object_info(entry))
            chunk = await asyncio.to_thread(source.read, READ_CHUNK_BYTES)
            first.data = chunk
            yield first
            while chunk:
                chunk = await asyncio.to_thread(source.read, READ_CHUNK_BYTES)
                if chunk:
                    yield mdc_pb2.GetObjectResponse(data=chunk)
        finally:
            source.close()

    async def ListObjects(self, request, context):
        store = self._app.host(request.data_center_id).require_store()
        wanted = request.max_results or DEFAULT_LIST_RESULTS
        if not 1 <= wanted <= MAX_LIST:
            raise InvalidArgument(
                f"max_results {request.max_results} is outside 1..{MAX_LIST} (0 means 1000)"
            )
        if request.state not in STATE_NAMES and request.state != mdc_pb2.SYNC_STATE_UNSPECIFIED:
            raise InvalidArgument(f"state {request.state} is not a SyncState")
        state = STATE_NAMES.get(request.state)
        bounds.check_name(request.prefix, "prefix", max_chars=MAX_BLOB_NAME_CHARS)
        bounds.check_name(request.page_token, "page_token", max_chars=MAX_BLOB_NAME_CHARS)
        ask = min(wanted + 1, MAX_LIST)
        found = await asyncio.to_thread(
            store.outbox.list_entries, request.prefix, state, ask, request.page_token
        )
        page = found[:wanted]
        more = len(found) > wanted or (ask == wanted and len(found) == wanted)
        return mdc_pb2.ListObjectsResponse(
            objects=[object_info(e) for e in page], next_page_token=page[-1].key if more and page else ""
        )

    async def GetStatus(self, request, context):
        app = self._app.host(request.data_center_id)
        store = app.require_store()
        backlog, totals, released, store_state = await asyncio.gather(
            asyncio.to_thread(store.outbox.backlog),
            asyncio.to_thread(store.outbox.totals),
            asyncio.to_thread(store.outbox.release_totals),
            asyncio.to_thread(store.state),
        )
        now = app.clock.now()
        link = app.link.view
        response = mdc_pb2.GetStatusResponse(
            data_center_id=app.spec.id,
            emulated_time=to_timestamp(now),
            link=mdc_pb2.LinkStatus(
                up=link.up,
                satellite_index=link.satellite_index,
                rtt_ms=link.rtt_ms,
                capacity_up_mbps=link.capacity_up_mbps,
                capacity_down_mbps=link.capacity_down_mbps,
                last_event_sequence=link.last_event_sequence,
            ),
            backlog=mdc_pb2.Backlog(objects=backlog.objects, bytes=backlog.bytes),
            totals=mdc_pb2.SyncTotals(
                objects_put=totals.objects,
                bytes_put=totals.bytes,
                objects_synced=totals.synced,
                bytes_synced=totals.synced_bytes,
                bytes_sent=totals.bytes_sent,
                objects_failed=totals.failed,
                throughput_mbps=app.worker.meter.mbps() if app.worker is not None else 0.0,
            ),
            sync_paused=not link.up,
            workload=workload_message(app.workload.workload if app.workload else Workload()),
            store=mdc_pb2.StoreStatus(
                state=mdc_pb2.STORE_STATE_FULL if store_state.full else mdc_pb2.STORE_STATE_OK,
                message=store_state.message,
                used_bytes=store_state.used_bytes,
                capacity_bytes=store_state.capacity_bytes or 0,
                disk_free_bytes=store_state.disk_free_bytes,
                retention=mdc_pb2.RetentionPolicy(max_bytes=app.retention.max_bytes or 0),
                objects_released=released.objects,
                bytes_released=released.bytes,
                objects_lost=released.lost,
            ),
        )
        if app.retention.max_age_s is not None:
            response.store.retention.max_age.FromNanoseconds(int(app.retention.max_age_s * 1e9))
        if app.reconciler is not None and app.reconciler.last is not None:
            response.last_reconcile.CopyFrom(report_message(app.reconciler.last))
        if link.since_unix is not None:
            response.link.since.CopyFrom(to_timestamp(link.since_unix))
        if backlog.oldest_created_unix is not None:
            age = max(0.0, now - backlog.oldest_created_unix)
            response.backlog.oldest_age.CopyFrom(
                duration_pb2.Duration(seconds=int(age), nanos=int(age % 1 * 1e9))
            )
        return response

    async def SetWorkload(self, request, context):
        app = self._app.host(request.data_center_id)
        if app.workload is None:
            raise FailedPrecondition("the data center is not started yet; retry in a moment")
        spec = request.workload
        current = app.workload.workload
        bounds.check_name(spec.key_prefix, "workload.key_prefix", max_chars=MAX_BLOB_NAME_CHARS)
        workload = Workload(
            objects_per_batch=spec.objects_per_batch,
            object_size_bytes=spec.object_size_bytes or current.object_size_bytes,
            interval_s=bounds.check_duration(spec.interval, "workload.interval", maximum_s=86_400.0)
            if spec.HasField("interval")
            else current.interval_s,
            priority=priority_name(spec.priority),
            # Empty keeps the current prefix (proto3 cannot tell "unset" from "").
            key_prefix=spec.key_prefix or current.key_prefix,
        )
        await app.workload.set(workload)
        log.info("workload set", extra={"skyhaul.workload": str(workload)})
        return mdc_pb2.SetWorkloadResponse(workload=workload_message(workload))

    async def DeleteObject(self, request, context):
        store = self._app.host(request.data_center_id).require_store()
        validate_blob_name(request.key, "object key")
        trace.get_current_span().set_attribute("skyhaul.key", request.key)
        entry = await asyncio.to_thread(store.delete, request.key, force=request.force)
        log.info(
            "object deleted from the data center (%s)",
            "synced: the region keeps it"
            if entry.state == "synced"
            else f"{entry.state}, forced: its data is gone",
            extra={"skyhaul.key": request.key},
        )
        return mdc_pb2.DeleteObjectResponse(object=object_info(entry))

    async def Reconcile(self, request, context):
        app = self._app.host(request.data_center_id)
        app.require_store()
        if app.reconciler is None:
            raise FailedPrecondition("the data center is not started yet; retry in a moment")
        report = await app.reconciler.run()
        return mdc_pb2.ReconcileResponse(report=report_message(report))


def current_traceparent() -> str:
    """The W3C traceparent of the current span (the PutObject's), "" outside a recorded trace."""
    if not trace.get_current_span().get_span_context().is_valid:
        return ""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


def _nearly_full(path: Path) -> bool:
    """Less than 1 MiB free where the store lives: SQLite then reports "disk I/O error" as often as
    "disk is full" while setting up its write-ahead log."""
    try:
        return shutil.disk_usage(path if path.exists() else path.parent).free < 2**20
    except OSError:
        return False


def _write_all(handle, chunks: list[bytes]) -> None:
    for chunk in chunks:
        handle.write(chunk)


class DataCenter:
    """One hosted data center: its object store and outbox, link watcher, sync worker and workload.

    `store_dir` is its own (a data center's data never mixes with another's); `region_address` is
    where it syncs (its relay on the terminal), `terminal_address` the terminal that hosts its dish.
    """

    def __init__(
        self,
        settings: Settings,
        clock: EmulationClock,
        spec: DataCenterSpec,
        follower: LinkFollower,
        *,
        store_dir: Path,
        region_address: str,
        terminal_address: str,
        sync_config: SyncConfig | None = None,
        retention: RetentionPolicy | None = None,
        reconcile_interval_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.spec = spec
        if sync_config is None:
            sync = spec.sync
            sync_config = SyncConfig(
                container=sync.container,
                block_size_bytes=sync.block_size_bytes,
                bandwidth_share=sync.bandwidth_share,
                fallback_capacity_mbps=spec.terminal.uplink_mbps,
            )
        validate_container_name(sync_config.container)
        self.sync_config = sync_config
        self.store_dir = store_dir
        self.region_address = region_address
        self.terminal_address = terminal_address
        self.store: ObjectStore | None = None
        self._store_wait = ""  # why the store is not open yet, when the disk keeps it closed
        # In a set, a data center waits for its first route before it syncs (see LinkWatcher).
        self.link = LinkWatcher(follower, assume_up=not settings.multi)
        self.worker: SyncWorker | None = None
        self.workload: WorkloadGenerator | None = None
        self.reconciler: Reconciler | None = None
        self.retention = (
            retention if retention is not None else RetentionPolicy.from_spec(self.spec.retention)
        )
        self.reconcile_interval_s = (
            reconcile_interval_s if reconcile_interval_s is not None else reconcile_interval()
        )
        self._tasks: list[asyncio.Task] = []

    def require_store(self) -> ObjectStore:
        if self.store is None:
            # Transient (UNAVAILABLE: retry): starting, stopping, or waiting for space to open it.
            raise Unavailable(
                f"the data center's object store is not open ({self._store_wait or 'starting or stopping'}); "
                "retry in a moment"
            )
        return self.store

    def object_added(self, stored: StoredObject) -> None:
        if self.worker is not None:
            self.worker.notify(stored.priority)

    async def start(self, follow_link: bool = True) -> None:
        """Open the store, start the sync worker and the workload; `follow_link`: this data center
        subscribes to the link events itself (alone in its process; a group feeds it otherwise)."""
        self.store = await self._open_store()
        self.worker = SyncWorker(
            self.store, self.region_address, self.link, self.sync_config, self.terminal_address
        )
        self.workload = WorkloadGenerator(
            self.store, self.spec.id, speed=self.settings.scenario.speed, on_put=self.object_added
        )
        worker = self.worker
        self.reconciler = Reconciler(
            self.store,
            self.sync_config.container,
            self.link,
            lambda: worker.region,
            self.clock.now,
            on_requeued=lambda: worker.notify("bulk"),
        )
        self._tasks = [asyncio.create_task(self.worker.run(), name=f"sync worker {self.spec.id}")]
        if follow_link:
            self._tasks.append(asyncio.create_task(self.link.run(), name="link events"))
        if self.retention.active:
            self._tasks.append(asyncio.create_task(self._enforce_retention(), name="retention"))
        if self.reconcile_interval_s > 0:
            self._tasks.append(
                asyncio.create_task(
                    self.reconciler.run_periodically(self.reconcile_interval_s), name="reconcile"
                )
            )
        w = self.spec.workload
        await self.workload.set(Workload(w.objects, w.size_bytes, w.interval_s, w.priority, w.key_prefix))
        log.debug(
            "data center started",
            extra={
                "skyhaul.data_center": self.spec.id,
                "region": self.region_address,
                "skyhaul.data_dir": str(self.store_dir),
            },
        )

    async def _open_store(self) -> ObjectStore:
        """Open the store; a disk that is full right now is waited out, not a crash.

        A data center stopped while its disk was full (an eviction, a kill) must not crash-loop on
        restart because SQLite cannot even reset its outbox: it stays up, NOT_SERVING (ready() is
        false without a store), and opens the store once space is freed.
        """
        delay_s = 0.5
        while True:
            try:
                store = await asyncio.to_thread(
                    ObjectStore, self.store_dir, clock=self.clock.now, capacity_bytes=self.spec.storage_bytes
                )
                self._store_wait = ""
                return store
            except (OSError, sqlite3.OperationalError) as exc:
                if not (is_disk_full(exc) or _nearly_full(self.store_dir)):
                    raise
                self._store_wait = f"its disk is full: {FULL_ADVICE}"
                log.warning(
                    "data center %s: its disk is full, the store cannot open (%s); retrying in %.1f s. %s",
                    self.spec.id,
                    exc,
                    delay_s,
                    FULL_ADVICE,
                )
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, 5.0)

    async def _enforce_retention(self) -> None:
        log.info("retention policy: %s", self.retention)
        worker = self.worker
        assert worker is not None
        verify = RegionCheck(
            asyncio.get_running_loop(), self.sync_config.container, self.link, lambda: worker.region
        )
        while True:
            store = self.store
            if store is not None:
                try:
                    await asyncio.to_thread(apply_retention, store, self.retention, self.clock.now(), verify)
                except (SkyhaulError, OSError) as exc:  # a busy or failing disk: try again next round
                    log.warning("retention: %s", exc)
                except Exception:  # noqa: BLE001 - retention must outlive any one failure
                    log.exception("retention: failed; trying again in %.0f s", RETENTION_CHECK_S)
            await asyncio.sleep(RETENTION_CHECK_S)

    async def stop(self) -> None:
        if self.workload is not None:
            await self.workload.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        store, self.store = self.store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()


class MdcApp(ServiceApp):
    """The mdc process: one data center (today's layout) or a set of them (a shard, or all of a
    scenario: `Settings.data_center_ids`), each a `DataCenter` with its own store, outbox, sync
    worker and workload. RPCs name their data center; an empty id means the only one hosted.
    `sync_config` overrides what the scenario gives (tests, benchmarks).

    Where a hosted data center syncs to: alone, `SKYHAUL_REGION_ADDR` (its terminal's relay); in a
    set, the j-th hosted data center uses `SKYHAUL_REGION_RELAY`'s host and port + j (the terminal
    hosting the same set listens there, see terminal.service), else its home region straight
    from `SKYHAUL_REGION_ADDRS` (no emulated link).
    """

    name = "mdc"
    service_names = (service_full_name(mdc_pb2, "ModularDataCenterService"),)

    def __init__(
        self,
        settings: Settings,
        clock: EmulationClock,
        *,
        sync_config: SyncConfig | None = None,
        store_dir: Path | None = None,
        retention: RetentionPolicy | None = None,
        reconcile_interval_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        # Given here (tests, benchmarks) they apply to every hosted data center; else each its own.
        common = {
            "sync_config": sync_config,
            "retention": retention,
            "reconcile_interval_s": reconcile_interval_s,
        }
        ids = settings.data_center_ids or (settings.data_center_id,)
        specs = [settings.scenario.data_center(dc) for dc in ids]
        redis_url = settings.redis_url or None
        terminal = settings.peers["terminal"]
        self.group: LinkFollowerGroup | None = None
        self.hosted: dict[str, DataCenter] = {}
        if len(specs) == 1:
            spec = specs[0]
            self.hosted[spec.id] = DataCenter(
                settings,
                clock,
                spec,
                LinkFollower(spec.id, spec.home_region, clock, redis_url=redis_url),
                store_dir=Path(store_dir) if store_dir is not None else Path(settings.data_dir) / "mdc",
                region_address=settings.region_relay or settings.peers["region"],
                terminal_address=terminal,
                **common,
            )
        else:
            if store_dir is not None:
                raise ValueError("store_dir is for one hosted data center; a set keeps one per data center")
            self.group = LinkFollowerGroup(
                {spec.id: spec.home_region for spec in specs}, clock, redis_url=redis_url
            )
            for position, spec in enumerate(specs):
                self.hosted[spec.id] = DataCenter(
                    settings,
                    clock,
                    spec,
                    self.group.followers[spec.id],
                    store_dir=Path(settings.data_dir) / spec.id / "mdc",
                    region_address=self._region_address(position, spec),
                    terminal_address=terminal,
                    **common,
                )
        self._group_task: asyncio.Task | None = None

    def _region_address(self, position: int, spec: DataCenterSpec) -> str:
        if self.settings.region_relay:
            host, port = parse_hostport(self.settings.region_relay, "SKYHAUL_REGION_RELAY")
            return f"{host}:{port + position}"
        return self.settings.region_addrs.get(spec.home_region, self.settings.peers["region"])

    def host(self, data_center_id: str) -> DataCenter:
        """The hosted data center a request names; empty: the only one. Raises InvalidArgument/NotFound."""
        bounds.check_name(data_center_id, "data_center_id")
        if not data_center_id:
            if len(self.hosted) == 1:
                return next(iter(self.hosted.values()))
            raise InvalidArgument(
                f"this mdc process hosts {len(self.hosted)} data centers ({_some(self.hosted)}): "
                "name one in data_center_id (the CLI: --dc ID)"
            )
        hosted = self.hosted.get(data_center_id)
        if hosted is None:
            raise NotFound(
                f"data center {bounds.shown(data_center_id, 60)} is not hosted by this mdc process "
                f"(it hosts {_some(self.hosted)}); `skyhaul status` lists which process hosts which"
            )
        return hosted

    # One data center (today's layout, tests): its pieces, as before.
    @property
    def only(self) -> DataCenter:
        return self.host("")

    @property
    def spec(self) -> DataCenterSpec:
        return self.only.spec

    @property
    def store(self) -> ObjectStore | None:
        return self.only.store

    @property
    def store_dir(self) -> Path:
        return self.only.store_dir

    @property
    def link(self) -> LinkWatcher:
        return self.only.link

    @property
    def worker(self) -> SyncWorker | None:
        return self.only.worker

    @property
    def workload(self) -> WorkloadGenerator | None:
        return self.only.workload

    @property
    def retention(self) -> RetentionPolicy:
        return self.only.retention

    @property
    def reconciler(self) -> Reconciler | None:
        return self.only.reconciler

    def require_store(self) -> ObjectStore:
        return self.only.require_store()

    def object_added(self, stored: StoredObject) -> None:
        self.only.object_added(stored)

    def register(self, server: grpc.aio.Server) -> None:
        mdc_pb2_grpc.add_ModularDataCenterServiceServicer_to_server(MdcServicer(self), server)

    async def start(self) -> None:
        for data_center in self.hosted.values():
            await data_center.start(follow_link=self.group is None)
        if self.group is not None:
            self._group_task = asyncio.create_task(self.group.run(), name="link events (group)")
        log.info(
            "data centers started",
            extra={
                "skyhaul.data_centers": len(self.hosted),
                "skyhaul.first_data_center": next(iter(self.hosted)),
                "skyhaul.data_dir": str(self.settings.data_dir),
            },
        )

    async def stop(self) -> None:
        if self._group_task is not None:
            self._group_task.cancel()
            await asyncio.gather(self._group_task, return_exceptions=True)
            self._group_task = None
        await asyncio.gather(*(dc.stop() for dc in self.hosted.values()), return_exceptions=True)

    async def ready(self) -> bool:
        if any(dc.store is None for dc in self.hosted.values()):
            return False
        return await redis_ping(self.settings.redis_url, timeout=1.0)


def _some(hosted: dict, shown: int = 5) -> str:
    names = list(hosted)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def build(settings: Settings, clock: EmulationClock, **overrides) -> MdcApp:
    return MdcApp(settings, clock, **overrides)

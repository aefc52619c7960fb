"""What happens to objects after they synced: the retention policy and reconciliation with the region.

Retention (see docs/retention.md): synced objects stay on the data center's disk for `max_age_s`
emulated seconds after they synced, and all stored objects together stay under `max_bytes`; the
oldest synced go first. An object that has not synced is never evicted, whatever the policy says:
its bytes exist nowhere else. A released object leaves a row in the outbox (key, size, sha256), so
reconciliation can still vouch for it.

Reconciliation compares the synced and released objects with the region's blob list (size and
sha256). A synced object the region lost (deleted, or replaced by other bytes) goes back to the
queue and is uploaded again from the local bytes; a released one the region lost is reported as
lost (GetStatus, Reconcile's answer, an error log line and a span event): never silently lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping

import grpc
from opentelemetry import trace

from skyhaul.contract.blobs import show_value
from skyhaul.mdc.link import LinkWatcher
from skyhaul.mdc.objectstore import ObjectStore
from skyhaul.mdc.outbox import OutboxEntry
from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from skyhaul.runtime.scenario import RetentionSpec
from skyhaul.v1 import region_pb2, region_pb2_grpc

log = logging.getLogger(__name__)

RETENTION_CHECK_S = 1.0  # wall seconds between two looks at the policy (one indexed query each)
DEFAULT_RECONCILE_INTERVAL_S = 300.0  # wall seconds; 0 = only on demand
LIST_PAGE = 5000
MAX_REPORTED_KEYS = 100
_BATCH = 500

ENV_MAX_AGE = "SKYHAUL_RETENTION_MAX_AGE_S"
ENV_MAX_BYTES = "SKYHAUL_RETENTION_MAX_BYTES"
ENV_RECONCILE_INTERVAL = "SKYHAUL_RECONCILE_INTERVAL_S"
_NO_LIMIT = ("", "0", "none", "off")


@dataclasses.dataclass(frozen=True)
class RetentionPolicy:
    max_age_s: float | None = None
    max_bytes: int | None = None

    @property
    def active(self) -> bool:
        return self.max_age_s is not None or self.max_bytes is not None

    @classmethod
    def from_spec(cls, spec: RetentionSpec, env: Mapping[str, str] = os.environ) -> RetentionPolicy:
        """The scenario's policy, each limit overridden by its environment variable when set."""
        max_age, max_bytes = spec.max_age_s, spec.max_bytes
        if ENV_MAX_AGE in env:
            max_age = _env_number(env, ENV_MAX_AGE, float)
        if ENV_MAX_BYTES in env:
            max_bytes = _env_number(env, ENV_MAX_BYTES, int)
        return cls(max_age, max_bytes)


def _env_number(env: Mapping[str, str], name: str, kind: Callable[[str], float]):
    text = env[name].strip().lower()
    if text in _NO_LIMIT:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise InvalidArgument(
            f"{name}={show_value(env[name])} is not a number; use e.g. 3600, or 0 for no limit"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgument(f"{name}={show_value(env[name])} must be > 0 (0 or empty = no limit)")
    return value


def reconcile_interval(env: Mapping[str, str] = os.environ) -> float:
    text = env.get(ENV_RECONCILE_INTERVAL, "").strip()
    if not text:
        return DEFAULT_RECONCILE_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(
            f"{ENV_RECONCILE_INTERVAL}={show_value(text)} is not a number of seconds"
        ) from None
    if not (math.isfinite(value) and value >= 0):
        raise InvalidArgument(f"{ENV_RECONCILE_INTERVAL}={value:g} must be >= 0 (0 = only on demand)")
    return value


# What the region says about a synced object before the data center lets its copy go.
PRESENT, MISSING, UNKNOWN = "present", "missing", "unknown"


def apply_retention(
    store: ObjectStore,
    policy: RetentionPolicy,
    now: float,
    verify: Callable[[OutboxEntry], str] | None = None,
) -> tuple[int, int]:
    """Release synced objects the policy no longer keeps, oldest synced first. Returns (objects, bytes).

    Only synced objects are candidates; a race with reconciliation (which may requeue one) is
    settled by the outbox, which refuses to release anything not synced. `verify(entry)` asks the
    region first: MISSING puts the object back in the queue instead (its bytes are still here),
    UNKNOWN (the region cannot be asked) releases it on the strength of the commit the sync
    verified; reconciliation reports it if the region loses it later.
    """
    released = freed = 0

    def release(entry: OutboxEntry) -> bool:
        nonlocal released, freed
        if verify is not None and verify(entry) == MISSING:
            reason = "the region no longer holds it (found before retention released it); uploading it again"
            requeued = store.outbox.requeue_lost_in_region(entry.key, entry.sha256_hex, reason)
            if requeued is not None:
                log.warning(
                    "retention: %s %s", show_value(entry.key), reason, extra={"skyhaul.key": entry.key}
                )
            return requeued is not None
        try:
            gone = store.delete(entry.key, reason="retention")
        except (NotFound, FailedPrecondition):
            return False  # gone or requeued meanwhile
        released += 1
        freed += gone.size
        return True

    if policy.max_age_s is not None:
        cutoff = now - policy.max_age_s
        while True:
            batch = store.outbox.synced_oldest_first(_BATCH, synced_before=cutoff)
            progress = sum(release(entry) for entry in batch)
            if len(batch) < _BATCH or not progress:
                break
    if policy.max_bytes is not None:
        while store.stored_bytes() > policy.max_bytes:
            batch = store.outbox.synced_oldest_first(_BATCH)
            progress = 0
            for entry in batch:
                if store.stored_bytes() <= policy.max_bytes:
                    break
                progress += release(entry)
            if not batch or not progress:
                break  # what is left is unsynced: never evicted
    if released:
        log.info(
            "retention released %d synced objects (%d bytes) from the data center's disk",
            released,
            freed,
            extra={"skyhaul.objects": released, "skyhaul.bytes": freed},
        )
    return released, freed


class RegionCheck:
    """`verify` for apply_retention, called from its worker thread: one GetBlobProperties on the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        container: str,
        link: LinkWatcher,
        region: Callable[[], region_pb2_grpc.CloudRegionServiceStub | None],
        timeout_s: float = 10.0,
    ) -> None:
        self._loop = loop
        self._container = container
        self._link = link
        self._region = region
        self._timeout = timeout_s

    def __call__(self, entry: OutboxEntry) -> str:
        stub = self._region()
        if stub is None or not self._link.up:
            return UNKNOWN
        request = region_pb2.GetBlobPropertiesRequest(container=self._container, blob=entry.key)

        async def ask() -> region_pb2.BlobProperties:
            # Created and awaited on the loop: a grpc.aio call belongs to the loop that makes it.
            return await stub.GetBlobProperties(request, timeout=self._timeout)

        future = asyncio.run_coroutine_threadsafe(ask(), self._loop)
        try:
            props = future.result(self._timeout + 1)
        except grpc.aio.AioRpcError as exc:
            return MISSING if exc.code() == grpc.StatusCode.NOT_FOUND else UNKNOWN
        except Exception:  # noqa: BLE001 - a timeout or a closed loop: cannot tell
            future.cancel()
            return UNKNOWN
        same = props.sha256_hex == entry.sha256_hex and props.size == entry.size
        return PRESENT if same else MISSING


@dataclasses.dataclass(frozen=True)
class ReconcileReport:
    finished_unix: float
    checked: int
    reuploading: int
    lost: int
    lost_keys: tuple[str, ...]
    error: str = ""


class Reconciler:
    """Checks the data center's synced and released objects against the region's blob list."""

    def __init__(
        self,
        store: ObjectStore,
        container: str,
        link: LinkWatcher,
        region: Callable[[], region_pb2_grpc.CloudRegionServiceStub | None],
        clock: Callable[[], float],
        *,
        on_requeued: Callable[[], None] = lambda: None,
        rpc_timeout_s: float = 30.0,
    ) -> None:
        self.store = store
        self.container = container
        self.link = link
        self._region = region
        self._clock = clock
        self._on_requeued = on_requeued
        self._timeout = rpc_timeout_s
        self._lock = asyncio.Lock()
        self.last: ReconcileReport | None = None

    async def run(self) -> ReconcileReport:
        """One reconciliation now (one at a time). Unavailable while the region cannot be asked."""
        async with self._lock:
            try:
                report = await self._run()
            except Unavailable as exc:
                self.last = ReconcileReport(self._clock(), 0, 0, 0, (), str(exc))
                raise
            self.last = report
            return report

    async def _run(self) -> ReconcileReport:
        stub = self._region()
        if stub is None or not self.link.up:
            raise Unavailable("the link to the region is down; reconciliation runs again once it is up")
        # Objects synced after this moment may be missing from the listing: they are checked next time.
        cutoff = self._clock()
        blobs = await self._list_region(stub)
        outbox = self.store.outbox
        synced = await asyncio.to_thread(outbox.synced_entries, cutoff)
        released = await asyncio.to_thread(outbox.released_entries)
        span = trace.get_current_span()
        reuploading, lost_keys = 0, []
        for key, size, sha256_hex in synced:
            problem = _difference(blobs.get(key), size, sha256_hex)
            if problem is None:
                continue
            reason = f"the region {problem} after it synced; uploading it again from the data center's copy"
            entry = await asyncio.to_thread(outbox.requeue_lost_in_region, key, sha256_hex, reason)
            if entry is not None:
                reuploading += 1
                log.warning("reconcile: %s %s", show_value(key), reason, extra={"skyhaul.key": key})
                span.add_event("skyhaul.reupload", {"skyhaul.key": key, "skyhaul.reason": problem})
        for record in released:
            problem = _difference(blobs.get(record.key), record.size, record.sha256_hex)
            if problem is None:
                if record.lost_unix is not None:
                    await asyncio.to_thread(outbox.mark_released_lost, record.key, None)
                continue
            lost_keys.append(record.key)
            reason = f"the region {problem}, and the data center released its copy ({record.reason})"
            await asyncio.to_thread(outbox.mark_released_lost, record.key, reason)
            if record.lost_unix is None:  # said once per object, not at every run
                log.error(
                    "reconcile: object %s is LOST: %s",
                    show_value(record.key),
                    reason,
                    extra={"skyhaul.key": record.key},
                )
                span.add_event("skyhaul.lost", {"skyhaul.key": record.key, "skyhaul.reason": problem})
        if reuploading:
            self._on_requeued()
        report = ReconcileReport(
            finished_unix=self._clock(),
            checked=len(synced) + len(released),
            reuploading=reuploading,
            lost=len(lost_keys),
            lost_keys=tuple(lost_keys[:MAX_REPORTED_KEYS]),
        )
        log.info(
            "reconcile: %d objects checked, %d uploading again, %d lost",
            report.checked,
            report.reuploading,
            report.lost,
        )
        return report

    async def _list_region(self, stub) -> dict[str, region_pb2.BlobProperties]:
        blobs: dict[str, region_pb2.BlobProperties] = {}
        token = ""
        while True:
            try:
                reply = await stub.ListBlobs(
                    region_pb2.ListBlobsRequest(
                        container=self.container, page_token=token, max_results=LIST_PAGE
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return {}  # the container itself is gone: every synced object is missing
                raise Unavailable(
                    f"cannot list the region's blobs ({exc.code().name}: {exc.details()}); retry when it answers"
                ) from None
            for blob in reply.blobs:
                blobs[blob.name] = blob
            token = reply.next_page_token
            if not token:
                return blobs

    async def run_periodically(self, interval_s: float) -> None:
        """Reconcile every `interval_s` wall seconds while the link is up (errors are logged)."""
        while True:
            await asyncio.sleep(interval_s)
            if not self.link.up:
                continue
            try:
                await self.run()
            except Unavailable as exc:
                log.info("reconcile: skipped (%s)", exc)
            except Exception:  # noqa: BLE001 - a failed check must not stop the next one
                log.exception("reconcile: failed; trying again in %.0f s", interval_s)


def _difference(blob: region_pb2.BlobProperties | None, size: int, sha256_hex: str) -> str | None:
    """How the region's blob differs from what the data center synced (None: it matches)."""
    if blob is None:
        return "no longer holds it"
    if blob.sha256_hex != sha256_hex or blob.size != size:
        return f"holds other bytes under its key ({blob.size} bytes, sha256 {blob.sha256_hex[:16]}...)"
    return None

"""The synthetic sensor workload: N objects of S bytes every T emulated seconds.

Keys are ``<prefix><data center>/<seq>`` with an 8-digit sequence that continues after a restart
(the generator starts after the highest sequence already in the store). Content is pseudo-random
but seeded by data center and sequence, so the same key always gets the same bytes: a batch
re-generated after a crash is a retried put, never a conflicting one. Data is produced and
written in 1 MiB chunks, so an object of any size takes bounded memory.

Times: the interval is emulated time, so at speed 15 a 60 s interval is 4 s of wall time. Batches
keep their cadence; a batch that takes longer than the interval delays the next one instead of
piling up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable

import numpy as np

from skyhaul.contract.blobs import validate_blob_name
from skyhaul.mdc.objectstore import ObjectStore, StoredObject
from skyhaul.mdc.outbox import MAX_LIST, PRIORITIES
from skyhaul.runtime.errors import InvalidArgument, SkyhaulError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
SEQ_DIGITS = 8
MAX_OBJECTS_PER_BATCH = 100_000
MAX_OBJECT_BYTES = 2**34


@dataclasses.dataclass(frozen=True)
class Workload:
    objects_per_batch: int = 0  # 0 = off
    object_size_bytes: int = 262_144
    interval_s: float = 60.0  # emulated seconds between batches
    priority: str = "bulk"
    key_prefix: str = "sensor/"

    def validate(self, data_center_id: str) -> Workload:
        """Check every field; returns self. Errors name the field and the allowed range."""
        count = self.objects_per_batch
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_OBJECTS_PER_BATCH:
            raise InvalidArgument(
                f"workload objects_per_batch {count!r} is outside 0..{MAX_OBJECTS_PER_BATCH}"
            )
        if self.priority not in PRIORITIES:
            raise InvalidArgument(
                f"workload priority {self.priority!r} is unknown; use one of {', '.join(PRIORITIES)}"
            )
        if count == 0:
            return self
        size = self.object_size_bytes
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_OBJECT_BYTES:
            raise InvalidArgument(f"workload object_size_bytes {size!r} is outside 1..{MAX_OBJECT_BYTES}")
        if not isinstance(self.interval_s, int | float) or not 0 < self.interval_s <= 86_400:
            raise InvalidArgument(
                f"workload interval {self.interval_s!r} s is outside (0, 86400] emulated seconds"
            )
        validate_blob_name(workload_key(self.key_prefix, data_center_id, 0), "workload key")
        return self


def workload_key(prefix: str, data_center_id: str, seq: int) -> str:
    return f"{prefix}{data_center_id}/{seq:0{SEQ_DIGITS}d}"


def object_content(data_center_id: str, seq: int, size: int, chunk_bytes: int = CHUNK_BYTES):
    """The bytes of object `seq` of a data center, in chunks: seeded, so always the same."""
    seed = int.from_bytes(hashlib.sha256(f"skyhaul-workload/{data_center_id}".encode()).digest()[:8], "big")
    rng = np.random.default_rng([seed, seq])
    remaining = size
    while remaining > 0:
        n = min(chunk_bytes, remaining)
        yield rng.bytes(n)
        remaining -= n


def highest_sequence(store: ObjectStore, prefix: str, data_center_id: str) -> int:
    """The highest sequence stored under this prefix (-1 if none). Keys sort by sequence (fixed width)."""
    key_prefix = f"{prefix}{data_center_id}/"
    highest = -1
    start_after = ""
    while True:
        page = store.outbox.list_entries(prefix=key_prefix, limit=MAX_LIST, start_after=start_after)
        for entry in page:
            tail = entry.key[len(key_prefix) :]
            if len(tail) == SEQ_DIGITS and tail.isdigit():
                highest = max(highest, int(tail))
        if len(page) < MAX_LIST:
            return highest
        start_after = page[-1].key


class WorkloadGenerator:
    """Runs one `Workload` at a time; `set()` replaces it (and restarts the cadence)."""

    def __init__(
        self,
        store: ObjectStore,
        data_center_id: str,
        *,
        speed: float,
        on_put: Callable[[StoredObject], None],
    ) -> None:
        self.store = store
        self.data_center_id = data_center_id
        self.speed = speed
        self._on_put = on_put
        self._workload = Workload()
        self._task: asyncio.Task | None = None
        self._next_seq: dict[str, int] = {}  # per key prefix
        self.objects_generated = 0
        self.batches_skipped = 0  # store full, or another local error

    @property
    def workload(self) -> Workload:
        return self._workload

    async def set(self, workload: Workload) -> Workload:
        workload.validate(self.data_center_id)
        await self.stop()
        self._workload = workload
        if workload.objects_per_batch > 0:
            self._task = asyncio.create_task(self._run(workload), name="synthetic workload")
        return workload

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, workload: Workload) -> None:
        prefix = workload.key_prefix
        if prefix not in self._next_seq:
            highest = await asyncio.to_thread(highest_sequence, self.store, prefix, self.data_center_id)
            self._next_seq[prefix] = highest + 1
        interval_wall = workload.interval_s / self.speed
        next_batch = time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, next_batch - time.monotonic()))
            try:
                for _ in range(workload.objects_per_batch):
                    seq = self._next_seq[prefix]
                    stored = await asyncio.to_thread(self._put, workload, seq)
                    self._next_seq[prefix] = seq + 1
                    self.objects_generated += 1
                    self._on_put(stored)
            except SkyhaulError as exc:
                # The store is full (or refused the key): this batch is lost to the sensor, say so.
                self.batches_skipped += 1
                log.warning(
                    "workload: batch skipped: %s", exc, extra={"skyhaul.data_center": self.data_center_id}
                )
            next_batch = max(next_batch + interval_wall, time.monotonic())

    def _put(self, workload: Workload, seq: int) -> StoredObject:
        key = workload_key(workload.key_prefix, self.data_center_id, seq)
        handle = self.store.begin_put(key, workload.priority, {"source": "synthetic-workload"})
        with handle:
            for chunk in object_content(self.data_center_id, seq, workload.object_size_bytes):
                handle.write(chunk)
            return handle.finish()

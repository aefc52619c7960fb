"""The data center's local object store: data durable on disk first, then queued in the outbox.

Plain synchronous classes; the servicer calls them through `asyncio.to_thread`. Layout under
``root_dir`` (one process owns it; an flock on ``.lock`` enforces that)::

    outbox.sqlite3        the outbox (see outbox.py)
    objects/<ab>/<id>     object data, named by a random id (never by the user's key)
    tmp/                  puts in progress; anything here at open is a crash leftover

A put streams into ``tmp/``, fsyncs, renames the file into ``objects/`` (still unreferenced) and
only then records it in the outbox in one SQLite transaction. A kill -9 before that commit leaves
at most an unreferenced file, removed at the next open: an object is either recorded whole or
not at all, and a recorded object always has its data.

Disk full: an ENOSPC / EDQUOT from the file system or SQLite's "database or disk is full" refuses
the put with ResourceExhausted (nothing of it is kept) and marks the store full until a put
succeeds or a delete frees space; `state()` says so, for GetStatus.

Keys are immutable: putting an existing key again with the same bytes is a retried put and
returns the stored object (no second outbox entry); with other bytes it is AlreadyExists and the
first object stays. Nothing a user stored is ever replaced or dropped behind their back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import hmac
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from skyhaul.contract.blobs import show_value, validate_blob_name, validate_content_type, validate_metadata
from skyhaul.mdc.outbox import Outbox, OutboxEntry, validate_priority
from skyhaul.runtime.durable import DirectoryLock, clear_directory, fsync_dir, make_dirs_durably
from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger(__name__)


_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FULL_ADVICE = (
    "delete synced objects (`skyhaul rm KEY`), set a retention policy (scenario data center "
    "`retention: {max_age_s, max_bytes}`) or free space on that disk, then put again"
)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT from the file system, or SQLite's way of saying the same."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


@dataclasses.dataclass(frozen=True)
class StoreState:
    full: bool
    message: str
    used_bytes: int
    capacity_bytes: int | None
    disk_free_bytes: int


@dataclasses.dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256_hex: str
    created_unix: float
    priority: str


class ObjectStore:
    """Objects of one data center, durable under `root_dir`, each queued in `outbox` for sync.

    `capacity_bytes` (None: unlimited) bounds stored plus in-flight bytes; a put that would exceed
    it is refused with FailedPrecondition. Synced objects keep their data until `delete`.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        capacity_bytes: int | None = None,
    ) -> None:
        if capacity_bytes is not None and (
            isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes <= 0
        ):
            raise InvalidArgument(f"capacity must be a positive number of bytes, got {capacity_bytes!r}")
        self._root = Path(root_dir)
        self._root.mkdir(parents=True, exist_ok=True)
        self._dir_lock = DirectoryLock(self._root, "data center object store")
        self._clock = clock
        self._capacity = capacity_bytes
        self._tmp_dir = self._root / "tmp"
        self._objects_dir = self._root / "objects"
        self._lock = threading.Lock()
        self._open_puts: weakref.WeakSet[PutHandle] = weakref.WeakSet()
        self._disk_full: str | None = None  # the error of the last put that met a full disk
        try:
            self._tmp_dir.mkdir(exist_ok=True)
            self._objects_dir.mkdir(exist_ok=True)
            self._outbox = Outbox(self._root / "outbox.sqlite3", clock=clock)
            try:
                self._recover()
            except BaseException:
                self._outbox.close()
                raise
        except BaseException:
            self._dir_lock.release()
            raise

    def _recover(self) -> None:
        removed = clear_directory(self._tmp_dir)
        referenced = self._outbox.referenced_file_ids()
        present: set[str] = set()
        for fan_dir in os.scandir(self._objects_dir):
            if not fan_dir.is_dir(follow_symlinks=False):
                continue
            for data_file in os.scandir(fan_dir.path):
                if data_file.name in referenced:
                    present.add(data_file.name)
                else:
                    os.unlink(data_file.path)  # renamed in, but the outbox commit never happened
                    removed += 1
        if removed:
            log.info("object store %s: removed %d leftovers of interrupted puts", self._root, removed)
        missing = referenced - present
        if missing:
            log.error("object store %s: %d recorded objects have no data file", self._root, len(missing))
        self._stored_bytes = self._outbox.totals().bytes

    # ----------------------------------------------------------------- lifecycle

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    @property
    def root_dir(self) -> Path:
        return self._root

    def close(self) -> None:
        """Close the outbox and release the directory. Open puts are abandoned (their temp files go)."""
        for handle in list(self._open_puts):
            handle.abort()
        self._outbox.close()
        self._dir_lock.release()

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def used_bytes(self) -> int:
        """Bytes of stored objects plus bytes written so far by puts in progress."""
        with self._lock:
            return self._stored_bytes + sum(handle.bytes_written for handle in self._open_puts)

    def stored_bytes(self) -> int:
        """Bytes of stored objects (puts in progress not counted)."""
        with self._lock:
            return self._stored_bytes

    def state(self) -> StoreState:
        """Whether a put can be accepted now, and why not."""
        used = self.used_bytes()
        try:
            stat = os.statvfs(self._root)
            free = stat.f_bavail * stat.f_frsize
        except OSError:
            free = 0
        message = ""
        if self._disk_full is not None:
            message = f"the disk under {self._root} is full ({self._disk_full}); {FULL_ADVICE}"
        elif self._capacity is not None and used >= self._capacity:
            message = f"the store's capacity is used up ({used} of {self._capacity} bytes); {FULL_ADVICE}"
        return StoreState(bool(message), message, used, self._capacity, free)

    def _note_disk_full(self, exc: BaseException, key: str) -> ResourceExhausted:
        self._disk_full = f"{type(exc).__name__}: {exc}"
        log.error("object store %s: disk full while storing %s: %s", self._root, show_value(key), exc)
        return ResourceExhausted(
            f"the data center's disk is full: object {show_value(key)} was not stored ({exc.strerror if isinstance(exc, OSError) else exc}); "
            f"{FULL_ADVICE}"
        )

    @contextlib.contextmanager
    def _disk_errors(self, key: str):
        """Turn a full disk into ResourceExhausted (the caller's cleanup still runs)."""
        try:
            yield
        except (OSError, sqlite3.OperationalError) as exc:
            if is_disk_full(exc):
                raise self._note_disk_full(exc, key) from exc
            raise

    # ----------------------------------------------------------------- puts

    def begin_put(
        self,
        key: str,
        priority: str = "bulk",
        metadata: Mapping[str, str] | None = None,
        content_type: str = "",
        traceparent: str = "",
    ) -> PutHandle:
        """Start storing an object; feed it with `write`, then `finish` (or `abort`).

        Key, priority, metadata and content type are checked here, before any byte is accepted.
        `traceparent` (W3C) names the span of the put; the outbox keeps it for the sync's trace.
        """
        validate_blob_name(key, "object key")
        validate_priority(priority)
        metadata = validate_metadata(metadata)
        content_type = validate_content_type(content_type)
        with self._disk_errors(key):
            handle = PutHandle(
                self,
                key,
                priority,
                metadata,
                content_type,
                self._tmp_dir / f"{uuid.uuid4().hex}.part",
                traceparent,
            )
        with self._lock:
            self._open_puts.add(handle)
        return handle

    def _reserve(self, handle: PutHandle, length: int) -> None:
        if self._capacity is None:
            return
        with self._lock:
            used = self._stored_bytes + sum(h.bytes_written for h in self._open_puts)
            if used + length > self._capacity:
                raise FailedPrecondition(
                    f"the data center store is full ({used} of {self._capacity} bytes used); "
                    f"object {show_value(handle.key)} needs more. Wait for the backlog to sync, then {FULL_ADVICE}"
                )

    def _record(self, handle: PutHandle, tmp: Path, size: int, sha256_hex: str) -> StoredObject:
        """Move a finished, fsynced temp file into objects/, then record it in the outbox."""
        file_id = uuid.uuid4().hex
        final = self._objects_dir / file_id[:2] / file_id
        # Not runtime.durable.replace_durably: the directory fsync stays outside the store lock, so
        # other puts do not queue behind it.
        with self._lock:
            make_dirs_durably(final.parent)
            os.replace(tmp, final)
        fsync_dir(final.parent)
        try:
            entry, created = self._outbox.add(
                handle.key,
                file_id,
                size,
                sha256_hex,
                handle.priority,
                handle.metadata,
                float(self._clock()),
                handle.content_type,
                handle.traceparent,
            )
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        with self._lock:
            # Moved from in-flight to stored in one step, so capacity never counts it twice or not at all.
            self._open_puts.discard(handle)
            if created:
                self._stored_bytes += size
            self._disk_full = None  # a put went through: the disk takes writes again
        if not created:
            final.unlink()  # a retried put: the first copy is the one recorded
        return StoredObject(
            key=entry.key,
            size=entry.size,
            sha256_hex=entry.sha256_hex,
            created_unix=entry.created_unix,
            priority=entry.priority,
        )

    def _forget(self, handle: PutHandle) -> None:
        with self._lock:
            self._open_puts.discard(handle)

    # ----------------------------------------------------------------- reads and delete

    def get(self, key: str) -> OutboxEntry:
        """The object's outbox entry: size, sha256, priority, sync state and progress."""
        return self._outbox.get(key)

    def open_object(self, key: str) -> BinaryIO:
        """The stored bytes for reading (the caller closes it). Stays readable if deleted meanwhile."""
        with self._lock:
            path = self._data_path(self._outbox.file_id(key))
            try:
                return open(path, "rb")
            except FileNotFoundError:
                raise NotFound(f"object {show_value(key)} has no data file at {path}") from None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of the object, cut at its end (one block for the uploader)."""
        for value, what in ((offset, "offset"), (length, "length")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"{what} must be a non-negative integer, got {value!r}")
        with self.open_object(key) as f:
            f.seek(offset)
            return f.read(length)

    def delete(self, key: str, *, force: bool = False, reason: str = "deleted") -> OutboxEntry:
        """Remove an object from the data center; returns its entry as it was.

        A synced object stays in the region (the outbox remembers it for reconciliation). An
        unsynced one is refused (FailedPrecondition) unless `force` accepts losing it.
        """
        with self._lock:
            file_id = self._outbox.file_id(key)
            entry = self._outbox.remove(key, force=force, reason=reason)
            self._stored_bytes -= entry.size
            self._disk_full = None  # space was freed: let the next put try
        # A crash before this unlink leaves an unreferenced file: removed at the next open.
        self._data_path(file_id).unlink(missing_ok=True)
        if entry.state != "synced":
            log.warning(
                "object %s deleted before it synced (%s, forced): its data is gone",
                show_value(key),
                entry.state,
                extra={"skyhaul.key": key},
            )
        return entry

    def _data_path(self, file_id: str) -> Path:
        return self._objects_dir / file_id[:2] / file_id


def _discard_temp(file: BinaryIO, path: Path) -> None:
    try:
        file.close()  # flushes what is buffered: may fail on a full disk, the file goes anyway
    except OSError:
        pass
    finally:
        path.unlink(missing_ok=True)


class PutHandle:
    """One object being written. Not thread-safe: one stream feeds one handle.

    Usable as a context manager: leaving the block without `finish` aborts. A handle dropped
    without either has its temp file removed when it is garbage-collected.
    """

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        priority: str,
        metadata: dict[str, str],
        content_type: str,
        tmp: Path,
        traceparent: str = "",
    ) -> None:
        self._store = store
        self.key = key
        self.priority = priority
        self.metadata = metadata
        self.content_type = content_type
        self.traceparent = traceparent
        self._tmp = tmp
        self._file: BinaryIO = open(tmp, "xb")  # closed by finish, abort or the finalizer
        self._finalizer = weakref.finalize(self, _discard_temp, self._file, tmp)
        self._digest = hashlib.sha256()
        self._size = 0
        self._state = "open"  # open | finished | aborted

    @property
    def bytes_written(self) -> int:
        return self._size if self._state == "open" else 0

    def _require_open(self) -> None:
        if self._state != "open":
            raise FailedPrecondition(f"the put of {show_value(self.key)} is already {self._state}")

    def write(self, chunk: bytes) -> None:
        """Append a chunk. Memory stays bounded: chunks go straight to the temp file."""
        self._require_open()
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InvalidArgument(f"a chunk must be bytes, got {type(chunk).__name__}")
        self._store._reserve(self, len(chunk))
        try:
            self._file.write(chunk)
        except OSError as exc:
            if is_disk_full(exc):
                raise self._store._note_disk_full(exc, self.key) from exc
            raise
        self._digest.update(chunk)
        self._size += len(chunk)

    def finish(self, expected_sha256: bytes | None = None) -> StoredObject:
        """Make the object durable and queue it for sync; returns what was stored.

        With `expected_sha256` (32 raw bytes) a mismatch refuses the object with InvalidArgument and
        nothing is stored.
        """
        self._require_open()
        if expected_sha256 is not None and (
            not isinstance(expected_sha256, bytes | bytearray | memoryview) or len(expected_sha256) != 32
        ):
            raise InvalidArgument("expected sha256 must be 32 raw bytes")
        try:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
            except OSError as exc:
                if is_disk_full(exc):
                    raise self._store._note_disk_full(exc, self.key) from exc
                raise
            sha256_hex = self._digest.hexdigest()
            if expected_sha256 is not None and not hmac.compare_digest(
                sha256_hex, bytes(expected_sha256).hex()
            ):
                raise InvalidArgument(
                    f"object {show_value(self.key)}: sha256 of the {self._size} bytes received is {sha256_hex}, the request "
                    f"expects {bytes(expected_sha256).hex()}; nothing was stored, send it again"
                )
            with self._store._disk_errors(self.key):
                stored = self._store._record(self, self._tmp, self._size, sha256_hex)
        except BaseException:
            self._state = "aborted"
            self._store._forget(self)
            self._finalizer()
            raise
        self._state = "finished"
        self._finalizer.detach()
        return stored

    def abort(self) -> None:
        """Drop the partial object. Aborting a finished or aborted put changes nothing."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._store._forget(self)
        self._finalizer()

    def __enter__(self) -> PutHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

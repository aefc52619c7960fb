"""The data center's durable outbox: which stored objects still have to reach the home region.

One SQLite database (WAL, synchronous=FULL: a committed transaction survives kill -9 and power
loss) with a row per object and a row per block confirmed staged in the region. Plain synchronous
and thread-safe (one connection behind a lock): the servicer and the sync worker call it through
`asyncio.to_thread`.

Life of an object::

    pending ──start_upload──▶ uploading ──mark_synced──▶ synced
       ▲                         │  └──mark_failed──▶ failed ──requeue──▶ pending
       └──── reopen (crash) ─────┘

Upload progress (block size, staged blocks, contiguous bytes confirmed) is kept across all of
these, so an upload interrupted by an outage, a restart or a kill -9 resumes from its first
unconfirmed block. Block ids are deterministic (`block_id_for`), so the same block gets the same id
in every attempt and the region's uncommitted block list can be matched against it.

Released objects: a synced object removed from the data center's disk (by DeleteObject or the
retention policy) leaves a row in `released` (key, size, sha256, etag), so reconciliation can
still tell whether the region keeps it, and report it as lost if not. Putting the key again
supersedes that row.

Schema versions (PRAGMA user_version): 1 kept an object's content type inside its metadata JSON
under `CONTENT_TYPE_METADATA_KEY`; 2 gives it a column; 3 adds the `released` table; 4 adds
`traceparent`, the W3C trace context of the span that put the object (empty for objects put before,
or put outside a trace), so the sync can link its trace to the put's. Opening an older database
migrates it step by step in one transaction (all rows or none), so nothing is lost.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from skyhaul.contract.blobs import (
    MAX_BLOCK_BYTES,
    show_value,
    validate_blob_name,
    validate_block_id,
    validate_content_type,
    validate_metadata,
)
from skyhaul.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

# Upload order: telemetry first, bulk last.
PRIORITIES: tuple[str, ...] = ("telemetry", "interactive", "bulk")
STATES: tuple[str, ...] = ("pending", "uploading", "synced", "failed")
MAX_BATCH = 10_000
MAX_LIST = 10_000
MAX_BLOCK_INDEX = 99_999_999
MAX_TRACEPARENT_CHARS = 128  # a W3C traceparent is 55; room for later versions, not for junk

_SCHEMA_VERSION = 4
# Where schema version 1 kept the content type, inside the metadata. Still refused as a user
# metadata key by the servicer, so a put is accepted or refused exactly as before.
CONTENT_TYPE_METADATA_KEY = "skyhaul_content_type"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order: the tie-break for equal times
    key             TEXT NOT NULL UNIQUE,
    file_id         TEXT NOT NULL,                      -- data file name in the object store
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL,                      -- hex
    priority        TEXT NOT NULL,
    priority_rank   INTEGER NOT NULL,
    created_unix    REAL NOT NULL,
    metadata        TEXT NOT NULL,                      -- JSON object of strings
    content_type    TEXT NOT NULL DEFAULT '',
    traceparent     TEXT NOT NULL DEFAULT '',           -- W3C trace context of the put ('' = none)
    state           TEXT NOT NULL CHECK (state IN ('pending', 'uploading', 'synced', 'failed')),
    block_size      INTEGER,                            -- fixed by the first start_upload
    bytes_confirmed INTEGER NOT NULL DEFAULT 0,         -- contiguous prefix of staged blocks
    bytes_sent      INTEGER NOT NULL DEFAULT 0,         -- every staged byte, re-sends included
    attempts        INTEGER NOT NULL DEFAULT 0,
    synced_unix     REAL,
    etag            TEXT,
    failure_reason  TEXT
);
CREATE INDEX IF NOT EXISTS objects_queue ON objects (state, priority_rank, created_unix, seq);
CREATE INDEX IF NOT EXISTS objects_synced ON objects (state, synced_unix, seq);
CREATE TABLE IF NOT EXISTS staged_blocks (
    key         TEXT NOT NULL REFERENCES objects (key) ON DELETE CASCADE,
    block_index INTEGER NOT NULL,
    block_id    TEXT NOT NULL,
    offset_end  INTEGER NOT NULL,
    PRIMARY KEY (key, block_index)
) WITHOUT ROWID;
"""

# Schema 3: synced objects whose bytes left this disk, kept so reconciliation can still check them.
_RELEASED_SCHEMA = """
CREATE TABLE IF NOT EXISTS released (
    key           TEXT PRIMARY KEY,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    etag          TEXT,
    synced_unix   REAL,
    released_unix REAL NOT NULL,
    reason        TEXT NOT NULL,                        -- 'deleted' or 'retention'
    lost_unix     REAL,                                 -- the region was found without it
    lost_reason   TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_synced ON objects (state, synced_unix, seq);
"""


class ReleasedObject(NamedTuple):
    key: str
    size: int
    sha256_hex: str
    etag: str | None
    synced_unix: float | None
    released_unix: float
    reason: str
    lost_unix: float | None
    lost_reason: str | None


class ReleaseTotals(NamedTuple):
    objects: int
    bytes: int
    lost: int


def block_id_for(sha256_hex: str, index: int) -> str:
    """The id of block `index` of the object with this sha256: deterministic, always 36 characters.

    Azure requires every block id of a blob to have the same length; base64 of a fixed-width
    string gives that, and the sha prefix keeps ids of different contents apart.
    """
    if not isinstance(sha256_hex, str) or len(sha256_hex) < 16:
        raise InvalidArgument(f"sha256 must be a hex string of at least 16 characters, got {sha256_hex!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_BLOCK_INDEX:
        raise InvalidArgument(f"block index must be an integer in 0..{MAX_BLOCK_INDEX}, got {index!r}")
    return base64.b64encode(f"{sha256_hex[:16]}-{index:08d}".encode()).decode()


class OutboxEntry(NamedTuple):
    key: str
    size: int
    sha256_hex: str
    priority: str
    created_unix: float
    state: str
    metadata: dict[str, str]
    content_type: str
    block_size: int | None
    bytes_confirmed: int
    bytes_sent: int
    attempts: int
    synced_unix: float | None
    etag: str | None
    failure_reason: str | None
    traceparent: str = ""  # W3C traceparent of the put's span ("" = none)


class UploadProgress(NamedTuple):
    key: str
    state: str
    size: int
    sha256_hex: str
    block_size: int | None
    staged_block_ids: tuple[str, ...]  # confirmed staged, by block index (may have gaps)
    bytes_confirmed: int  # resume uploading at this offset
    bytes_sent: int
    attempts: int

    @property
    def block_count(self) -> int | None:
        """Blocks the object splits into at this block size (0 for an empty object)."""
        return None if self.block_size is None else math.ceil(self.size / self.block_size)


class Backlog(NamedTuple):
    """Objects not yet synced (pending or uploading; failed ones are counted in totals)."""

    objects: int
    bytes: int  # their full sizes
    oldest_created_unix: float | None


class OutboxTotals(NamedTuple):
    objects: int
    bytes: int
    pending: int
    uploading: int
    synced: int
    failed: int
    synced_bytes: int
    bytes_sent: int


def validate_priority(priority: object) -> str:
    if priority not in PRIORITIES:
        raise InvalidArgument(f"priority {priority!r} is unknown; use one of {', '.join(PRIORITIES)}")
    return str(priority)


def _validate_count(value: object, what: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidArgument(f"{what} must be an integer in 1..{maximum}, got {value!r}")
    return value


_ENTRY_COLUMNS = (
    "key, size, sha256, priority, created_unix, state, metadata, content_type, block_size, bytes_confirmed,"
    " bytes_sent, attempts, synced_unix, etag, failure_reason, traceparent"
)


def _entry(row: tuple[Any, ...]) -> OutboxEntry:
    values = list(row)
    values[6] = json.loads(values[6])
    return OutboxEntry(*values)


def _move_content_type_to_its_column(db: sqlite3.Connection) -> None:
    """Schema 1 -> 2, inside the caller's transaction: the content type leaves the metadata JSON."""
    db.execute("ALTER TABLE objects ADD COLUMN content_type TEXT NOT NULL DEFAULT ''")
    rows = db.execute("SELECT key, metadata FROM objects").fetchall()
    for key, metadata_json in rows:
        metadata = json.loads(metadata_json)
        if CONTENT_TYPE_METADATA_KEY in metadata:
            content_type = metadata.pop(CONTENT_TYPE_METADATA_KEY)
            db.execute(
                "UPDATE objects SET metadata = ?, content_type = ? WHERE key = ?",
                (json.dumps(metadata, sort_keys=True), content_type, key),
            )


def _add_traceparent_column(db: sqlite3.Connection) -> None:
    """Schema 3 -> 4, inside the caller's transaction: objects already queued have no put trace."""
    db.execute("ALTER TABLE objects ADD COLUMN traceparent TEXT NOT NULL DEFAULT ''")


class Outbox:
    """The SQLite outbox. See the module docstring for states and resume."""

    def __init__(self, db_path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self._path = Path(db_path)
        self._clock = clock
        self._lock = threading.Lock()
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise FailedPrecondition(f"outbox {self._path}: SQLite refused WAL mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            with self._write() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, 1, 2, 3, _SCHEMA_VERSION):
                    raise FailedPrecondition(
                        f"outbox {self._path} has schema version {version}; this build reads {_SCHEMA_VERSION}"
                    )
                if version == 0:
                    # One statement at a time: executescript() would commit the open transaction.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                else:
                    if version == 1:
                        _move_content_type_to_its_column(db)
                    if version <= 3:
                        _add_traceparent_column(db)
                if version < 3:
                    for statement in _RELEASED_SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                # A process that died mid-upload left rows 'uploading'; they resume from their progress.
                db.execute("UPDATE objects SET state = 'pending' WHERE state = 'uploading'")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # also when COMMIT itself failed (disk full, I/O error)
                    self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    @staticmethod
    def _row(db: sqlite3.Connection, key: str) -> OutboxEntry:
        row = db.execute(f"SELECT {_ENTRY_COLUMNS} FROM objects WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise NotFound(f"object {show_value(key)} is not in the outbox")
        return _entry(row)

    # ----------------------------------------------------------------- adding objects

    def add(
        self,
        key: str,
        file_id: str,
        size: int,
        sha256_hex: str,
        priority: str,
        metadata: Mapping[str, str] | None,
        created_unix: float,
        content_type: str = "",
        traceparent: str = "",
    ) -> tuple[OutboxEntry, bool]:
        """Record a durably stored object as pending, in one transaction. Returns (entry, created).

        The same key with the same size and sha256 is a retried put: the existing entry comes back
        with created=False. `traceparent` (W3C) names the span of the put, for the sync's trace. The same key with other content is AlreadyExists: the first stays.
        """
        validate_blob_name(key, "object key")
        validate_priority(priority)
        metadata = validate_metadata(metadata)
        content_type = validate_content_type(content_type)
        if not isinstance(traceparent, str) or len(traceparent) > MAX_TRACEPARENT_CHARS:
            raise InvalidArgument(f"traceparent must be a W3C traceparent string, got {traceparent!r}")
        with self._write() as db:
            existing = db.execute("SELECT size, sha256 FROM objects WHERE key = ?", (key,)).fetchone()
            if existing is not None:
                if tuple(existing) == (size, sha256_hex):
                    return self._row(db, key), False
                raise AlreadyExists(
                    f"object {show_value(key)} is already stored with other content (sha256 {existing[1]}); "
                    "objects are immutable, put the new data under a new key"
                )
            db.execute("DELETE FROM released WHERE key = ?", (key,))  # the new object supersedes it
            db.execute(
                "INSERT INTO objects (key, file_id, size, sha256, priority, priority_rank, created_unix, metadata,"
                " content_type, traceparent, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                (
                    key,
                    file_id,
                    size,
                    sha256_hex,
                    priority,
                    PRIORITIES.index(priority),
                    created_unix,
                    json.dumps(metadata, sort_keys=True),
                    content_type,
                    traceparent,
                ),
            )
            return self._row(db, key), True

    def remove(self, key: str, *, force: bool = False, reason: str = "deleted") -> OutboxEntry:
        """Forget an object. A synced one (its data is safe in the region) is remembered in `released`.

        Anything not synced is refused with FailedPrecondition unless `force` (its data is lost).
        """
        with self._write() as db:
            entry = self._row(db, key)
            if entry.state != "synced" and not force:
                raise FailedPrecondition(
                    f"object {show_value(key)} is {entry.state}, not synced yet: deleting it now would lose its "
                    "data. Wait for it to sync (`skyhaul objects`), or delete it anyway with force "
                    "(`skyhaul rm --force`) if losing it is acceptable"
                )
            db.execute("DELETE FROM objects WHERE key = ?", (key,))
            if entry.state == "synced":
                db.execute(
                    "INSERT OR REPLACE INTO released (key, size, sha256, etag, synced_unix, released_unix, reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        entry.size,
                        entry.sha256_hex,
                        entry.etag,
                        entry.synced_unix,
                        float(self._clock()),
                        reason,
                    ),
                )
            return entry

    # ----------------------------------------------------------------- retention and reconciliation

    def synced_oldest_first(self, limit: int, synced_before: float | None = None) -> list[OutboxEntry]:
        """Synced objects, oldest sync first (the retention policy's eviction order)."""
        _validate_count(limit, "limit", MAX_LIST)
        sql = f"SELECT {_ENTRY_COLUMNS} FROM objects WHERE state = 'synced'"
        params: list[Any] = []
        if synced_before is not None:
            sql += " AND synced_unix < ?"
            params.append(synced_before)
        sql += " ORDER BY synced_unix, seq LIMIT ?"
        params.append(limit)
        return [_entry(row) for row in self._read(sql, tuple(params))]

    def synced_entries(self, synced_by: float) -> list[tuple[str, int, str]]:
        """(key, size, sha256) of every object synced at or before `synced_by`."""
        return [
            (key, size, sha)
            for key, size, sha in self._read(
                "SELECT key, size, sha256 FROM objects WHERE state = 'synced' AND synced_unix <= ?",
                (synced_by,),
            )
        ]

    def released_entries(self) -> list[ReleasedObject]:
        return [
            ReleasedObject(*row)
            for row in self._read(
                "SELECT key, size, sha256, etag, synced_unix, released_unix, reason, lost_unix, lost_reason"
                " FROM released ORDER BY key"
            )
        ]

    def release_totals(self) -> ReleaseTotals:
        objects, size, lost = self._read(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(lost_unix) FROM released"
        )[0]
        return ReleaseTotals(objects, size, lost)

    def requeue_lost_in_region(self, key: str, sha256_hex: str, reason: str) -> OutboxEntry | None:
        """The region lost this synced object: upload it again from the start. None if it changed meanwhile."""
        with self._write() as db:
            row = db.execute("SELECT state, sha256 FROM objects WHERE key = ?", (key,)).fetchone()
            if row is None or tuple(row) != ("synced", sha256_hex):
                return None
            db.execute("DELETE FROM staged_blocks WHERE key = ?", (key,))
            db.execute(
                "UPDATE objects SET state = 'pending', synced_unix = NULL, etag = NULL, bytes_confirmed = 0,"
                " block_size = NULL, failure_reason = ? WHERE key = ?",
                (reason, key),
            )
            return self._row(db, key)

    def mark_released_lost(self, key: str, reason: str | None) -> None:
        """Record (reason) or clear (None) that the region no longer holds this released object."""
        with self._write() as db:
            if reason is None:
                db.execute("UPDATE released SET lost_unix = NULL, lost_reason = NULL WHERE key = ?", (key,))
            else:
                db.execute(
                    "UPDATE released SET lost_unix = COALESCE(lost_unix, ?), lost_reason = ? WHERE key = ?",
                    (float(self._clock()), reason, key),
                )

    # ----------------------------------------------------------------- reads

    def get(self, key: str) -> OutboxEntry:
        with self._lock:
            return self._row(self._db, key)

    def file_id(self, key: str) -> str:
        rows = self._read("SELECT file_id FROM objects WHERE key = ?", (key,))
        if not rows:
            raise NotFound(f"object {show_value(key)} is not in the outbox")
        return rows[0][0]

    def referenced_file_ids(self) -> set[str]:
        return {row[0] for row in self._read("SELECT file_id FROM objects")}

    def next_batch(self, limit: int = 16) -> list[OutboxEntry]:
        """Pending objects to upload next: by priority class (telemetry first), then oldest first."""
        _validate_count(limit, "limit", MAX_BATCH)
        rows = self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM objects WHERE state = 'pending'"
            " ORDER BY priority_rank, created_unix, seq LIMIT ?",
            (limit,),
        )
        return [_entry(row) for row in rows]

    def progress(self, key: str) -> UploadProgress:
        with self._lock:
            return self._progress(self._db, key)

    @staticmethod
    def _progress(db: sqlite3.Connection, key: str) -> UploadProgress:
        entry = Outbox._row(db, key)
        ids = db.execute(
            "SELECT block_id FROM staged_blocks WHERE key = ? ORDER BY block_index", (key,)
        ).fetchall()
        return UploadProgress(
            key=key,
            state=entry.state,
            size=entry.size,
            sha256_hex=entry.sha256_hex,
            block_size=entry.block_size,
            staged_block_ids=tuple(row[0] for row in ids),
            bytes_confirmed=entry.bytes_confirmed,
            bytes_sent=entry.bytes_sent,
            attempts=entry.attempts,
        )

    def backlog(self) -> Backlog:
        (objects, size, oldest) = self._read(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(created_unix) FROM objects"
            " WHERE state IN ('pending', 'uploading')"
        )[0]
        return Backlog(objects, size, oldest)

    def totals(self) -> OutboxTotals:
        counts = dict.fromkeys(STATES, 0)
        objects = size = synced_bytes = sent = 0
        for state, count, state_bytes, state_sent in self._read(
            "SELECT state, COUNT(*), SUM(size), SUM(bytes_sent) FROM objects GROUP BY state"
        ):
            counts[state] = count
            objects += count
            size += state_bytes
            sent += state_sent
            if state == "synced":
                synced_bytes = state_bytes
        return OutboxTotals(
            objects=objects,
            bytes=size,
            pending=counts["pending"],
            uploading=counts["uploading"],
            synced=counts["synced"],
            failed=counts["failed"],
            synced_bytes=synced_bytes,
            bytes_sent=sent,
        )

    def list_entries(
        self, prefix: str = "", state: str | None = None, limit: int = 1000, start_after: str = ""
    ) -> list[OutboxEntry]:
        """Entries sorted by key, optionally of one state; page with the last key as `start_after`."""
        if not isinstance(prefix, str) or not isinstance(start_after, str):
            raise InvalidArgument("prefix and start_after must be strings")
        if state is not None and state not in STATES:
            raise InvalidArgument(f"state {state!r} is unknown; use one of {', '.join(STATES)}")
        _validate_count(limit, "limit", MAX_LIST)
        sql = f"SELECT {_ENTRY_COLUMNS} FROM objects WHERE key >= ? AND key > ? AND substr(key, 1, ?) = ?"
        params: list[Any] = [prefix, start_after, len(prefix), prefix]
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        sql += " ORDER BY key LIMIT ?"
        params.append(limit)
        return [_entry(row) for row in self._read(sql, tuple(params))]

    # ----------------------------------------------------------------- upload progress

    def start_upload(self, key: str, block_size: int) -> UploadProgress:
        """Claim a pending object for upload; returns its progress so far.

        The block size is fixed by the first attempt: staged blocks are only reusable at the same
        size, so a later attempt asking for another size gets the recorded one (see `block_size`
        in the result). `reset_progress` drops progress and with it the recorded size.
        """
        _validate_count(block_size, "block size", MAX_BLOCK_BYTES)
        with self._write() as db:
            entry = self._row(db, key)
            if entry.state == "synced":
                raise FailedPrecondition(f"object {show_value(key)} is already synced (etag {entry.etag})")
            if entry.state == "failed":
                raise FailedPrecondition(
                    f"object {show_value(key)} failed ({entry.failure_reason}); requeue it first"
                )
            db.execute(
                "UPDATE objects SET state = 'uploading', attempts = attempts + 1,"
                " block_size = COALESCE(block_size, ?) WHERE key = ?",
                (block_size, key),
            )
            return self._progress(db, key)

    def mark_block_staged(self, key: str, block_id: str, offset_end: int) -> UploadProgress:
        """Record that the block ending at `offset_end` is staged in the region (durably).

        The block's index follows from offset_end and the block size; its id must be
        `block_id_for(sha256, index)`. Blocks may be confirmed out of order (several in flight);
        bytes_confirmed is the contiguous prefix. Confirming a block again (a re-send) is fine.
        """
        validate_block_id(block_id)
        if isinstance(offset_end, bool) or not isinstance(offset_end, int):
            raise InvalidArgument(f"offset_end must be an integer, got {offset_end!r}")
        with self._write() as db:
            entry = self._row(db, key)
            if entry.state != "uploading":
                raise FailedPrecondition(
                    f"object {show_value(key)} is {entry.state}, not uploading; call start_upload first"
                )
            block_size = entry.block_size
            assert block_size is not None  # start_upload sets it
            if not 0 < offset_end <= entry.size or (offset_end % block_size and offset_end != entry.size):
                raise InvalidArgument(
                    f"offset_end {offset_end} of object {show_value(key)} ({entry.size} bytes) is not the end of a "
                    f"{block_size}-byte block"
                )
            index = (offset_end - 1) // block_size
            expected_id = block_id_for(entry.sha256_hex, index)
            if block_id != expected_id:
                raise InvalidArgument(
                    f"block id {block_id!r} is not the id of block {index} of object {show_value(key)}; expected {expected_id!r}"
                )
            db.execute(
                "INSERT OR REPLACE INTO staged_blocks (key, block_index, block_id, offset_end) VALUES (?, ?, ?, ?)",
                (key, index, block_id, offset_end),
            )
            indices = [
                row[0] for row in db.execute("SELECT block_index FROM staged_blocks WHERE key = ?", (key,))
            ]
            contiguous = _contiguous_prefix(indices)
            db.execute(
                "UPDATE objects SET bytes_sent = bytes_sent + ?, bytes_confirmed = ? WHERE key = ?",
                (offset_end - index * block_size, min(contiguous * block_size, entry.size), key),
            )
            return self._progress(db, key)

    def reset_progress(self, key: str) -> UploadProgress:
        """Forget staged blocks and block size (e.g. the region lost its uncommitted blocks)."""
        with self._write() as db:
            entry = self._row(db, key)
            if entry.state == "synced":
                raise FailedPrecondition(f"object {show_value(key)} is already synced")
            db.execute("DELETE FROM staged_blocks WHERE key = ?", (key,))
            db.execute("UPDATE objects SET bytes_confirmed = 0, block_size = NULL WHERE key = ?", (key,))
            return self._progress(db, key)

    def mark_synced(self, key: str, etag: str) -> OutboxEntry:
        """The committed blob was verified: done. Marking a synced object again changes nothing."""
        if not isinstance(etag, str) or not etag:
            raise InvalidArgument("etag must be a non-empty string")
        with self._write() as db:
            entry = self._row(db, key)
            if entry.state == "synced":
                return entry
            db.execute(
                "UPDATE objects SET state = 'synced', synced_unix = ?, etag = ?, failure_reason = NULL,"
                " bytes_confirmed = size WHERE key = ?",
                (float(self._clock()), etag, key),
            )
            db.execute("DELETE FROM staged_blocks WHERE key = ?", (key,))
            return self._row(db, key)

    def mark_failed(self, key: str, reason: str) -> OutboxEntry:
        """A permanent error (retrying will not help): park the object with the reason."""
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidArgument("a failure needs a non-empty reason")
        with self._write() as db:
            entry = self._row(db, key)
            if entry.state == "synced":
                raise FailedPrecondition(f"object {show_value(key)} is already synced; it cannot fail")
            db.execute("UPDATE objects SET state = 'failed', failure_reason = ? WHERE key = ?", (reason, key))
            return self._row(db, key)

    def requeue(self, key: str) -> OutboxEntry:
        """Put a failed object back in the queue, keeping its progress."""
        with self._write() as db:
            entry = self._row(db, key)
            if entry.state not in ("failed", "pending"):
                raise FailedPrecondition(
                    f"object {show_value(key)} is {entry.state}; only failed objects can be requeued"
                )
            db.execute("UPDATE objects SET state = 'pending', failure_reason = NULL WHERE key = ?", (key,))
            return self._row(db, key)


def _contiguous_prefix(indices: list[int]) -> int:
    """How many blocks from index 0 on are all present."""
    present = set(indices)
    count = 0
    while count in present:
        count += 1
    return count

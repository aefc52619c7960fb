"""The data center's object store and outbox on real files and a real SQLite database, kill -9 included."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.crash import child_env, kill_at_every_step, run_child

from skyhaul.mdc.objectstore import ObjectStore
from skyhaul.mdc.outbox import Outbox, block_id_for
from skyhaul.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound


class StepClock:
    """An injected clock that advances one second per reading: ages differ and order by creation."""

    def __init__(self, start: float = 1_600_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def payload(size: int, seed: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def put(store: ObjectStore, key: str, data: bytes, priority: str = "bulk", chunk: int = 64 * 1024, **kwargs):
    handle = store.begin_put(key, priority, **kwargs)
    for start in range(0, len(data), chunk):
        handle.write(data[start : start + chunk])
    return handle.finish()


def files_snapshot(root: Path) -> dict[str, str]:
    """Data files and temp files (the SQLite files are compared through the outbox instead)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("outbox.sqlite3")
    }


def assert_no_garbage(root: Path, store: ObjectStore) -> None:
    """No temp files, and exactly one data file per recorded object."""
    assert list((root / "tmp").iterdir()) == []
    data_files = [p for p in (root / "objects").rglob("*") if p.is_file()]
    assert len(data_files) == store.outbox.totals().objects


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def store(tmp_path: Path, clock: StepClock) -> Iterator[ObjectStore]:
    with ObjectStore(tmp_path / "mdc", clock=clock) as object_store:
        yield object_store


# --------------------------------------------------------------------------- puts


def test_streamed_put_is_stored_and_queued(store: ObjectStore) -> None:
    data = payload(1_000_003, 1)
    stored = put(store, "sensors/lidar/0001.bin", data, "interactive", metadata={"sensor": "lidar"})
    assert stored.key == "sensors/lidar/0001.bin"
    assert stored.size == len(data)
    assert stored.sha256_hex == hashlib.sha256(data).hexdigest()
    assert stored.priority == "interactive"
    assert store.read_range("sensors/lidar/0001.bin", 0, len(data) + 10) == data
    assert store.read_range("sensors/lidar/0001.bin", 999_000, 5) == data[999_000:999_005]
    entry = store.get("sensors/lidar/0001.bin")
    assert entry.state == "pending" and entry.metadata == {"sensor": "lidar"}
    assert entry.created_unix == stored.created_unix
    assert store.outbox.backlog() == (1, len(data), stored.created_unix)
    assert store.used_bytes() == len(data)
    assert_no_garbage(store.root_dir, store)


def test_empty_object(store: ObjectStore) -> None:
    stored = store.begin_put("empty").finish(hashlib.sha256(b"").digest())
    assert stored.size == 0 and store.read_range("empty", 0, 10) == b""


def test_checksum_mismatch_stores_nothing(store: ObjectStore) -> None:
    put(store, "existing", b"keep me")
    before = files_snapshot(store.root_dir)
    handle = store.begin_put("new", "bulk")
    handle.write(b"some data")
    with pytest.raises(InvalidArgument, match="sha256"):
        handle.finish(hashlib.sha256(b"other data").digest())
    with pytest.raises(NotFound):
        store.get("new")
    assert files_snapshot(store.root_dir) == before
    assert [e.key for e in store.outbox.list_entries()] == ["existing"]
    with pytest.raises(FailedPrecondition, match="aborted"):
        handle.write(b"more")


def test_same_key_again_is_a_retry_or_refused_never_a_silent_overwrite(store: ObjectStore) -> None:
    first = put(store, "k", b"original bytes")
    # A client retrying after a lost response: same bytes, same object, one outbox entry.
    assert put(store, "k", b"original bytes") == first
    assert store.outbox.totals().objects == 1
    before = files_snapshot(store.root_dir)
    with pytest.raises(AlreadyExists, match="new key"):
        put(store, "k", b"different bytes")
    assert files_snapshot(store.root_dir) == before
    assert store.read_range("k", 0, 100) == b"original bytes"
    assert_no_garbage(store.root_dir, store)


def test_abort_and_context_manager_leave_nothing(store: ObjectStore) -> None:
    handle = store.begin_put("aborted")
    handle.write(b"x" * 1000)
    handle.abort()
    handle.abort()  # twice is fine
    with pytest.raises(RuntimeError), store.begin_put("crashed-stream") as handle:
        handle.write(b"y" * 1000)
        raise RuntimeError("the client stream broke")
    assert store.outbox.totals().objects == 0
    assert store.used_bytes() == 0
    assert_no_garbage(store.root_dir, store)


@pytest.mark.parametrize(
    "key, message",
    [
        ("", "empty"),
        ("../escape", "'..'"),
        ("a/../../b", "'..'"),
        ("/abs/path", "absolute"),
        ("nul\x00byte", "U\\+0000"),
        ("back\\slash", "backslash"),
        ("x" * 1025, "1024"),
    ],
)
def test_bad_keys_are_refused_before_any_byte(store: ObjectStore, key: str, message: str) -> None:
    put(store, "good", b"data")
    before = files_snapshot(store.root_dir)
    with pytest.raises(InvalidArgument, match=message):
        store.begin_put(key)
    assert files_snapshot(store.root_dir) == before
    assert [e.key for e in store.outbox.list_entries()] == ["good"]


def test_bad_priority_and_metadata_are_refused(store: ObjectStore) -> None:
    with pytest.raises(InvalidArgument, match="telemetry, interactive, bulk"):
        store.begin_put("k", "urgent")
    with pytest.raises(InvalidArgument, match="metadata key"):
        store.begin_put("k", "bulk", {"bad key": "v"})
    assert list((store.root_dir / "tmp").iterdir()) == []


def test_capacity_is_enforced_and_freed_by_deleting_synced_objects(tmp_path: Path) -> None:
    with ObjectStore(tmp_path / "mdc", capacity_bytes=10_000) as store:
        put(store, "a", b"a" * 6000)
        handle = store.begin_put("b")
        handle.write(b"b" * 3000)
        with pytest.raises(FailedPrecondition, match="full"):
            handle.write(b"b" * 2000)
        handle.abort()
        with pytest.raises(FailedPrecondition, match="pending, not synced"):
            store.delete("a")  # unsynced data is never dropped
        store.outbox.mark_synced("a", '"0x1"')
        store.delete("a")
        put(store, "b", b"b" * 9000)
        with pytest.raises(NotFound):
            store.get("a")
        assert_no_garbage(store.root_dir, store)


def test_concurrent_puts(store: ObjectStore) -> None:
    objects = {f"par/{i:02d}": payload(50_000 + i * 1000, i) for i in range(16)}
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda item: put(store, item[0], item[1], chunk=7000), objects.items()))
    assert {r.key: r.sha256_hex for r in results} == {
        k: hashlib.sha256(v).hexdigest() for k, v in objects.items()
    }
    for key, data in objects.items():
        assert store.read_range(key, 0, len(data)) == data
    assert_no_garbage(store.root_dir, store)


def test_a_second_store_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with ObjectStore(tmp_path / "mdc"):
        with pytest.raises(FailedPrecondition, match="in use"):
            ObjectStore(tmp_path / "mdc")


# --------------------------------------------------------------------------- outbox queue and states


def test_next_batch_orders_by_priority_then_age(store: ObjectStore) -> None:
    order_of_puts = [
        ("bulk-old", "bulk"),
        ("tele-old", "telemetry"),
        ("inter-old", "interactive"),
        ("bulk-new", "bulk"),
        ("tele-new", "telemetry"),
        ("inter-new", "interactive"),
    ]
    for key, priority in order_of_puts:
        put(store, key, key.encode(), priority)
    expected = ["tele-old", "tele-new", "inter-old", "inter-new", "bulk-old", "bulk-new"]
    assert [e.key for e in store.outbox.next_batch(10)] == expected
    assert [e.key for e in store.outbox.next_batch(3)] == expected[:3]
    # Objects being uploaded, synced or failed are not handed out again.
    store.outbox.start_upload("tele-old", 4)
    store.outbox.start_upload("inter-old", 4)
    store.outbox.mark_synced("inter-old", '"0xA"')
    store.outbox.start_upload("bulk-old", 4)
    store.outbox.mark_failed("bulk-old", "region refused the name")
    assert [e.key for e in store.outbox.next_batch(10)] == ["tele-new", "inter-new", "bulk-new"]
    with pytest.raises(InvalidArgument, match="limit"):
        store.outbox.next_batch(0)


def test_states_backlog_totals_and_listing(store: ObjectStore, clock: StepClock) -> None:
    sizes = {f"obj/{i}": 100 * (i + 1) for i in range(5)}
    created = {key: put(store, key, b"z" * size).created_unix for key, size in sizes.items()}
    outbox = store.outbox
    assert outbox.backlog() == (5, sum(sizes.values()), created["obj/0"])

    outbox.start_upload("obj/0", 64)
    synced = outbox.mark_synced("obj/0", '"0xE"')
    assert synced.state == "synced" and synced.etag == '"0xE"' and synced.synced_unix > synced.created_unix
    assert outbox.mark_synced("obj/0", '"0xE"') == synced  # again: unchanged
    outbox.start_upload("obj/1", 64)
    failed = outbox.mark_failed("obj/1", "blob name refused by the region")
    assert failed.state == "failed" and failed.failure_reason == "blob name refused by the region"
    outbox.start_upload("obj/2", 64)

    assert outbox.backlog() == (3, 300 + 400 + 500, created["obj/2"])
    totals = outbox.totals()
    assert (totals.objects, totals.pending, totals.uploading, totals.synced, totals.failed) == (5, 2, 1, 1, 1)
    assert totals.bytes == sum(sizes.values()) and totals.synced_bytes == 100

    assert [e.key for e in outbox.list_entries(state="pending")] == ["obj/3", "obj/4"]
    assert [e.key for e in outbox.list_entries(prefix="obj/", limit=2, start_after="obj/1")] == [
        "obj/2",
        "obj/3",
    ]
    assert [e.key for e in outbox.list_entries(prefix="obj/4")] == ["obj/4"]
    assert outbox.list_entries(prefix="nothing") == []

    with pytest.raises(FailedPrecondition, match="requeue"):
        outbox.start_upload("obj/1", 64)
    assert outbox.requeue("obj/1").state == "pending"
    with pytest.raises(FailedPrecondition, match="already synced"):
        outbox.start_upload("obj/0", 64)
    with pytest.raises(FailedPrecondition, match="cannot fail"):
        outbox.mark_failed("obj/0", "late")
    with pytest.raises(InvalidArgument, match="reason"):
        outbox.mark_failed("obj/3", " ")
    with pytest.raises(InvalidArgument, match="state"):
        outbox.list_entries(state="lost")
    with pytest.raises(NotFound, match="ghost"):
        outbox.progress("ghost")


def test_block_ids_are_deterministic_and_of_equal_length() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    ids = [block_id_for(sha, i) for i in (0, 1, 9, 10, 12_345, 99_999_999)]
    assert len(set(ids)) == len(ids)
    assert len({len(i) for i in ids}) == 1
    assert ids[0] == block_id_for(sha, 0)
    assert block_id_for(hashlib.sha256(b"y").hexdigest(), 0) != ids[0]
    assert base64.b64decode(ids[4]).decode().endswith("-00012345")
    with pytest.raises(InvalidArgument):
        block_id_for(sha, -1)


def test_upload_progress_tracks_blocks_and_survives_reopen(tmp_path: Path) -> None:
    root = tmp_path / "mdc"
    data = payload(10_000, 3)
    with ObjectStore(root) as store:
        sha = put(store, "big", data).sha256_hex
        outbox = store.outbox
        progress = outbox.start_upload("big", 3000)
        assert (progress.block_size, progress.block_count, progress.bytes_confirmed) == (3000, 4, 0)
        outbox.mark_block_staged("big", block_id_for(sha, 0), 3000)
        # Out of order (two blocks in flight): block 2 confirmed before block 1.
        progress = outbox.mark_block_staged("big", block_id_for(sha, 2), 9000)
        assert progress.bytes_confirmed == 3000
        progress = outbox.mark_block_staged("big", block_id_for(sha, 1), 6000)
        assert progress.bytes_confirmed == 9000
        progress = outbox.mark_block_staged("big", block_id_for(sha, 1), 6000)  # a re-send
        assert progress.bytes_sent == 12_000
        assert progress.staged_block_ids == tuple(block_id_for(sha, i) for i in range(3))

        with pytest.raises(InvalidArgument, match="not the end of a 3000-byte block"):
            outbox.mark_block_staged("big", block_id_for(sha, 3), 9500)
        with pytest.raises(InvalidArgument, match="expected"):
            outbox.mark_block_staged("big", block_id_for(sha, 0), 10_000)
        assert outbox.progress("big") == progress  # refused marks changed nothing

    with ObjectStore(root) as store:  # a restart: the upload is resumable, not lost
        outbox = store.outbox
        after = outbox.progress("big")
        assert after.state == "pending"  # was uploading when the process went away
        assert after._replace(state="uploading") == progress
        with pytest.raises(FailedPrecondition, match="start_upload"):
            outbox.mark_block_staged("big", block_id_for(sha, 3), 10_000)
        resumed = outbox.start_upload("big", 8192)  # another size asked: the recorded one wins
        assert resumed.block_size == 3000 and resumed.attempts == 2
        assert resumed.bytes_confirmed == 9000
        final = outbox.mark_block_staged("big", block_id_for(sha, 3), 10_000)
        assert final.bytes_confirmed == 10_000
        assert outbox.reset_progress("big").staged_block_ids == ()
        assert outbox.start_upload("big", 8192).block_size == 8192


# --------------------------------------------------------------------------- content type


def test_content_type_is_kept_apart_from_the_metadata(store: ObjectStore, tmp_path: Path) -> None:
    put(store, "typed", b"{}", metadata={"sensor": "gps"}, content_type="application/json")
    put(store, "untyped", b"raw")
    entry = store.get("typed")
    assert entry.content_type == "application/json" and entry.metadata == {"sensor": "gps"}
    assert store.get("untyped").content_type == ""
    before = files_snapshot(store.root_dir)
    for bad in ("text/plain\n", "x" * 257, 7):
        with pytest.raises(InvalidArgument, match="content type"):
            store.begin_put("refused", "bulk", content_type=bad)
    assert files_snapshot(store.root_dir) == before
    assert [e.key for e in store.outbox.list_entries()] == ["typed", "untyped"]


# What schema version 1 of the outbox (before the content_type column) created, verbatim: an
# outbox written by an earlier build must open with nothing lost.
SCHEMA_1 = """
CREATE TABLE objects (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT NOT NULL UNIQUE,
    file_id         TEXT NOT NULL,
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    priority        TEXT NOT NULL,
    priority_rank   INTEGER NOT NULL,
    created_unix    REAL NOT NULL,
    metadata        TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'uploading', 'synced', 'failed')),
    block_size      INTEGER,
    bytes_confirmed INTEGER NOT NULL DEFAULT 0,
    bytes_sent      INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    synced_unix     REAL,
    etag            TEXT,
    failure_reason  TEXT
);
CREATE INDEX objects_queue ON objects (state, priority_rank, created_unix, seq);
CREATE TABLE staged_blocks (
    key         TEXT NOT NULL REFERENCES objects (key) ON DELETE CASCADE,
    block_index INTEGER NOT NULL,
    block_id    TEXT NOT NULL,
    offset_end  INTEGER NOT NULL,
    PRIMARY KEY (key, block_index)
) WITHOUT ROWID;
PRAGMA user_version=1;
"""


def write_schema_1_store(root: Path) -> dict[str, bytes]:
    """An object store as version 1 left it: data files, and an outbox with the content type in the
    metadata, one object half uploaded (uploading, two blocks staged), one synced."""
    objects = {"typed": b"t" * 2500, "plain": b"p" * 10, "done": b"d" * 4}
    (root / "tmp").mkdir(parents=True)
    db = sqlite3.connect(root / "outbox.sqlite3")
    db.executescript(SCHEMA_1)
    rows = [
        (
            "typed",
            "uploading",
            {"sensor": "lidar", "skyhaul_content_type": "application/x-lidar"},
            1000,
            2000,
        ),
        ("plain", "pending", {"n": "1"}, None, 0),
        ("done", "synced", {"skyhaul_content_type": "text/plain"}, 4, 4),
    ]
    for rank, (key, state, metadata, block_size, confirmed) in enumerate(rows):
        file_id = f"{rank:02d}" + "f" * 30
        data_file = root / "objects" / file_id[:2] / file_id
        data_file.parent.mkdir(parents=True)
        data_file.write_bytes(objects[key])
        db.execute(
            "INSERT INTO objects (key, file_id, size, sha256, priority, priority_rank, created_unix, metadata,"
            " state, block_size, bytes_confirmed, bytes_sent, attempts, etag) VALUES"
            " (?, ?, ?, ?, 'bulk', 2, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                file_id,
                len(objects[key]),
                hashlib.sha256(objects[key]).hexdigest(),
                1_600_000_000.0 + rank,
                json.dumps(metadata, sort_keys=True),
                state,
                block_size,
                confirmed,
                confirmed,
                1 if block_size else 0,
                '"0xD"' if state == "synced" else None,
            ),
        )
    sha = hashlib.sha256(objects["typed"]).hexdigest()
    for index in range(2):
        db.execute(
            "INSERT INTO staged_blocks VALUES (?, ?, ?, ?)",
            ("typed", index, block_id_for(sha, index), (index + 1) * 1000),
        )
    db.commit()
    db.close()
    return objects


def test_an_outbox_of_schema_1_moves_content_types_into_their_column(tmp_path: Path) -> None:
    root = tmp_path / "mdc"
    objects = write_schema_1_store(root)
    with ObjectStore(root) as store:
        typed = store.get("typed")
        assert typed.content_type == "application/x-lidar" and typed.metadata == {"sensor": "lidar"}
        assert store.get("plain").content_type == "" and store.get("plain").metadata == {"n": "1"}
        done = store.get("done")
        assert (done.state, done.etag, done.content_type, done.metadata) == (
            "synced",
            '"0xD"',
            "text/plain",
            {},
        )
        # Upload progress survives: the half-uploaded object resumes from its third block.
        progress = store.outbox.progress("typed")
        assert progress.state == "pending" and progress.bytes_confirmed == 2000
        assert progress.staged_block_ids == tuple(block_id_for(typed.sha256_hex, i) for i in range(2))
        for key, data in objects.items():
            assert store.read_range(key, 0, len(data) + 1) == data
        put(store, "new", b"after the migration", content_type="text/plain")
    with sqlite3.connect(root / "outbox.sqlite3") as db:
        # Migrated all the way: 2 moved the content type, 3 added `released`, 4 `traceparent`.
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
        assert db.execute("SELECT COUNT(*) FROM released").fetchone() == (0,)
        assert db.execute(
            "SELECT COUNT(*) FROM objects WHERE metadata LIKE '%skyhaul_content_type%'"
        ).fetchone() == (0,)
    with ObjectStore(root) as store:  # opening a migrated outbox again changes nothing
        assert store.get("typed").content_type == "application/x-lidar"
        assert store.get("new").content_type == "text/plain"
        assert store.outbox.totals().objects == 4


# Schema version 2, verbatim: version 1 plus the content_type column.
SCHEMA_2 = SCHEMA_1.replace(
    "    metadata        TEXT NOT NULL,\n",
    "    metadata        TEXT NOT NULL,\n    content_type    TEXT NOT NULL DEFAULT '',\n",
).replace("PRAGMA user_version=1;", "PRAGMA user_version=2;")


def test_an_outbox_of_schema_2_gets_an_empty_traceparent_and_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "mdc"
    (root / "tmp").mkdir(parents=True)
    data = b"queued before the upgrade"
    file_id = "ab" + "c" * 30
    (root / "objects" / "ab").mkdir(parents=True)
    (root / "objects" / "ab" / file_id).write_bytes(data)
    db = sqlite3.connect(root / "outbox.sqlite3")
    db.executescript(SCHEMA_2)
    db.execute(
        "INSERT INTO objects (key, file_id, size, sha256, priority, priority_rank, created_unix, metadata,"
        " content_type, state) VALUES ('old', ?, ?, ?, 'telemetry', 0, 1.6e9, '{\"n\": \"1\"}', 'text/plain',"
        " 'pending')",
        (file_id, len(data), hashlib.sha256(data).hexdigest()),
    )
    db.commit()
    db.close()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with ObjectStore(root) as store:
        old = store.get("old")
        assert (old.traceparent, old.content_type, old.metadata, old.state) == (
            "",
            "text/plain",
            {"n": "1"},
            "pending",
        )
        assert store.read_range("old", 0, 100) == data
        handle = store.begin_put("new", "bulk", traceparent=traceparent)
        handle.write(b"after the upgrade")
        handle.finish()
        with pytest.raises(InvalidArgument, match="traceparent"):
            store.outbox.add("junk", "f" * 32, 1, "0" * 64, "bulk", None, 1.0, traceparent="x" * 500)
    with sqlite3.connect(root / "outbox.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
    with ObjectStore(root) as store:  # kept across a restart, and the queue order is unchanged
        assert store.get("new").traceparent == traceparent
        assert [e.key for e in store.outbox.next_batch(10)] == ["old", "new"]


def test_an_outbox_of_an_unknown_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE objects (key TEXT)")
        db.execute("INSERT INTO objects VALUES ('kept')")
        db.execute("PRAGMA user_version=9")
    with pytest.raises(FailedPrecondition, match="schema version 9"):
        Outbox(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 9
        assert db.execute("SELECT sql FROM sqlite_master").fetchall() == [
            ("CREATE TABLE objects (key TEXT)",)
        ]
        assert db.execute("SELECT key FROM objects").fetchall() == [("kept",)]


# --------------------------------------------------------------------------- kill -9

# The child kills itself mid-write, or just before file-system call number CRASH_AT of finishing
# the put (see support.crash).
CRASHING_PUT = r"""
import os, signal, sys
from skyhaul.mdc.objectstore import ObjectStore
from support.crash import crash_before_call

root, key, crash_at, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = ObjectStore(root)
handle = store.begin_put(key, "telemetry")
for i in range(20):
    handle.write(bytes([i]) * 50_000)
if mode == "mid-write":
    os.kill(os.getpid(), signal.SIGKILL)
counter = crash_before_call(crash_at)
handle.finish()
print(counter.calls)
"""
CRASHED_PUT_DATA = b"".join(bytes([i]) * 50_000 for i in range(20))


def run_crashing_put(root: Path, crash_at: int, mode: str) -> subprocess.CompletedProcess:
    return run_child(CRASHING_PUT, str(root), "victim", str(crash_at), mode)


def test_kill_9_while_streaming_a_put_leaves_no_record_and_no_garbage(tmp_path: Path) -> None:
    root = tmp_path / "mdc"
    with ObjectStore(root) as store:
        put(store, "earlier", b"acknowledged before the crash")
    result = run_crashing_put(root, 0, "mid-write")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert len(list((root / "tmp").iterdir())) == 1  # the partial object the child was writing
    with ObjectStore(root) as store:
        with pytest.raises(NotFound):
            store.get("victim")
        assert store.read_range("earlier", 0, 100) == b"acknowledged before the crash"
        assert store.outbox.backlog().objects == 1
        assert_no_garbage(root, store)


def test_kill_9_at_every_step_of_finishing_a_put_is_all_or_nothing(tmp_path: Path) -> None:
    template = tmp_path / "template"
    ObjectStore(template).close()
    outcomes = set()
    for _, root in kill_at_every_step(
        template, tmp_path, lambda root, crash_at: run_crashing_put(root, crash_at, "finish"), min_steps=3
    ):
        with ObjectStore(root) as store:
            entries = store.outbox.list_entries()
            if entries:
                outcomes.add("stored")
                (entry,) = entries
                assert entry.sha256_hex == hashlib.sha256(CRASHED_PUT_DATA).hexdigest()
                assert store.read_range("victim", 0, len(CRASHED_PUT_DATA) + 1) == CRASHED_PUT_DATA
            else:
                outcomes.add("nothing")
            assert_no_garbage(root, store)
    assert "nothing" in outcomes


# The child puts objects forever, printing each key once finish() returned; the parent kills it
# at an arbitrary moment. Every acknowledged object must be there, whole.
PUT_FOREVER = r"""
import hashlib, sys
from skyhaul.mdc.objectstore import ObjectStore

store = ObjectStore(sys.argv[1])
i = 0
while True:
    data = hashlib.sha256(str(i).encode()).digest() * (1000 + 37 * i)
    handle = store.begin_put(f"obj/{i:05d}", ("telemetry", "interactive", "bulk")[i % 3])
    for start in range(0, len(data), 8192):
        handle.write(data[start:start + 8192])
    handle.finish()
    print(f"obj/{i:05d}", flush=True)
    i += 1
"""


def test_kill_9_during_a_stream_of_puts_loses_nothing_acknowledged(tmp_path: Path) -> None:
    root = tmp_path / "mdc"
    child = subprocess.Popen(
        [sys.executable, "-c", PUT_FOREVER, str(root)], env=child_env(), stdout=subprocess.PIPE, text=True
    )
    acknowledged = []
    try:
        assert child.stdout is not None
        while len(acknowledged) < 25:
            line = child.stdout.readline()
            assert line, "the child died before acknowledging 25 objects"
            acknowledged.append(line.strip())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with ObjectStore(root) as store:
        recorded = {e.key: e for e in store.outbox.list_entries(limit=10_000)}
        assert set(acknowledged) <= set(recorded)
        # Puts are sequential: the recorded ones are a gap-free prefix (the child may have got further).
        assert sorted(recorded) == [f"obj/{i:05d}" for i in range(len(recorded))]
        for key, entry in recorded.items():
            i = int(key.split("/")[1])
            data = hashlib.sha256(str(i).encode()).digest() * (1000 + 37 * i)
            assert entry.sha256_hex == hashlib.sha256(data).hexdigest()
            assert store.read_range(key, 0, len(data) + 1) == data
        assert_no_garbage(root, store)


PROGRESS_FOREVER = r"""
import sys
from skyhaul.mdc.objectstore import ObjectStore
from skyhaul.mdc.outbox import block_id_for

store = ObjectStore(sys.argv[1])
progress = store.outbox.start_upload("big", 1000)
size = progress.size
for index in range(progress.block_count):
    store.outbox.mark_block_staged("big", block_id_for(progress.sha256_hex, index), min(size, (index + 1) * 1000))
    print(index, flush=True)
import time
time.sleep(60)
"""


def test_kill_9_during_upload_keeps_every_confirmed_block(tmp_path: Path) -> None:
    root = tmp_path / "mdc"
    with ObjectStore(root) as store:
        put(store, "big", payload(400_500, 5))
    child = subprocess.Popen(
        [sys.executable, "-c", PROGRESS_FOREVER, str(root)],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    confirmed = -1
    try:
        assert child.stdout is not None
        while confirmed < 150:
            line = child.stdout.readline()
            assert line, "the child died before confirming 150 blocks"
            confirmed = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    with ObjectStore(root) as store:
        progress = store.outbox.progress("big")
        assert progress.state == "pending"
        assert progress.block_size == 1000
        # Every block confirmed before the kill is still confirmed; at most those in flight were added.
        assert progress.bytes_confirmed >= (confirmed + 1) * 1000
        staged_bytes = min(len(progress.staged_block_ids) * 1000, progress.size)
        assert staged_bytes == progress.bytes_confirmed == progress.bytes_sent
        resumed = store.outbox.start_upload("big", 1000)
        assert resumed.bytes_confirmed == progress.bytes_confirmed


def test_outbox_uses_wal_and_full_sync(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    try:
        # WAL is a property of the file: another connection sees it.
        other = sqlite3.connect(tmp_path / "outbox.sqlite3")
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()
        # synchronous is per connection: ask the outbox's own.
        with outbox._lock:
            assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        outbox.close()

"""Deleting objects and the retention policy on a real object store: synced objects leave the disk
oldest-synced first, an unsynced one never does; deletes of unsynced objects need force; a full
disk is RESOURCE_EXHAUSTED and leaves nothing behind (through a test seam: the real full disk is in
tests/integration/test_mdc_retention.py)."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

from skyhaul.mdc.objectstore import ObjectStore
from skyhaul.mdc.retention import (
    MISSING,
    PRESENT,
    UNKNOWN,
    RetentionPolicy,
    apply_retention,
    reconcile_interval,
)
from skyhaul.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from skyhaul.runtime.scenario import RetentionSpec, ScenarioError, parse_scenario


class ManualClock:
    def __init__(self, now: float = 1_600_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def put(store: ObjectStore, key: str, data: bytes) -> None:
    handle = store.begin_put(key)
    handle.write(data)
    handle.finish()


def sync(store: ObjectStore, key: str) -> None:
    """What the sync worker records once the region verified the commit."""
    store.outbox.mark_synced(key, f'"0x{hashlib.sha256(key.encode()).hexdigest()[:8]}"')


def keys(store: ObjectStore) -> list[str]:
    return [entry.key for entry in store.outbox.list_entries()]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock):
    with ObjectStore(tmp_path / "mdc", clock=clock) as store:
        yield store


def test_delete_of_a_synced_object_frees_its_bytes_and_remembers_it_for_reconciliation(store, clock) -> None:
    put(store, "a", b"x" * 1000)
    sync(store, "a")
    entry = store.delete("a")
    assert entry.state == "synced" and keys(store) == [] and store.used_bytes() == 0
    with pytest.raises(NotFound):
        store.get("a")
    [released] = store.outbox.released_entries()
    assert (released.key, released.size, released.reason, released.lost_unix) == ("a", 1000, "deleted", None)
    assert not [path for path in (store.root_dir / "objects").rglob("*") if path.is_file()]  # bytes gone
    # Putting the key again supersedes the released record.
    put(store, "a", b"new bytes")
    assert store.outbox.released_entries() == []


def test_delete_of_an_unsynced_object_is_refused_unless_forced(store) -> None:
    put(store, "pending", b"only copy")
    with pytest.raises(FailedPrecondition, match="force"):
        store.delete("pending")
    assert keys(store) == ["pending"] and store.read_range("pending", 0, 100) == b"only copy"
    entry = store.delete("pending", force=True)
    assert entry.state == "pending" and keys(store) == [] and store.used_bytes() == 0
    assert store.outbox.released_entries() == []  # nothing in the region to check


def test_max_bytes_evicts_the_oldest_synced_first_and_never_an_unsynced_one(store, clock) -> None:
    for i in range(6):
        clock.now += 10
        put(store, f"obj/{i}", bytes(1000))
    # Synced in another order than created: eviction follows the sync time.
    for i in (3, 0, 4, 1):
        clock.now += 10
        sync(store, f"obj/{i}")
    released, freed = apply_retention(store, RetentionPolicy(max_bytes=3500), clock())
    assert (released, freed) == (3, 3000)
    assert keys(store) == ["obj/1", "obj/2", "obj/5"]  # 3, 0, 4 went, in that order; 2 and 5 never synced
    assert [r.key for r in store.outbox.released_entries()] == ["obj/0", "obj/3", "obj/4"]
    # A limit below what the unsynced objects alone take: every synced one goes, no unsynced one.
    assert apply_retention(store, RetentionPolicy(max_bytes=1), clock()) == (1, 1000)
    assert keys(store) == ["obj/2", "obj/5"]
    assert {store.get(k).state for k in keys(store)} == {"pending"}
    assert apply_retention(store, RetentionPolicy(max_bytes=1), clock()) == (0, 0)


def test_max_age_counts_from_the_sync_and_spares_unsynced_objects(store, clock) -> None:
    put(store, "old-synced", b"a")
    put(store, "old-pending", b"b")
    clock.now += 1
    sync(store, "old-synced")
    clock.now += 100
    put(store, "new", b"c")
    sync(store, "new")
    clock.now += 50  # old-synced synced 150 s ago, new 50 s ago
    assert apply_retention(store, RetentionPolicy(max_age_s=120), clock()) == (1, 1)
    assert keys(store) == ["new", "old-pending"]
    clock.now += 10_000
    assert apply_retention(store, RetentionPolicy(max_age_s=120), clock()) == (1, 1)
    assert keys(store) == ["old-pending"]


def test_a_synced_object_the_region_lost_is_requeued_with_its_bytes(store) -> None:
    put(store, "k", b"payload")
    sync(store, "k")
    sha = store.get("k").sha256_hex
    assert store.outbox.requeue_lost_in_region("k", "0" * 64, "stale") is None  # other bytes: untouched
    entry = store.outbox.requeue_lost_in_region("k", sha, "the region no longer holds it")
    assert (entry.state, entry.synced_unix, entry.etag, entry.bytes_confirmed) == ("pending", None, None, 0)
    assert "no longer" in entry.failure_reason
    assert store.read_range("k", 0, 100) == b"payload"
    # Retention never takes it while it is not synced again.
    assert apply_retention(store, RetentionPolicy(max_bytes=1), 1e12) == (0, 0)


def test_a_full_disk_is_resource_exhausted_and_keeps_nothing(store, monkeypatch) -> None:
    put(store, "before", b"kept")
    handle = store.begin_put("big")

    def no_space(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("skyhaul.mdc.objectstore.os.fsync", no_space)
    handle.write(b"y" * 5000)
    with pytest.raises(ResourceExhausted, match="skyhaul rm") as refused:
        handle.finish()
    assert "big" in str(refused.value) and "disk is full" in str(refused.value)
    monkeypatch.undo()
    state = store.state()
    assert state.full and "full" in state.message
    assert keys(store) == ["before"] and list((store.root_dir / "tmp").iterdir()) == []
    put(store, "after", b"fits again")
    assert not store.state().full


def test_policy_from_the_scenario_and_the_environment() -> None:
    spec = RetentionSpec(max_age_s=3600.0, max_bytes=None)
    assert RetentionPolicy.from_spec(spec, {}) == RetentionPolicy(3600.0, None)
    assert RetentionPolicy.from_spec(spec, {"SKYHAUL_RETENTION_MAX_BYTES": "5000"}) == RetentionPolicy(
        3600.0, 5000
    )
    assert RetentionPolicy.from_spec(spec, {"SKYHAUL_RETENTION_MAX_AGE_S": "0"}) == RetentionPolicy(
        None, None
    )
    assert not RetentionPolicy().active
    for bad in ("-5", "soon", "nan"):
        with pytest.raises(InvalidArgument, match="SKYHAUL_RETENTION_MAX_AGE_S"):
            RetentionPolicy.from_spec(spec, {"SKYHAUL_RETENTION_MAX_AGE_S": bad})
    assert (
        reconcile_interval({}) == 300.0 and reconcile_interval({"SKYHAUL_RECONCILE_INTERVAL_S": "0"}) == 0.0
    )
    with pytest.raises(InvalidArgument):
        reconcile_interval({"SKYHAUL_RECONCILE_INTERVAL_S": "-1"})


def _scenario(retention) -> dict:
    return {
        "name": "r",
        "epoch": "2020-10-30T00:00:00Z",
        "constellation": {"preset": "o3b-meo"},
        "regions": [{"id": "westus2"}],
        "data_centers": [
            {"id": "dc", "home_region": "westus2", "location": {"lat": 0, "lon": 0}, "retention": retention}
        ],
    }


def test_the_scenario_takes_a_retention_policy_and_refuses_a_bad_one() -> None:
    scenario = parse_scenario(_scenario({"max_age_s": 86400, "max_bytes": 10**9}))
    assert scenario.data_centers[0].retention == RetentionSpec(86400.0, 10**9)
    assert parse_scenario(_scenario({})).data_centers[0].retention == RetentionSpec()
    for bad, words in (
        ({"max_age_s": 0}, "max_age_s"),
        ({"max_bytes": -1}, "max_bytes"),
        ({"keep": 1}, "keep"),
    ):
        with pytest.raises(ScenarioError, match=words):
            parse_scenario(_scenario(bad))


def test_retention_asks_the_region_first_and_keeps_what_it_lost(store, clock) -> None:
    for key in ("gone", "there", "unasked"):
        put(store, key, key.encode())
        clock.now += 1
        sync(store, key)
    verdicts = {"gone": MISSING, "there": PRESENT, "unasked": UNKNOWN}
    asked = []

    def verify(entry):
        asked.append(entry.key)
        return verdicts[entry.key]

    assert apply_retention(store, RetentionPolicy(max_bytes=1), clock(), verify) == (
        2,
        len("there") + len("unasked"),
    )
    assert asked == ["gone", "there", "unasked"]  # oldest synced first
    # The region lost "gone" while its bytes were still here: queued again, not released.
    assert keys(store) == ["gone"] and store.get("gone").state == "pending"
    assert store.read_range("gone", 0, 10) == b"gone"

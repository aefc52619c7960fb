"""The region's block-blob store on real files: semantics, durability across restarts, kill -9, bad input."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.crash import kill_at_every_step, run_child

from skyhaul.region.blobstore import BlobStore
from skyhaul.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every path under root with a digest of its content: equal snapshots mean nothing changed."""
    snapshot = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        snapshot[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return snapshot


def payload(size: int, seed: int) -> bytes:
    """Deterministic bytes that differ between seeds (so swapped or repeated blocks would show)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def read_all(store: BlobStore, container: str, blob: str, **kwargs: int) -> bytes:
    return b"".join(store.get_blob(container, blob, **kwargs))


@pytest.fixture
def store(tmp_path: Path):
    with BlobStore(tmp_path / "region") as blob_store:
        blob_store.create_container("data")
        yield blob_store


def stage_all(store: BlobStore, blob: str, blocks: dict[str, bytes], container: str = "data") -> None:
    for block_id, data in blocks.items():
        store.stage_block(container, blob, block_id, data)


# --------------------------------------------------------------------------- round trips


def test_stage_commit_get_roundtrip_with_ranges(store: BlobStore) -> None:
    blocks = {"YmxrMDA=": payload(70_000, 1), "YmxrMDE=": payload(5, 2), "YmxrMDI=": payload(130_001, 3)}
    for block_id, data in blocks.items():
        size = store.stage_block(
            "data", "sensors/2020/10/30.bin", block_id, data, sha256=hashlib.sha256(data).digest()
        )
        assert size == len(data)
    whole = b"".join(blocks.values())
    props = store.commit_block_list(
        "data",
        "sensors/2020/10/30.bin",
        list(blocks),
        expected_sha256=hashlib.sha256(whole).digest(),
        metadata={"site": "prudhoe"},
        content_type="application/octet-stream",
    )
    assert props.size == len(whole)
    assert props.sha256_hex == hashlib.sha256(whole).hexdigest()
    assert props.block_count == 3
    assert props.metadata == {"site": "prudhoe"}
    assert props.content_type == "application/octet-stream"
    assert store.get_properties("data", "sensors/2020/10/30.bin") == props

    assert read_all(store, "data", "sensors/2020/10/30.bin") == whole
    # Small chunks: the stream is split but whole.
    chunks = list(store.get_blob("data", "sensors/2020/10/30.bin", chunk_size=4096))
    assert max(len(c) for c in chunks) <= 4096 and b"".join(chunks) == whole
    for offset, length in [(0, 1), (69_999, 7), (70_004, 1000), (len(whole) - 3, 3), (12_345, None)]:
        end = None if length is None else offset + length
        assert (
            read_all(store, "data", "sensors/2020/10/30.bin", offset=offset, length=length)
            == whole[offset:end]
        )
    # A range past the end is cut at the end; an offset at the end gives nothing; beyond it is an error.
    assert read_all(store, "data", "sensors/2020/10/30.bin", offset=len(whole) - 2, length=100) == whole[-2:]
    assert read_all(store, "data", "sensors/2020/10/30.bin", offset=len(whole)) == b""
    with pytest.raises(InvalidArgument, match="beyond the end"):
        store.get_blob("data", "sensors/2020/10/30.bin", offset=len(whole) + 1)
    with pytest.raises(InvalidArgument, match="offset"):
        store.get_blob("data", "sensors/2020/10/30.bin", offset=-1)

    committed, uncommitted = store.get_block_list("data", "sensors/2020/10/30.bin")
    assert committed == [(block_id, len(data)) for block_id, data in blocks.items()]
    assert uncommitted == []


def test_empty_block_list_makes_an_empty_blob(store: BlobStore) -> None:
    props = store.commit_block_list("data", "empty", [])
    assert props.size == 0 and props.sha256_hex == hashlib.sha256(b"").hexdigest()
    assert read_all(store, "data", "empty") == b""


def test_restaging_a_block_replaces_it(store: BlobStore) -> None:
    store.stage_block("data", "b", "AAAA", b"first version")
    store.stage_block("data", "b", "AAAA", b"second")
    assert store.get_block_list("data", "b") == ([], [("AAAA", 6)])
    store.commit_block_list("data", "b", ["AAAA"])
    assert read_all(store, "data", "b") == b"second"


def test_commit_discards_uncommitted_blocks_and_can_reuse_committed_ones(store: BlobStore) -> None:
    stage_all(store, "log", {"QQ==": b"alpha-", "Qg==": b"beta-", "Qw==": b"unused"})
    store.commit_block_list("data", "log", ["QQ==", "Qg=="])
    assert store.get_block_list("data", "log") == ([("QQ==", 6), ("Qg==", 5)], [])
    # Append: the first two ids now come from the committed blob, the third is freshly staged.
    store.stage_block("data", "log", "RA==", b"delta")
    props = store.commit_block_list("data", "log", ["QQ==", "Qg==", "RA==", "QQ=="])
    assert read_all(store, "data", "log") == b"alpha-beta-deltaalpha-"
    assert props.block_count == 4
    with pytest.raises(InvalidArgument, match="'Qw=='"):
        store.commit_block_list("data", "log", ["Qw=="])  # discarded by the first commit


def test_staged_blocks_and_committed_blobs_survive_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "region"
    with BlobStore(root) as first:
        first.create_container("data")
        stage_all(first, "done", {"MDA=": b"committed "})
        committed = first.commit_block_list("data", "done", ["MDA="], metadata={"k": "v"})
        stage_all(first, "half", {"MDA=": payload(1000, 1), "MDE=": payload(2000, 2)})
    with BlobStore(root) as second:
        assert second.list_containers() == ["data"]
        assert second.get_properties("data", "done") == committed
        assert read_all(second, "data", "done") == b"committed "
        assert second.get_block_list("data", "half") == ([], [("MDA=", 1000), ("MDE=", 2000)])
        assert [p.name for p in second.list_blobs("data")] == ["done"]  # uncommitted blobs are not listed
        second.stage_block("data", "half", "MDI=", b"tail")
        props = second.commit_block_list("data", "half", ["MDA=", "MDE=", "MDI="])
    with BlobStore(root) as third:
        assert third.get_properties("data", "half") == props
        assert read_all(third, "data", "half") == payload(1000, 1) + payload(2000, 2) + b"tail"
        assert third.get_block_list("data", "half")[1] == []


def test_commit_is_idempotent(store: BlobStore) -> None:
    blocks = {"YQ==": payload(3000, 1), "Yg==": payload(100, 2)}
    stage_all(store, "obj", blocks)
    whole = b"".join(blocks.values())
    first = store.commit_block_list(
        "data", "obj", list(blocks), hashlib.sha256(whole).digest(), {"m": "1"}, "text/plain"
    )
    # The response was lost; the client retries the same commit (its blocks are consumed by now).
    again = store.commit_block_list(
        "data", "obj", list(blocks), hashlib.sha256(whole).digest(), {"m": "1"}, "text/plain"
    )
    assert again == first
    # A resuming uploader may have re-staged identical blocks before retrying: still the same version.
    stage_all(store, "obj", blocks)
    assert store.commit_block_list("data", "obj", list(blocks), None, {"m": "1"}, "text/plain") == first
    assert store.get_block_list("data", "obj")[1] == []
    assert read_all(store, "data", "obj") == whole
    # A real change (other metadata) is a new version with a new etag.
    changed = store.commit_block_list("data", "obj", list(blocks), None, {"m": "2"}, "text/plain")
    assert changed.etag != first.etag and changed.sha256_hex == first.sha256_hex


def test_list_blobs_prefix_and_paging(store: BlobStore) -> None:
    names = [f"day-{d}/obj-{i:03d}" for d in (1, 2) for i in range(7)] + ["day-10/x", "other"]
    for name in names:
        store.stage_block("data", name, "AA==", name.encode())
        store.commit_block_list("data", name, ["AA=="])
    assert [p.name for p in store.list_blobs("data")] == sorted(names)
    assert [p.name for p in store.list_blobs("data", prefix="day-1/")] == [
        f"day-1/obj-{i:03d}" for i in range(7)
    ]
    pages: list[str] = []
    start_after = ""
    while True:
        page = store.list_blobs("data", prefix="day-", start_after=start_after, max_results=4)
        if not page:
            break
        assert len(page) <= 4
        pages += [p.name for p in page]
        start_after = page[-1].name
    assert pages == sorted(n for n in names if n.startswith("day-"))
    assert all(p.size == len(p.name) for p in store.list_blobs("data"))
    with pytest.raises(InvalidArgument, match="max_results"):
        store.list_blobs("data", max_results=0)


def test_delete_blob_and_containers(store: BlobStore) -> None:
    assert store.create_container("data") is False  # exist_ok by default
    with pytest.raises(AlreadyExists):
        store.create_container("data", exist_ok=False)
    store.create_container("scratch")
    assert store.list_containers() == ["data", "scratch"]

    stage_all(store, "keep", {"AA==": b"x"})
    store.commit_block_list("data", "keep", ["AA=="])
    with pytest.raises(FailedPrecondition, match="still holds 1 blob"):
        store.delete_container("data")
    assert read_all(store, "data", "keep") == b"x"

    store.delete_blob("data", "keep")
    with pytest.raises(NotFound):
        store.get_properties("data", "keep")
    with pytest.raises(NotFound):
        store.delete_blob("data", "keep")
    assert store.list_blobs("data") == []

    # Uncommitted blocks alone: delete_blob drops them; a container with only those may be deleted.
    store.stage_block("scratch", "tmp", "AA==", b"y")
    store.delete_container("scratch")
    assert store.list_containers() == ["data"]
    with pytest.raises(NotFound, match="scratch"):
        store.stage_block("scratch", "tmp", "AA==", b"y")
    with pytest.raises(NotFound, match="nope"):
        store.list_blobs("nope")
    assert not (store.root_dir / "containers" / "scratch").exists()


def test_a_blob_being_read_stays_whole_while_it_is_replaced(store: BlobStore) -> None:
    stage_all(store, "b", {"AA==": payload(50_000, 1)})
    store.commit_block_list("data", "b", ["AA=="])
    reader = store.get_blob("data", "b", chunk_size=1000)
    first_chunk = next(reader)
    stage_all(store, "b", {"AA==": payload(50_000, 2)})
    store.commit_block_list("data", "b", ["AA=="])
    assert first_chunk + b"".join(reader) == payload(50_000, 1)
    assert read_all(store, "data", "b") == payload(50_000, 2)


def test_concurrent_stage_and_commit_from_a_thread_pool(store: BlobStore) -> None:
    blobs = {
        f"par/{n}": {f"{n}{i:03d}": payload(20_000 + i, n * 100 + i) for i in range(24)} for n in range(3)
    }

    def stage(job: tuple[str, str, bytes]) -> None:
        store.stage_block("data", *job)

    jobs = [(blob, block_id, data) for blob, blocks in blobs.items() for block_id, data in blocks.items()]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(stage, jobs))
        commits = [
            pool.submit(store.commit_block_list, "data", blob, list(blocks)) for blob, blocks in blobs.items()
        ]
        results = [c.result() for c in commits]
    for props, (blob, blocks) in zip(results, blobs.items(), strict=True):
        assert read_all(store, "data", blob) == b"".join(blocks.values())
        assert props.sha256_hex == hashlib.sha256(b"".join(blocks.values())).hexdigest()


def test_a_second_store_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with BlobStore(tmp_path / "r"):
        with pytest.raises(FailedPrecondition, match="in use"):
            BlobStore(tmp_path / "r")
    BlobStore(tmp_path / "r").close()  # free again once the first is closed


# --------------------------------------------------------------------------- bad input changes nothing


def test_checksum_mismatch_on_stage_is_refused_and_stores_nothing(store: BlobStore) -> None:
    store.stage_block("data", "b", "AA==", b"good")
    before = tree_snapshot(store.root_dir)
    data = b"payload"
    with pytest.raises(InvalidArgument, match="md5"):
        store.stage_block("data", "b", "AQ==", data, md5=hashlib.md5(b"other").digest())
    with pytest.raises(InvalidArgument, match="sha256"):
        store.stage_block("data", "b", "AQ==", data, sha256=hashlib.sha256(b"other").digest())
    with pytest.raises(InvalidArgument, match="sha256"):
        store.stage_block("data", "b", "AA==", data, sha256=hashlib.sha256(b"other").digest())  # no replace
    with pytest.raises(InvalidArgument, match="32 raw bytes"):
        store.stage_block("data", "b", "AQ==", data, sha256=b"short")
    assert tree_snapshot(store.root_dir) == before
    assert store.get_block_list("data", "b") == ([], [("AA==", 4)])
    # Both checksums right: accepted.
    store.stage_block(
        "data", "b", "AQ==", data, md5=hashlib.md5(data).digest(), sha256=hashlib.sha256(data).digest()
    )


def test_commit_with_wrong_expected_sha256_changes_nothing(store: BlobStore) -> None:
    stage_all(store, "b", {"AA==": b"one"})
    old = store.commit_block_list("data", "b", ["AA=="])
    stage_all(store, "b", {"AQ==": b"two"})
    before = tree_snapshot(store.root_dir)
    with pytest.raises(InvalidArgument, match="sha256"):
        store.commit_block_list("data", "b", ["AQ=="], expected_sha256=hashlib.sha256(b"three").digest())
    # The no-op path (same list as committed) checks the expectation too.
    with pytest.raises(InvalidArgument, match="sha256"):
        store.commit_block_list("data", "b", ["AA=="], expected_sha256=hashlib.sha256(b"three").digest())
    assert tree_snapshot(store.root_dir) == before
    assert store.get_properties("data", "b") == old
    assert store.get_block_list("data", "b") == (
        [("AA==", 3)],
        [("AQ==", 3)],
    )  # staged block kept for a retry


def test_block_list_naming_an_unknown_block_changes_nothing(store: BlobStore) -> None:
    stage_all(store, "b", {"AA==": b"committed"})
    old = store.commit_block_list("data", "b", ["AA=="])
    stage_all(store, "b", {"AQ==": b"staged"})
    before = tree_snapshot(store.root_dir)
    with pytest.raises(InvalidArgument, match="'Ag=='") as excinfo:
        store.commit_block_list("data", "b", ["AA==", "AQ==", "Ag=="])
    assert "'AQ=='" not in str(excinfo.value)  # names only the missing id
    with pytest.raises(InvalidArgument, match="'Zm9v'"):
        store.commit_block_list("data", "never-staged", ["Zm9v"])
    assert tree_snapshot(store.root_dir) == before
    assert store.get_properties("data", "b") == old
    assert store.get_block_list("data", "b") == ([("AA==", 9)], [("AQ==", 6)])


BAD_CONTAINERS = [
    ("", "empty"),
    ("ab", "3-63"),
    ("x" * 64, "3-63"),
    ("Data", "lowercase"),
    ("da--ta", "single hyphens"),
    ("-data", "single hyphens"),
    ("data-", "single hyphens"),
    ("da/ta", "lowercase"),
    ("..", "3-63"),
    ("../data", "lowercase"),
]
BAD_BLOBS = [
    ("", "empty"),
    ("../escape", "'..'"),
    ("a/../../b", "'..'"),
    ("..", "'..'"),
    ("/etc/passwd", "absolute"),
    ("a\x00b", "U\\+0000"),
    ("line\nbreak", "U\\+000A"),
    ("dir\\file", "backslash"),
    ("x" * 1025, "1024"),
]
BAD_BLOCK_IDS = [
    ("", "empty"),
    ("A" * 65, "64 bytes"),
    ("a b", "base64"),
    ("../x", "base64"),
    ("é", "base64"),
]


@pytest.mark.parametrize("name, message", BAD_CONTAINERS)
def test_bad_container_names_are_refused_and_change_nothing(
    store: BlobStore, name: str, message: str
) -> None:
    before = tree_snapshot(store.root_dir)
    with pytest.raises(InvalidArgument, match=message):
        store.create_container(name)
    with pytest.raises(InvalidArgument, match=message):
        store.stage_block(name, "blob", "AA==", b"data")
    with pytest.raises(InvalidArgument, match=message):
        store.commit_block_list(name, "blob", [])
    with pytest.raises(InvalidArgument, match=message):
        store.list_blobs(name)
    assert tree_snapshot(store.root_dir) == before
    assert store.list_containers() == ["data"]


@pytest.mark.parametrize("name, message", BAD_BLOBS)
def test_bad_blob_names_are_refused_and_change_nothing(store: BlobStore, name: str, message: str) -> None:
    before = tree_snapshot(store.root_dir)
    with pytest.raises(InvalidArgument, match=message):
        store.stage_block("data", name, "AA==", b"data")
    with pytest.raises(InvalidArgument, match=message):
        store.commit_block_list("data", name, [])
    with pytest.raises(InvalidArgument, match=message):
        store.get_blob("data", name)
    with pytest.raises(InvalidArgument, match=message):
        store.delete_blob("data", name)
    assert tree_snapshot(store.root_dir) == before


@pytest.mark.parametrize("block_id, message", BAD_BLOCK_IDS)
def test_bad_block_ids_are_refused_and_change_nothing(store: BlobStore, block_id: str, message: str) -> None:
    before = tree_snapshot(store.root_dir)
    with pytest.raises(InvalidArgument, match=message):
        store.stage_block("data", "blob", block_id, b"data")
    with pytest.raises(InvalidArgument, match=message):
        store.commit_block_list("data", "blob", [block_id])
    assert tree_snapshot(store.root_dir) == before


def test_odd_but_valid_names_stay_inside_the_root(store: BlobStore, tmp_path: Path) -> None:
    # Dots, spaces, unicode and slashes are fine in names; none of them becomes a path of its own.
    names = ["./x", "a/./b", "…/ü", "x" * 1024, "a//b", "trailing/", " spaced name "]
    for name in names:
        store.stage_block("data", name, "AA==", name.encode())
        store.commit_block_list("data", name, ["AA=="])
    assert [p.name for p in store.list_blobs("data")] == sorted(names)
    for name in names:
        assert read_all(store, "data", name) == name.encode()
    assert all(p.resolve().is_relative_to(store.root_dir.resolve()) for p in tmp_path.rglob("*"))
    assert not list(tmp_path.glob("x")) and not (tmp_path / "region" / "x").exists()


# --------------------------------------------------------------------------- kill -9 in the middle of a commit

# The child kills itself just before file-system call number CRASH_AT of a commit (see support.crash).
CRASHING_COMMIT = r"""
import sys
from skyhaul.region.blobstore import BlobStore
from support.crash import crash_before_call

root, blob, crash_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
block_ids = sys.argv[4].split(",")
store = BlobStore(root)
counter = crash_before_call(crash_at)
store.commit_block_list("data", blob, block_ids, metadata={"version": "new"})
print(counter.calls)
"""


def run_crashing_commit(
    root: Path, blob: str, crash_at: int, block_ids: list[str]
) -> subprocess.CompletedProcess:
    return run_child(CRASHING_COMMIT, str(root), blob, str(crash_at), ",".join(block_ids))


@pytest.mark.parametrize("has_old_version", [False, True], ids=["first-commit", "replacing-commit"])
def test_kill_9_at_every_step_of_a_commit_never_shows_a_half_blob(
    tmp_path: Path, has_old_version: bool
) -> None:
    old = payload(300_000, 7)
    new_blocks = {"bmV3MA==": payload(200_000, 8), "bmV3MQ==": payload(150_000, 9)}
    new = b"".join(new_blocks.values())
    template = tmp_path / "template"
    with BlobStore(template) as store:
        store.create_container("data")
        if has_old_version:
            store.stage_block("data", "target", "b2xkMA==", old)
            store.commit_block_list("data", "target", ["b2xkMA=="], metadata={"version": "old"})
        stage_all(store, "target", new_blocks)

    outcomes = set()
    for crash_at, root in kill_at_every_step(
        template,
        tmp_path,
        lambda root, crash_at: run_crashing_commit(root, "target", crash_at, list(new_blocks)),
        min_steps=5,  # the commit really went through the counted calls
    ):
        with BlobStore(root) as store:  # the region restarts
            listed = store.list_blobs("data")
            if listed:
                (props,) = listed
                content = read_all(store, "data", "target")
                assert props.size == len(content)
                assert props.sha256_hex == hashlib.sha256(content).hexdigest()
                assert content in (old, new), f"crash before call {crash_at}: a half blob is visible"
                assert content == (new if props.metadata == {"version": "new"} else old)
            else:
                assert not has_old_version, f"crash before call {crash_at} lost the old version"
                content = None
            committed, uncommitted = store.get_block_list("data", "target")
            if content == new:
                outcomes.add("new")
                assert uncommitted == []
            else:
                outcomes.add("old" if has_old_version else "none")
                # The commit did not happen: its blocks are still staged and the retry commits.
                assert sorted(uncommitted) == sorted((b, len(d)) for b, d in new_blocks.items())
                props = store.commit_block_list(
                    "data", "target", list(new_blocks), hashlib.sha256(new).digest()
                )
                assert read_all(store, "data", "target") == new
        # Nothing half-done is left behind: no temp files, one data file per blob.
        assert list((root / "tmp").iterdir()) == [] and list((root / "trash").iterdir()) == []
        assert len(list(root.glob("containers/data/blobs/*/data/*"))) == 1
    assert outcomes == {"new", "old" if has_old_version else "none"}  # the kill landed on both sides


def test_leftovers_of_a_crash_are_removed_at_open(tmp_path: Path) -> None:
    root = tmp_path / "region"
    with BlobStore(root) as store:
        store.create_container("data")
        store.stage_block("data", "b", "AA==", b"kept")
        props = store.commit_block_list("data", "b", ["AA=="])
    blob_dir = next(root.glob("containers/data/blobs/*"))
    # What a killed process could leave: a temp file, a trash dir, an unreferenced data version and
    # blocks of an epoch a commit already discarded.
    (root / "tmp" / "abc.blob").write_bytes(b"partial")
    (root / "trash" / "old").mkdir()
    (blob_dir / "data" / "deadbeef").write_bytes(b"assembled but never published")
    (blob_dir / "staging" / "0").mkdir(parents=True)
    (blob_dir / "staging" / "0" / "41413d3d").write_bytes(b"stale")
    with BlobStore(root) as store:
        assert store.get_properties("data", "b") == props
        assert store.get_block_list("data", "b") == ([("AA==", 4)], [])
    assert list((root / "tmp").iterdir()) == [] and list((root / "trash").iterdir()) == []
    assert len(list((blob_dir / "data").iterdir())) == 1
    assert not (blob_dir / "staging" / "0").exists()
    with BlobStore(root) as store:
        assert read_all(store, "data", "b") == b"kept"


def test_thread_safety_of_restaging_during_commit(store: BlobStore) -> None:
    # Commits and re-stages of the same blob race; every committed version must be one whole block.
    versions = [payload(40_000, seed) for seed in range(6)]
    stop = threading.Event()

    def restage() -> None:
        i = 0
        while not stop.is_set():
            store.stage_block("data", "race", "AA==", versions[i % len(versions)])
            i += 1

    store.stage_block("data", "race", "AA==", versions[0])
    worker = threading.Thread(target=restage)
    worker.start()
    try:
        for _ in range(30):
            # After the first commit "AA==" is always resolvable: staged, or else the committed block.
            props = store.commit_block_list("data", "race", ["AA=="])
            content = read_all(store, "data", "race")
            assert content in versions
            assert props.size == len(content)
    finally:
        stop.set()
        worker.join()

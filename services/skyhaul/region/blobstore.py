"""Durable Azure-like block-blob storage for the mock cloud region.

Plain synchronous, thread-safe classes: the gRPC servicer calls them through `asyncio.to_thread`.

On-disk layout under ``root_dir`` (one process owns it; an flock on ``.lock`` enforces that)::

    containers/<container>/blobs/<sha256 of the blob name>/
        blob.json                         the commit pointer: name, properties, block list,
                                          data version, staging epoch
        data/<version>                    the committed bytes of that version
        staging/<epoch>/<hex of block id> uncommitted blocks
    tmp/                                  files being written; anything here at open is a crash leftover
    trash/                                deleted containers and blobs on their way out; emptied at open

Why this layout:

- Blob names never become paths: a blob's directory is the sha256 of its name, so ``..``, ``/``
  and unicode tricks cannot escape the root, and every valid name fits in a file name.
- A commit assembles the blob in ``tmp/``, fsyncs it, renames it to ``data/<new version>`` (still
  invisible: nothing points at it), then atomically replaces ``blob.json``. That one rename is the
  commit point: before it readers see the old blob (or none), after it the new one, whole. Data
  files no pointer references are removed at open, so a kill -9 at any point leaves no half blob.
- Staged blocks live under ``staging/<epoch>``; a commit bumps the epoch in ``blob.json``, so the
  same rename that publishes the blob also discards every block staged before it (Azure drops
  uncommitted blocks on commit). Older epoch directories are garbage, removed after the commit
  and again at open.
- Committed blocks stay addressable through the committed block list (id and size give the offset
  into the data file): a commit retried after a lost response, or one that appends blocks to a
  committed blob, finds them although their staging files are gone.

Error choices: a checksum mismatch (on a staged block or of the assembled blob against
``expected_sha256``) is `InvalidArgument` — the data sent is wrong, nothing is stored and the
staged blocks stay, so the client can re-stage the bad blocks. `delete_container` refuses a
container that still holds committed blobs (`FailedPrecondition`): data is never dropped in bulk.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from skyhaul.contract.blobs import (
    MAX_BLOCK_BYTES,
    show_value,
    validate_blob_name,
    validate_block_id,
    validate_block_list,
    validate_container_name,
    validate_content_type,
    validate_metadata,
)
from skyhaul.runtime.durable import (
    DirectoryLock,
    clear_directory,
    fsync_dir,
    replace_durably,
    write_file_durably,
)
from skyhaul.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

MAX_LIST_RESULTS = 5000
READ_CHUNK_BYTES = 1024 * 1024  # below gRPC's default 4 MiB message limit

_POINTER_NAME = "blob.json"
_POINTER_FORMAT = 1
_COPY_BUFFER_BYTES = 1024 * 1024


# --------------------------------------------------------------------------- validation


def _validate_digest(value: object, size: int, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) != size:
        length = len(value) if isinstance(value, bytes | bytearray | memoryview) else type(value).__name__
        raise InvalidArgument(f"{what} must be {size} raw bytes, got {length}")
    return bytes(value)


def _validate_non_negative_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{what} must be a non-negative integer, got {show_value(value)}")
    return value


# --------------------------------------------------------------------------- the store


@dataclasses.dataclass(frozen=True)
class BlobProperties:
    name: str
    size: int
    sha256_hex: str
    etag: str
    committed_unix: float
    block_count: int
    metadata: dict[str, str]
    content_type: str


@dataclasses.dataclass(frozen=True)
class _Committed:
    """What blob.json says: the visible version of a blob."""

    props: BlobProperties
    version: str  # name of the data file under data/
    epoch: int  # staging generation that uncommitted blocks go to
    blocks: tuple[tuple[str, int], ...]  # committed block list: (id, size) in blob order

    def to_json(self) -> bytes:
        p = self.props
        return json.dumps(
            {
                "format": _POINTER_FORMAT,
                "name": p.name,
                "version": self.version,
                "epoch": self.epoch,
                "size": p.size,
                "sha256": p.sha256_hex,
                "etag": p.etag,
                "committed_unix": p.committed_unix,
                "blocks": [list(b) for b in self.blocks],
                "metadata": p.metadata,
                "content_type": p.content_type,
            },
            separators=(",", ":"),
        ).encode()

    @staticmethod
    def from_json(raw: bytes) -> _Committed:
        doc = json.loads(raw)
        if doc.get("format") != _POINTER_FORMAT:
            raise ValueError(f"unknown pointer format {doc.get('format')!r}")
        blocks = tuple((str(block_id), int(size)) for block_id, size in doc["blocks"])
        props = BlobProperties(
            name=doc["name"],
            size=int(doc["size"]),
            sha256_hex=doc["sha256"],
            etag=doc["etag"],
            committed_unix=float(doc["committed_unix"]),
            block_count=len(blocks),
            metadata=dict(doc["metadata"]),
            content_type=doc["content_type"],
        )
        return _Committed(props=props, version=doc["version"], epoch=int(doc["epoch"]), blocks=blocks)


@dataclasses.dataclass
class _ContainerIndex:
    names: list[str] = dataclasses.field(default_factory=list)  # committed blob names, sorted
    blobs: dict[str, _Committed] = dataclasses.field(default_factory=dict)

    def put(self, record: _Committed) -> None:
        name = record.props.name
        if name not in self.blobs:
            bisect.insort(self.names, name)
        self.blobs[name] = record

    def remove(self, name: str) -> None:
        if self.blobs.pop(name, None) is not None:
            del self.names[bisect.bisect_left(self.names, name)]


def _public(record: _Committed) -> BlobProperties:
    # A copy of the metadata dict, so a caller cannot mutate the index through it.
    return dataclasses.replace(record.props, metadata=dict(record.props.metadata))


class BlobStore:
    """Containers of block blobs, durable under `root_dir`.

    Locking: a lock per blob serialises stage/commit/delete of that blob (assembling a large blob
    does not hold up others); one short global lock guards the in-memory index and every rename
    that publishes or removes something, so a container cannot vanish under a commit.
    """

    def __init__(self, root_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self._root = Path(root_dir)
        self._root.mkdir(parents=True, exist_ok=True)
        self._dir_lock = DirectoryLock(self._root, "region blob store")
        self._clock = clock
        self._containers_dir = self._root / "containers"
        self._tmp_dir = self._root / "tmp"
        self._trash_dir = self._root / "trash"
        for directory in (self._containers_dir, self._tmp_dir, self._trash_dir):
            directory.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._blob_locks: dict[tuple[str, str], threading.Lock] = {}
        self._index: dict[str, _ContainerIndex] = {}
        try:
            self._recover()
        except BaseException:
            self._dir_lock.release()
            raise

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Release the data directory. Everything acknowledged is already on disk."""
        self._dir_lock.release()

    def __enter__(self) -> BlobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def root_dir(self) -> Path:
        return self._root

    def _recover(self) -> None:
        """Drop what a crash left half done; load the committed pointers into the index."""
        leftovers = clear_directory(self._tmp_dir) + clear_directory(self._trash_dir)
        if leftovers:
            log.info("blob store %s: removed %d leftover temp/trash entries", self._root, leftovers)
        for entry in sorted(os.scandir(self._containers_dir), key=lambda e: e.name):
            try:
                validate_container_name(entry.name)
            except InvalidArgument:
                log.warning("blob store %s: ignoring unexpected entry %s", self._root, entry.path)
                continue
            index = _ContainerIndex()
            blobs_dir = Path(entry.path) / "blobs"
            blobs_dir.mkdir(exist_ok=True)
            for blob_entry in os.scandir(blobs_dir):
                record = self._recover_blob(Path(blob_entry.path))
                if record is not None:
                    index.put(record)
            self._index[entry.name] = index

    def _recover_blob(self, blob_dir: Path) -> _Committed | None:
        record: _Committed | None = None
        pointer = blob_dir / _POINTER_NAME
        if pointer.exists():
            try:
                record = _Committed.from_json(pointer.read_bytes())
            except (ValueError, KeyError, TypeError) as exc:
                # Pointers are replaced atomically, so this is outside damage: keep it for a person to look at.
                log.error("blob store: unreadable pointer %s (%s); leaving the blob out", pointer, exc)
                return None
            if _blob_dir_name(record.props.name) != blob_dir.name:
                log.error(
                    "blob store: pointer %s names %r, which belongs elsewhere", pointer, record.props.name
                )
                return None
            if not (blob_dir / "data" / record.version).is_file():
                log.error("blob store: data of %r (version %s) is missing", record.props.name, record.version)
                return None
        data_dir = blob_dir / "data"
        if data_dir.is_dir():
            for data_file in os.scandir(data_dir):
                if record is None or data_file.name != record.version:
                    os.unlink(data_file.path)  # assembled by a commit that never reached its pointer
        epoch = record.epoch if record else 0
        staging_dir = blob_dir / "staging"
        if staging_dir.is_dir():
            for epoch_dir in os.scandir(staging_dir):
                if epoch_dir.name != str(epoch):
                    shutil.rmtree(epoch_dir.path)  # blocks a commit already discarded
        current_staging = staging_dir / str(epoch)
        if record is None and not _has_entries(current_staging):
            shutil.rmtree(blob_dir)
        return record

    # ----------------------------------------------------------------- paths and lookups

    def _container_dir(self, container: str) -> Path:
        return self._containers_dir / container

    def _blob_dir(self, container: str, blob: str) -> Path:
        return self._containers_dir / container / "blobs" / _blob_dir_name(blob)

    def _blob_lock(self, container: str, blob: str) -> threading.Lock:
        with self._lock:
            return self._blob_locks.setdefault((container, blob), threading.Lock())

    def _require_container(self, container: str) -> _ContainerIndex:
        index = self._index.get(container)
        if index is None:
            raise NotFound(f"container {container!r} does not exist; create it first")
        return index

    def _require_blob(self, container: str, blob: str) -> _Committed:
        record = self._require_container(container).blobs.get(blob)
        if record is None:
            raise NotFound(f"blob {show_value(blob)} does not exist in container {container!r}")
        return record

    def _staged_blocks(self, container: str, blob: str, epoch: int) -> dict[str, tuple[Path, int]]:
        staging = self._blob_dir(container, blob) / "staging" / str(epoch)
        if not staging.is_dir():
            return {}
        blocks: dict[str, tuple[Path, int]] = {}
        for entry in os.scandir(staging):
            blocks[bytes.fromhex(entry.name).decode()] = (Path(entry.path), entry.stat().st_size)
        return blocks

    def _new_temp_path(self, suffix: str) -> Path:
        return self._tmp_dir / f"{uuid.uuid4().hex}.{suffix}"

    # ----------------------------------------------------------------- containers

    def create_container(self, name: str, exist_ok: bool = True) -> bool:
        """Create a container. Returns True if it was created, False if it existed (and exist_ok)."""
        validate_container_name(name)
        with self._lock:
            if name in self._index:
                if exist_ok:
                    return False
                raise AlreadyExists(f"container {show_value(name)} already exists")
            # Built in tmp/ and renamed into place: a crash leaves either nothing or a whole container.
            staging = self._new_temp_path("container")
            os.mkdir(staging)
            os.mkdir(staging / "blobs")
            fsync_dir(staging)
            os.rename(staging, self._container_dir(name))
            fsync_dir(self._containers_dir)
            self._index[name] = _ContainerIndex()
            return True

    def list_containers(self) -> list[str]:
        with self._lock:
            return sorted(self._index)

    def delete_container(self, name: str) -> None:
        """Delete an empty container (no committed blobs; its uncommitted blocks go with it).

        A container with committed blobs is refused with FailedPrecondition: delete the blobs first.
        """
        validate_container_name(name)
        with self._lock:
            index = self._require_container(name)
            if index.names:
                raise FailedPrecondition(
                    f"container {show_value(name)} still holds {len(index.names)} blob(s); delete them first"
                )
            trash = self._trash_dir / uuid.uuid4().hex
            os.rename(self._container_dir(name), trash)
            fsync_dir(self._containers_dir)
            del self._index[name]
        shutil.rmtree(trash, ignore_errors=True)

    # ----------------------------------------------------------------- blocks

    def stage_block(
        self,
        container: str,
        blob: str,
        block_id: str,
        data: bytes,
        md5: bytes | None = None,
        sha256: bytes | None = None,
    ) -> int:
        """Stage (or re-stage) an uncommitted block durably. Returns its size.

        A given md5 / sha256 is checked against the data first: on a mismatch nothing is stored.
        """
        validate_container_name(container)
        validate_blob_name(blob)
        validate_block_id(block_id)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgument(f"block data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_BLOCK_BYTES:
            raise InvalidArgument(f"block {block_id!r} has {len(data)} bytes; the limit is {MAX_BLOCK_BYTES}")
        expected_md5 = _validate_digest(md5, 16, "md5")
        expected_sha256 = _validate_digest(sha256, 32, "sha256")
        if expected_md5 is not None:
            actual = hashlib.md5(data, usedforsecurity=False).digest()
            if not hmac.compare_digest(actual, expected_md5):
                raise InvalidArgument(
                    f"block {block_id!r} of {show_value(blob)}: md5 of the data is {actual.hex()}, the request says "
                    f"{expected_md5.hex()}; the block was corrupted on the way, send it again"
                )
        if expected_sha256 is not None:
            actual = hashlib.sha256(data).digest()
            if not hmac.compare_digest(actual, expected_sha256):
                raise InvalidArgument(
                    f"block {block_id!r} of {show_value(blob)}: sha256 of the data is {actual.hex()}, the request says "
                    f"{expected_sha256.hex()}; the block was corrupted on the way, send it again"
                )
        with self._lock:
            self._require_container(container)  # fail before writing anything
        # The slow part (write + fsync) runs outside every lock.
        tmp = self._new_temp_path("block")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            with self._blob_lock(container, blob), self._lock:
                self._require_container(container)
                record = self._index[container].blobs.get(blob)
                epoch = record.epoch if record else 0
                others = self._staged_blocks(container, blob, epoch)
                # Azure's rule: every block id of a blob has one length (checked here, before the
                # block joins the others, so a commit never meets a mixed list it could not use).
                mismatch = next((b for b in others if len(b) != len(block_id)), None)
                if mismatch is not None:
                    raise InvalidArgument(
                        f"block id {show_value(block_id)} has {len(block_id)} characters but blob "
                        f"{show_value(blob)} already has staged block {show_value(mismatch)} of {len(mismatch)}; "
                        "every block id of a blob must have the same length"
                    )
                staging = self._blob_dir(container, blob) / "staging" / str(epoch)
                replace_durably(tmp, staging / block_id.encode().hex())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return len(data)

    def get_block_list(
        self, container: str, blob: str
    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """(committed, uncommitted) blocks as (id, size). Committed in blob order, uncommitted by id.

        A blob with neither gives two empty lists (an uploader starting fresh), not NotFound.
        """
        validate_container_name(container)
        validate_blob_name(blob)
        with self._lock:
            record = self._require_container(container).blobs.get(blob)
            committed = list(record.blocks) if record else []
            staged = self._staged_blocks(container, blob, record.epoch if record else 0)
        uncommitted = sorted((block_id, size) for block_id, (_, size) in staged.items())
        return committed, uncommitted

    # ----------------------------------------------------------------- commit

    def commit_block_list(
        self,
        container: str,
        blob: str,
        block_ids: Sequence[str],
        expected_sha256: bytes | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "",
    ) -> BlobProperties:
        """Make the blob the concatenation of `block_ids`, atomically; return its properties.

        Each id is taken from the uncommitted blocks first, else from the committed block list
        (Azure's "latest"). An id in neither refuses the whole commit with InvalidArgument and
        changes nothing. If `expected_sha256` is given and the assembled blob differs, the commit is
        refused with InvalidArgument and nothing changes. Committing what is already committed (the
        same blocks with the same bytes, metadata and content type: a retry after a lost response)
        returns the existing properties, etag included. Uncommitted blocks are discarded on success.
        """
        validate_container_name(container)
        validate_blob_name(blob)
        block_ids = validate_block_list(block_ids)
        expected = _validate_digest(expected_sha256, 32, "expected sha256")
        metadata = validate_metadata(metadata)
        content_type = validate_content_type(content_type)

        with self._blob_lock(container, blob):
            with self._lock:
                current = self._require_container(container).blobs.get(blob)
                epoch = current.epoch if current else 0
                staged = self._staged_blocks(container, blob, epoch)
            committed_at: dict[str, tuple[int, int]] = {}  # id -> (offset, size) in the current data file
            offset = 0
            for block_id, size in current.blocks if current else ():
                committed_at.setdefault(block_id, (offset, size))
                offset += size
            missing = [b for b in dict.fromkeys(block_ids) if b not in staged and b not in committed_at]
            if missing:
                shown = ", ".join(repr(b) for b in missing[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise InvalidArgument(
                    f"cannot commit {show_value(blob)}: block(s) {shown}{more} are neither staged nor committed; "
                    "stage them first (nothing was changed)"
                )
            if (
                current is not None
                and not any(b in staged for b in block_ids)
                and self._same_commit(
                    current,
                    [(b, committed_at[b][1]) for b in block_ids],
                    current.props.sha256_hex,
                    metadata,
                    content_type,
                )
            ):
                return self._confirm_unchanged(container, blob, current, expected)

            tmp, sha256_hex, size = self._assemble(container, blob, current, block_ids, staged, committed_at)
            try:
                if expected is not None and sha256_hex != expected.hex():
                    raise InvalidArgument(
                        f"cannot commit {show_value(blob)}: the blocks assemble to sha256 {sha256_hex}, the request expects "
                        f"{expected.hex()}; re-stage the blocks that changed (nothing was committed)"
                    )
                block_list = [(b, staged[b][1] if b in staged else committed_at[b][1]) for b in block_ids]
                if current is not None and self._same_commit(
                    current, block_list, sha256_hex, metadata, content_type
                ):
                    # Same bytes re-staged and committed again: keep the version and its etag.
                    tmp.unlink()
                    return self._confirm_unchanged(container, blob, current, expected)
                version = uuid.uuid4().hex
                record = _Committed(
                    props=BlobProperties(
                        name=blob,
                        size=size,
                        sha256_hex=sha256_hex,
                        etag=f'"0x{version[:16].upper()}"',
                        committed_unix=float(self._clock()),
                        block_count=len(block_list),
                        metadata=metadata,
                        content_type=content_type,
                    ),
                    version=version,
                    epoch=epoch + 1,
                    blocks=tuple(block_list),
                )
                self._publish(container, blob, record, tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            # Past the commit point: what follows is cleanup, and open() redoes it after a crash.
            blob_dir = self._blob_dir(container, blob)
            if current is not None:
                (blob_dir / "data" / current.version).unlink(missing_ok=True)
            shutil.rmtree(blob_dir / "staging" / str(epoch), ignore_errors=True)
            return _public(record)

    @staticmethod
    def _same_commit(
        current: _Committed,
        block_list: list[tuple[str, int]],
        sha256_hex: str,
        metadata: dict[str, str],
        content_type: str,
    ) -> bool:
        return (
            tuple(block_list) == current.blocks
            and sha256_hex == current.props.sha256_hex
            and metadata == current.props.metadata
            and content_type == current.props.content_type
        )

    def _confirm_unchanged(
        self, container: str, blob: str, current: _Committed, expected: bytes | None
    ) -> BlobProperties:
        if expected is not None and current.props.sha256_hex != expected.hex():
            raise InvalidArgument(
                f"cannot commit {show_value(blob)}: the blocks assemble to sha256 {current.props.sha256_hex}, the request "
                f"expects {expected.hex()} (nothing was committed)"
            )
        # Azure semantics: a successful commit discards uncommitted blocks, even a no-op one.
        shutil.rmtree(self._blob_dir(container, blob) / "staging" / str(current.epoch), ignore_errors=True)
        return _public(current)

    def _assemble(
        self,
        container: str,
        blob: str,
        current: _Committed | None,
        block_ids: list[str],
        staged: dict[str, tuple[Path, int]],
        committed_at: dict[str, tuple[int, int]],
    ) -> tuple[Path, str, int]:
        """Concatenate the blocks into a fsynced temp file; returns (path, sha256 hex, size)."""
        tmp = self._new_temp_path("blob")
        digest = hashlib.sha256()
        size = 0
        committed_file: BinaryIO | None = None
        try:
            with open(tmp, "xb") as out:
                if current is not None and any(b not in staged for b in block_ids):
                    committed_file = open(self._blob_dir(container, blob) / "data" / current.version, "rb")
                for block_id in block_ids:
                    if block_id in staged:
                        with open(staged[block_id][0], "rb") as source:
                            size += _copy(source, out, None, digest)
                    else:
                        assert committed_file is not None
                        offset, length = committed_at[block_id]
                        committed_file.seek(offset)
                        size += _copy(committed_file, out, length, digest)
                out.flush()
                os.fsync(out.fileno())
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            # Only a concurrent delete_container can remove staged files while we hold the blob lock.
            raise NotFound(
                f"container {container!r} was deleted while {show_value(blob)} was being committed"
            ) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if committed_file is not None:
                committed_file.close()
        return tmp, digest.hexdigest(), size

    def _publish(self, container: str, blob: str, record: _Committed, assembled: Path) -> None:
        """Move the assembled data next to the blob, then swap the pointer: the commit point."""
        with self._lock:
            index = self._require_container(container)
            blob_dir = self._blob_dir(container, blob)
            data_dir = blob_dir / "data"
            replace_durably(assembled, data_dir / record.version)  # not visible yet: no pointer names it
            write_file_durably(blob_dir / _POINTER_NAME, record.to_json(), self._tmp_dir)
            index.put(record)

    # ----------------------------------------------------------------- reads

    def get_properties(self, container: str, blob: str) -> BlobProperties:
        validate_container_name(container)
        validate_blob_name(blob)
        with self._lock:
            return _public(self._require_blob(container, blob))

    def get_blob(
        self,
        container: str,
        blob: str,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = READ_CHUNK_BYTES,
    ) -> Iterator[bytes]:
        """The committed bytes [offset, offset + length) as chunks of at most `chunk_size`.

        A range running past the end is cut at the end; an offset past the end is InvalidArgument.
        The data file is opened before returning, so the stream stays whole even if the blob is
        replaced or deleted while the caller reads it.
        """
        validate_container_name(container)
        validate_blob_name(blob)
        offset = _validate_non_negative_int(offset, "offset")
        if length is not None:
            length = _validate_non_negative_int(length, "length")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise InvalidArgument(f"chunk size must be a positive integer, got {show_value(chunk_size)}")
        with self._lock:
            record = self._require_blob(container, blob)
            size = record.props.size
            if offset > size:
                raise InvalidArgument(
                    f"offset {offset} is beyond the end of blob {show_value(blob)} ({size} bytes)"
                )
            # Opened under the lock: a commit or delete unlinks the old file only after taking it.
            source = open(self._blob_dir(container, blob) / "data" / record.version, "rb")
        end = size if length is None else min(size, offset + length)
        return _read_range(source, offset, end - offset, chunk_size)

    def list_blobs(
        self, container: str, prefix: str = "", start_after: str = "", max_results: int = 1000
    ) -> list[BlobProperties]:
        """Committed blobs whose name starts with `prefix`, sorted by name, after `start_after`.

        Page by passing the last name of one page as `start_after` of the next.
        """
        validate_container_name(container)
        if not isinstance(prefix, str) or not isinstance(start_after, str):
            raise InvalidArgument("prefix and start_after must be strings")
        if (
            isinstance(max_results, bool)
            or not isinstance(max_results, int)
            or not 1 <= max_results <= MAX_LIST_RESULTS
        ):
            raise InvalidArgument(
                f"max_results must be an integer in 1..{MAX_LIST_RESULTS}, got {show_value(max_results)}"
            )
        with self._lock:
            index = self._require_container(container)
            start = bisect.bisect_left(index.names, prefix)
            if start_after:
                start = max(start, bisect.bisect_right(index.names, start_after))
            found: list[BlobProperties] = []
            for name in index.names[start:]:
                if not name.startswith(prefix) or len(found) >= max_results:
                    break
                found.append(_public(index.blobs[name]))
            return found

    # ----------------------------------------------------------------- delete

    def delete_blob(self, container: str, blob: str) -> None:
        """Delete a blob and its uncommitted blocks. NotFound if it has neither."""
        validate_container_name(container)
        validate_blob_name(blob)
        with self._blob_lock(container, blob):
            with self._lock:
                index = self._require_container(container)
                blob_dir = self._blob_dir(container, blob)
                if blob not in index.blobs and not blob_dir.exists():
                    raise NotFound(f"blob {show_value(blob)} does not exist in container {container!r}")
                # One rename takes the pointer, data and staged blocks away together.
                trash = self._trash_dir / uuid.uuid4().hex
                os.rename(blob_dir, trash)
                fsync_dir(blob_dir.parent)
                index.remove(blob)
            shutil.rmtree(trash, ignore_errors=True)


def _has_entries(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    with os.scandir(directory) as entries:
        return any(entries)


def _blob_dir_name(blob: str) -> str:
    return hashlib.sha256(blob.encode()).hexdigest()


def _copy(source: BinaryIO, out: BinaryIO, length: int | None, digest: hashlib._Hash) -> int:
    """Copy `length` bytes (all if None) from source to out, feeding the digest; returns bytes copied."""
    copied = 0
    while length is None or copied < length:
        want = _COPY_BUFFER_BYTES if length is None else min(_COPY_BUFFER_BYTES, length - copied)
        chunk = source.read(want)
        if not chunk:
            if length is not None:
                raise OSError(f"committed data ended {length - copied} bytes early")
            break
        out.write(chunk)
        digest.update(chunk)
        copied += len(chunk)
    return copied


def _read_range(source: BinaryIO, offset: int, remaining: int, chunk_size: int) -> Iterator[bytes]:
    with source:
        source.seek(offset)
        while remaining > 0:
            chunk = source.read(min(chunk_size, remaining))
            if not chunk:
                raise OSError("blob data ended before its recorded size")
            remaining -= len(chunk)
            yield chunk

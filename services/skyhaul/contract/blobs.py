"""Blob, container and block rules of the region's contract (Azure's block-blob limits).

The region enforces them on every request; the data center checks its object keys, metadata and
content types with the same functions when a put arrives, so everything it accepts can later
become a blob in the region (an object the region would refuse must be refused at the put, not
discovered after an outage, when the client is long gone).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

from skyhaul.contract.bounds import MAX_ECHO_CHARS, shown
from skyhaul.runtime.errors import InvalidArgument

MAX_BLOB_NAME_CHARS = 1024
MAX_BLOCK_ID_BYTES = 64
MAX_BLOCKS_PER_BLOB = 50_000  # Azure's limit on committed blocks
MAX_BLOCK_BYTES = 100 * 1024 * 1024
MAX_METADATA_BYTES = 8 * 1024  # Azure's limit on all names and values together
MAX_CONTENT_TYPE_CHARS = 256

_CONTAINER_NAME_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_BLOCK_ID_RE = re.compile(r"[A-Za-z0-9+/=_-]+")
_METADATA_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def show_value(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """repr() of a user value, cut short so a 10 MB name does not flood the error message."""
    return shown(value, limit)


def validate_container_name(name: object) -> str:
    """Azure rules: 3-63 chars, lowercase letters, digits and single hyphens, alphanumeric at both ends."""
    if not isinstance(name, str):
        raise InvalidArgument(f"container name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidArgument(
            "container name is empty; use 3-63 lowercase letters, digits and single hyphens, e.g. 'telemetry'"
        )
    if not 3 <= len(name) <= 63:
        raise InvalidArgument(
            f"container name {show_value(name)} has {len(name)} characters; it must have 3-63"
        )
    if not _CONTAINER_NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"container name {show_value(name)} is invalid: use only lowercase letters, digits and single hyphens,"
            " starting and ending with a letter or digit"
        )
    return name


def validate_blob_name(name: object, what: str = "blob name") -> str:
    """1-1024 characters, no control characters, no backslash, not absolute, no `..` segment.

    The mdc validates its object keys with this too, so every key it accepts can become a blob.
    `what` names the value in the error ("blob name", "object key").
    """
    if not isinstance(name, str):
        raise InvalidArgument(f"{what} must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidArgument(f"{what} is empty; give 1-{MAX_BLOB_NAME_CHARS} characters")
    if len(name) > MAX_BLOB_NAME_CHARS:
        raise InvalidArgument(
            f"{what} {show_value(name)} is {len(name)} characters long; the limit is {MAX_BLOB_NAME_CHARS}"
        )
    for position, char in enumerate(name):
        category = unicodedata.category(char)
        if category == "Cc":
            raise InvalidArgument(
                f"{what} {show_value(name)} contains control character U+{ord(char):04X} at position {position}; remove it"
            )
        if category == "Cs":
            raise InvalidArgument(
                f"{what} {show_value(name)} contains a lone surrogate at position {position}"
            )
    if "\\" in name:
        raise InvalidArgument(
            f"{what} {show_value(name)} contains a backslash; use '/' to separate path segments"
        )
    if name.startswith("/"):
        raise InvalidArgument(f"{what} {show_value(name)} is absolute; remove the leading '/'")
    if ".." in name.split("/"):
        raise InvalidArgument(
            f"{what} {show_value(name)} has a '..' path segment; names cannot climb out of their container"
        )
    return name


def validate_block_id(block_id: object) -> str:
    """Non-empty, at most 64 bytes, base64 / base64url characters only."""
    if not isinstance(block_id, str):
        raise InvalidArgument(f"block id must be a string, got {type(block_id).__name__}")
    if not block_id:
        raise InvalidArgument("block id is empty; use a base64 string of at most 64 bytes")
    if len(block_id.encode()) > MAX_BLOCK_ID_BYTES:
        raise InvalidArgument(f"block id {show_value(block_id)} is longer than {MAX_BLOCK_ID_BYTES} bytes")
    if not _BLOCK_ID_RE.fullmatch(block_id):
        raise InvalidArgument(
            f"block id {show_value(block_id)} has characters outside base64 (A-Z a-z 0-9 + / = - _)"
        )
    return block_id


def validate_block_list(block_ids: object) -> list[str]:
    """A commit's block list: valid ids, at most MAX_BLOCKS_PER_BLOB, all of one length (Azure's rule)."""
    if isinstance(block_ids, str | bytes) or not isinstance(block_ids, Sequence):
        raise InvalidArgument("block list must be a list of block ids")
    if len(block_ids) > MAX_BLOCKS_PER_BLOB:
        raise InvalidArgument(f"block list has {len(block_ids)} blocks; the limit is {MAX_BLOCKS_PER_BLOB}")
    ids = [validate_block_id(block_id) for block_id in block_ids]
    lengths = {len(block_id) for block_id in ids}
    if len(lengths) > 1:
        first = ids[0]
        other = next(block_id for block_id in ids if len(block_id) != len(first))
        raise InvalidArgument(
            f"block ids of one blob must all have the same length; {show_value(first)} has {len(first)} "
            f"characters, {show_value(other)} has {len(other)}: encode ids at a fixed width (e.g. base64 of "
            "a zero-padded index)"
        )
    return ids


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Identifier-like keys, printable string values, at most 8 KiB in all. Returns a plain copy."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgument(f"metadata must be a mapping of strings, got {type(metadata).__name__}")
    total = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not _METADATA_KEY_RE.fullmatch(key):
            raise InvalidArgument(
                f"metadata key {show_value(key)} is invalid: start with a letter or '_', then letters, digits or '_'"
            )
        if not isinstance(value, str):
            raise InvalidArgument(f"metadata value of {key!r} must be a string, got {type(value).__name__}")
        if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
            raise InvalidArgument(f"metadata value of {key!r} contains a control character")
        total += len(key.encode()) + len(value.encode())
    if total > MAX_METADATA_BYTES:
        raise InvalidArgument(f"metadata takes {total} bytes; the limit is {MAX_METADATA_BYTES}")
    return dict(metadata)


def validate_content_type(content_type: object) -> str:
    """At most 256 characters, no control characters (the region stores it with the blob)."""
    if not isinstance(content_type, str):
        raise InvalidArgument(f"content type must be a string, got {type(content_type).__name__}")
    if len(content_type) > MAX_CONTENT_TYPE_CHARS or any(
        unicodedata.category(c) == "Cc" for c in content_type
    ):
        raise InvalidArgument(
            f"content type {show_value(content_type)} is invalid: at most {MAX_CONTENT_TYPE_CHARS} printable characters"
        )
    return content_type

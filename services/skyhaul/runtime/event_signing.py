"""Signed link events: only a holder of the run's event key can publish what subscribers act on.

links seals every `LinkEvent` and `LinkStateSnapshot` it writes to Redis (pub/sub message, log
stream entry, latest key) with HMAC-SHA256 under a key shared by the processes of one run
(SKYHAUL_EVENT_KEY, or the file SKYHAUL_EVENT_KEY_FILE names; `skyhaul up` generates one per run,
the chart keeps one in its Secret). The tag travels as the last field of the serialized message,
`signature` (field 15, declared in events.proto so the number is never reused), and covers every
byte before it, so sequence, run id, body and trace context are all bound to it:

    sealed = payload || 0x7a 0x20 || HMAC-SHA256(key, domain || payload)

`domain` differs for events and snapshots, so one can never be passed off as the other. A
verifier works on the raw bytes it got from Redis (no re-serialization, so any protobuf library
can check it). Why HMAC and not a Redis ACL user: docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

KEY_ENV = "SKYHAUL_EVENT_KEY"
KEY_FILE_ENV = "SKYHAUL_EVENT_KEY_FILE"

EVENT = b"skyhaul.v1.LinkEvent\n"
SNAPSHOT = b"skyhaul.v1.LinkStateSnapshot\n"

_TAG_BYTES = 32
_FIELD_HEADER = bytes([(15 << 3) | 2, _TAG_BYTES])  # field 15, length-delimited, 32 bytes
_TRAILER = len(_FIELD_HEADER) + _TAG_BYTES


class EventKeyError(ValueError):
    """SKYHAUL_EVENT_KEY_FILE names an unreadable or empty file."""


def generate_key() -> str:
    return secrets.token_hex(32)


def load_key(env: Mapping[str, str] = os.environ) -> bytes | None:
    """SKYHAUL_EVENT_KEY, else the file SKYHAUL_EVENT_KEY_FILE names, else None (unsigned bus)."""
    key = env.get(KEY_ENV, "").strip()
    if key:
        return key.encode()
    path = env.get(KEY_FILE_ENV, "").strip()
    if not path:
        return None
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise EventKeyError(f"{KEY_FILE_ENV}: cannot read {path}: {exc.strerror or exc}") from None
    if not key:
        raise EventKeyError(f"{KEY_FILE_ENV}: {path} is empty")
    return key.encode()


class EventSigner:
    """Seals and checks serialized events and snapshots with one key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("an event key must not be empty")
        self._key = key

    def _tag(self, domain: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, domain + payload, hashlib.sha256).digest()

    def seal(self, payload: bytes, domain: bytes = EVENT) -> bytes:
        """`payload` (a message serialized without its signature) with the signature field appended."""
        return payload + _FIELD_HEADER + self._tag(domain, payload)

    def verify(self, sealed: bytes, domain: bytes = EVENT) -> bool:
        if len(sealed) < _TRAILER or sealed[-_TRAILER:-_TAG_BYTES] != _FIELD_HEADER:
            return False
        payload, tag = sealed[:-_TRAILER], sealed[-_TAG_BYTES:]
        return hmac.compare_digest(tag, self._tag(domain, payload))


_warned_unsigned = False


def signer_from_env(env: Mapping[str, str] = os.environ) -> EventSigner | None:
    """The run's signer, or None (said once in the log) when no key is configured."""
    global _warned_unsigned
    key = load_key(env)
    if key is None:
        if not _warned_unsigned:
            _warned_unsigned = True
            log.warning(
                "no event key configured (%s / %s): link events are neither signed nor checked; "
                "`skyhaul up` always sets one",
                KEY_ENV,
                KEY_FILE_ENV,
            )
        return None
    return EventSigner(key)


__all__ = ["EVENT", "SNAPSHOT", "EventKeyError", "EventSigner", "generate_key", "load_key", "signer_from_env"]

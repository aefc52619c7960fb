"""Domain errors. Raised by any layer; the one server interceptor maps each to a gRPC status.

Messages are for a person: say what was wrong and what to do about it.
"""

from __future__ import annotations

# Whatever a message echoes, it stays short enough for a status line (values themselves are cut
# to 200 characters where they are quoted: contract.bounds.shown).
MAX_MESSAGE_CHARS = 2000


class SkyhaulError(Exception):
    """Base of every domain error."""

    def __init__(self, message: str = "", *args: object) -> None:
        if isinstance(message, str) and len(message) > MAX_MESSAGE_CHARS:
            # Keep the head (what was wrong) and the tail (what to do about it).
            cut = len(message) - MAX_MESSAGE_CHARS
            message = (
                f"{message[:1200]} [... {cut} characters cut ...] {message[-(MAX_MESSAGE_CHARS - 1250) :]}"
            )
        super().__init__(message, *args)


class InvalidArgument(SkyhaulError):
    """The request itself is wrong (bad latitude, malformed name, bad checksum)."""


class NotFound(SkyhaulError):
    """A named thing (constellation, data center, blob) does not exist."""


class AlreadyExists(SkyhaulError):
    """The thing to create exists already."""


class FailedPrecondition(SkyhaulError):
    """The request is well-formed but the system is not in a state to do it."""


class Unavailable(SkyhaulError):
    """A dependency (Redis, a peer service) cannot be reached; retrying later may work."""


class ResourceExhausted(SkyhaulError):
    """Out of a resource (disk, a limit per client); freeing it or waiting may help. Say which and how."""


class Aborted(SkyhaulError):
    """A concurrent change got in the way; retrying the whole operation may work."""


class as_invalid_argument:  # noqa: N801 - used as a context manager, reads like a phrase
    """Turn the ValueErrors that pure core code raises for bad input into InvalidArgument.

    Only wrap calls whose ValueErrors describe the caller's input (validation in the core).
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if (
            exc_type is not None
            and issubclass(exc_type, ValueError)
            and not issubclass(exc_type, SkyhaulError)
        ):
            raise InvalidArgument(str(exc)) from exc
        return False

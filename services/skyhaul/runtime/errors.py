"""Domain errors. Raised by any layer; the one server interceptor maps each to a gRPC status.

Messages are for a person: say what was wrong and what to do about it.
"""

from __future__ import annotations


class SkyhaulError(Exception):
    """Base of every domain error."""


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

"""Bounds of the contract's inputs, one check per concept, shared by every service.

Every RPC that takes a time, a duration, a window, a ground point, a name or a count checks it
here, before any work starts, so one bad value gets the same clear INVALID_ARGUMENT from every
service (and the core never sees a time it cannot index, e.g. 2**62 s):

- times: protobuf Timestamps with nanos in [0, 1e9) and seconds inside the emulation range,
  1957-01-01 (Sputnik flew in October 1957) to 2200-01-01;
- durations: seconds and nanos of one sign, |nanos| < 1e9, within a per-field range;
- windows: end after start, no longer than the RPC allows;
- ground points: finite, latitude [-90, 90], longitude [-180, 180], altitude -500 m .. 100 km
  (the Dead Sea shore is at -430 m; 100 km is the Kármán line: above it nothing is "ground");
- names and ids: at most `MAX_NAME_CHARS` (200) characters, no control characters;
- counts: integers in a per-field range (0 often means "the default").

Errors echo at most `MAX_ECHO_CHARS` characters of what the caller sent (`shown`): a 10 MB name
must not come back in the status message.
"""

from __future__ import annotations

import calendar
import math
import unicodedata
from collections.abc import Callable

from google.protobuf import duration_pb2, timestamp_pb2

from skyhaul.runtime.errors import InvalidArgument
from skyhaul.v1 import common_pb2

MAX_ECHO_CHARS = 200
MAX_NAME_CHARS = 200  # an id quoted back in full still fits the echo limit

EARLIEST_UNIX = float(calendar.timegm((1957, 1, 1, 0, 0, 0)))
LATEST_UNIX = float(calendar.timegm((2200, 1, 1, 0, 0, 0)))
EMULATION_RANGE = "1957-01-01 .. 2200-01-01 UTC"

MIN_ALTITUDE_M = -500.0
MAX_ALTITUDE_M = 100_000.0

_NANOS = 1_000_000_000
# A Duration's own limit (protobuf's, about 10 000 years) is far beyond anything we emulate.
MAX_DURATION_S = LATEST_UNIX - EARLIEST_UNIX


def shown(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """repr() of a caller's value, at most `limit` characters (long ones say how long they were)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    try:
        length = f"{len(value)} long"  # type: ignore[arg-type]
    except TypeError:
        length = f"{len(text)} characters as text"
    suffix = f"... ({length})"
    return text[: max(0, limit - len(suffix))] + suffix


def check_timestamp(stamp: timestamp_pb2.Timestamp, what: str) -> float:
    """Unix seconds of a protobuf Timestamp the caller set; InvalidArgument outside the contract."""
    if not 0 <= stamp.nanos < _NANOS:
        raise InvalidArgument(f"{what}.nanos {stamp.nanos} is outside [0, 999999999]")
    if not EARLIEST_UNIX <= stamp.seconds <= LATEST_UNIX:
        raise InvalidArgument(
            f"{what}.seconds {stamp.seconds} is outside the emulation range {EMULATION_RANGE} "
            f"({EARLIEST_UNIX:.0f} .. {LATEST_UNIX:.0f})"
        )
    return stamp.seconds + stamp.nanos * 1e-9


def check_unix(unix: float, what: str) -> float:
    """A time already in Unix seconds (e.g. start + a default length) inside the emulation range."""
    if not (math.isfinite(unix) and EARLIEST_UNIX <= unix <= LATEST_UNIX):
        raise InvalidArgument(f"{what} {shown(unix)} is outside the emulation range {EMULATION_RANGE}")
    return unix


def resolve_time(message, field: str, now: Callable[[], float], what: str | None = None) -> float:
    """The message's time field if set (checked), else `now()` (the emulation clock)."""
    if message.HasField(field):
        return check_timestamp(getattr(message, field), what or field)
    return now()


def check_duration(
    duration: duration_pb2.Duration,
    what: str,
    *,
    minimum_s: float = 0.0,
    maximum_s: float = MAX_DURATION_S,
    exclusive_minimum: bool = False,
) -> float:
    """Seconds of a protobuf Duration: well-formed (nanos < 1e9, one sign) and within the range."""
    seconds, nanos = duration.seconds, duration.nanos
    if not -_NANOS < nanos < _NANOS or (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        raise InvalidArgument(
            f"{what} is not a valid Duration (seconds {seconds}, nanos {nanos}): nanos must be within "
            "+-999999999 and have the sign of seconds"
        )
    value = seconds + nanos * 1e-9
    too_small = value <= minimum_s if exclusive_minimum else value < minimum_s
    if too_small and exclusive_minimum:
        raise InvalidArgument(f"{what} must be > {minimum_s:g} s (e.g. 1 s), got {value:g} s")
    if too_small or value > maximum_s:
        raise InvalidArgument(f"{what} {value:g} s is outside [{minimum_s:g}, {maximum_s:g}] s")
    return value


def check_window(
    window: common_pb2.TimeWindow,
    now: float,
    default_length_s: float,
    max_length_s: float,
    what: str = "window",
) -> tuple[float, float]:
    """[start, end) of a TimeWindow: unset start = now, unset end = start + the default length."""
    start = check_timestamp(window.start, f"{what}.start") if window.HasField("start") else now
    if window.HasField("end"):
        end = check_timestamp(window.end, f"{what}.end")
    else:
        end = check_unix(start + default_length_s, f"{what}.end (start + {default_length_s:g} s)")
    if end <= start:
        raise InvalidArgument(f"{what}.end ({end:.3f}) must be after {what}.start ({start:.3f})")
    if end - start > max_length_s:
        raise InvalidArgument(
            f"{what} of {(end - start) / 86400:.2f} days is longer than the {max_length_s / 86400:g} days "
            "allowed: split it"
        )
    return start, end


def check_geo_point(
    point: common_pb2.GeoPoint,
    what: str = "observer",
    *,
    min_altitude_m: float = MIN_ALTITUDE_M,
    max_altitude_m: float = MAX_ALTITUDE_M,
) -> tuple[float, float, float]:
    """(lat_deg, lon_deg, alt_m) of a ground point inside the contract's bounds."""
    lat, lon, alt = point.latitude_deg, point.longitude_deg, point.altitude_m
    if not all(map(math.isfinite, (lat, lon, alt))):
        raise InvalidArgument(f"{what}: coordinates must be finite numbers, got ({lat}, {lon}, {alt})")
    if not -90.0 <= lat <= 90.0:
        raise InvalidArgument(f"{what}.latitude_deg {lat:g} is outside [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        raise InvalidArgument(f"{what}.longitude_deg {lon:g} is outside [-180, 180]")
    if not min_altitude_m <= alt <= max_altitude_m:
        raise InvalidArgument(
            f"{what}.altitude_m {alt:g} is outside [{min_altitude_m:g}, {max_altitude_m:g}] m "
            "(a ground point: the Dead Sea shore to the edge of space)"
        )
    return lat, lon, alt


def check_angle(value: float, what: str, low: float, high: float, *, high_open: bool = False) -> float:
    """A finite angle in degrees within [low, high] (or [low, high) with `high_open`)."""
    inside = math.isfinite(value) and low <= value and (value < high if high_open else value <= high)
    if not inside:
        raise InvalidArgument(f"{what} {value:g} is outside [{low:g}, {high:g}{')' if high_open else ']'}")
    return value


def check_name(value: str, what: str, *, max_chars: int = MAX_NAME_CHARS) -> str:
    """An id or name: at most `max_chars` characters, no control characters (empty is allowed)."""
    if len(value) > max_chars:
        raise InvalidArgument(f"{what} {shown(value, 60)} is longer than {max_chars} characters")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise InvalidArgument(f"{what} {shown(value, 60)} contains a control character")
    return value


def check_names(values, what: str, *, max_count: int = 1000) -> list[str]:
    """A repeated id field: at most `max_count` entries, each a valid name."""
    if len(values) > max_count:
        raise InvalidArgument(f"{what} has {len(values)} entries; at most {max_count}")
    return [check_name(value, f"{what}[{i}]") for i, value in enumerate(values)]


def check_count(value: int, what: str, minimum: int, maximum: int, *, zero_means: str = "") -> int:
    """An integer field in [minimum, maximum]; 0 passes when `zero_means` says what it stands for."""
    if value == 0 and zero_means:
        return 0
    if not minimum <= value <= maximum:
        default = f" (0 = {zero_means})" if zero_means else ""
        raise InvalidArgument(f"{what} {value} is outside {minimum}..{maximum}{default}")
    return value


def check_indices(values, what: str, size: int) -> list[int]:
    """Indices into a collection of `size` items (e.g. satellites); at most `size` of them."""
    indices = list(values)
    if len(indices) > size:
        raise InvalidArgument(f"{what} has {len(indices)} entries; there are only {size}")
    if indices and (min(indices) < 0 or max(indices) >= size):
        raise InvalidArgument(f"{what} must be in [0, {size - 1}]")
    return indices

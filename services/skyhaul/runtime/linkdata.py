"""Files behind the link model: traces and the shipped ground preset (the core parses text only)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from skyhaul.core.starlink_ground import GroundPreset, parse_ground_csv
from skyhaul.core.traces import Trace, TraceFormatError, parse_trace

STARLINK_GROUND_FILE = "starlink_ground_2023-10-10.csv"


def load_trace(path) -> Trace:
    """A trace file of any supported format; errors name the file."""
    file_path = Path(path)
    try:
        text = file_path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise TraceFormatError(f"{file_path}: cannot read the file: {error.strerror or error}") from error
    try:
        return parse_trace(text)
    except TraceFormatError as error:
        raise TraceFormatError(f"{file_path}: {error}") from None


def starlink_ground() -> GroundPreset:
    """The shipped Starlink gateways and PoPs (community map of 2023-10-10)."""
    text = resources.files("skyhaul").joinpath("data", STARLINK_GROUND_FILE).read_text(encoding="utf-8")
    return parse_ground_csv(text)


# A replay's ``format:`` and the parser kinds it accepts (``auto``: any).
_REPLAY_KINDS = {"ping": ("ping",), "csv": ("csv", "raw-ns"), "dish": ("dish",)}


def load_replay_trace(path, fmt: str = "auto") -> Trace:
    """A trace for a data center's ``replay:``; ``fmt`` (ping, csv, dish) must match the content."""
    trace = load_trace(path)
    if fmt != "auto" and trace.kind not in _REPLAY_KINDS[fmt]:
        raise TraceFormatError(f"{path}: format {fmt} was given but the file reads as {trace.kind}")
    if int(trace.received.sum()) < 2:
        raise TraceFormatError(f"{path}: a replay needs at least 2 replies")
    return trace


def catalogue_isl_topology(
    tle_file,
    mode: str,
    epoch_unix: float,
    *,
    name: str,
    name_filter: str | None = None,
    skip_invalid: bool = False,
    min_satellite_altitude_km: float = 0.0,
):
    """The ISL topology a scenario's TLE catalogue gets (as the links service builds it); raises
    ``IslGridError`` naming the constellation when ``+grid`` has no planes to infer."""
    from skyhaul.core.elements import ElementSet
    from skyhaul.core.timeline import catalogue_isl_topology as build
    from skyhaul.core.tle import TleError, load_tle_file

    try:
        result = load_tle_file(tle_file, name_filter=name_filter, skip_invalid=skip_invalid)
    except (TleError, OSError) as exc:
        raise ValueError(f"{tle_file}: {exc}") from None
    if not result.records:
        return None  # nothing to link (the orbit service reports an empty catalogue)
    elements = ElementSet.from_tle(result.records)
    return build(elements, mode, name, min_satellite_altitude_km)

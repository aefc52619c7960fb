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

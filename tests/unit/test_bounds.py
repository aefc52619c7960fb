"""contract.bounds: one check per input concept, with errors that echo at most 200 characters."""

from __future__ import annotations

import math

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from skyhaul.contract import bounds
from skyhaul.contract.blobs import validate_block_list
from skyhaul.runtime.errors import MAX_MESSAGE_CHARS, InvalidArgument, NotFound
from skyhaul.v1 import common_pb2

EPOCH = 1604016000


@pytest.mark.parametrize(
    ("seconds", "nanos", "words"),
    [
        (EPOCH, -1, "nanos -1"),
        (EPOCH, 2_000_000_000, "nanos 2000000000"),
        (2**62, 0, "emulation range"),
        (-(2**62), 0, "emulation range"),
        (int(bounds.LATEST_UNIX) + 1, 0, "2200"),
        (int(bounds.EARLIEST_UNIX) - 1, 0, "1957"),
    ],
)
def test_timestamps_outside_the_contract_are_refused(seconds: int, nanos: int, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        bounds.check_timestamp(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos), "at")


def test_timestamps_inside_are_unix_seconds() -> None:
    assert (
        bounds.check_timestamp(timestamp_pb2.Timestamp(seconds=EPOCH, nanos=500_000_000), "at") == EPOCH + 0.5
    )
    assert (
        bounds.check_timestamp(timestamp_pb2.Timestamp(seconds=int(bounds.EARLIEST_UNIX)), "at")
        == bounds.EARLIEST_UNIX
    )


def test_durations_must_be_well_formed_and_in_range() -> None:
    d = duration_pb2.Duration
    assert bounds.check_duration(d(seconds=1, nanos=500_000_000), "step") == 1.5
    for bad in (d(seconds=1, nanos=-1), d(seconds=0, nanos=10**9), d(seconds=-1), d(seconds=3 * 10**11)):
        with pytest.raises(InvalidArgument, match="step"):
            bounds.check_duration(bad, "step", maximum_s=86400)
    with pytest.raises(InvalidArgument, match="step must be > 0"):
        bounds.check_duration(d(), "step", exclusive_minimum=True)


def test_windows_need_an_end_after_the_start_and_a_bounded_length() -> None:
    def window(a, b):
        return common_pb2.TimeWindow(
            start=timestamp_pb2.Timestamp(seconds=a), end=timestamp_pb2.Timestamp(seconds=b)
        )

    assert bounds.check_window(window(EPOCH, EPOCH + 60), 0.0, 3600, 86400) == (EPOCH, EPOCH + 60)
    assert bounds.check_window(common_pb2.TimeWindow(), EPOCH, 3600, 86400) == (EPOCH, EPOCH + 3600)
    with pytest.raises(InvalidArgument, match="after"):
        bounds.check_window(window(EPOCH, EPOCH), 0.0, 3600, 86400)
    with pytest.raises(InvalidArgument, match="days"):
        bounds.check_window(window(EPOCH, EPOCH + 2 * 86400), 0.0, 3600, 86400)
    with pytest.raises(
        InvalidArgument, match="emulation range"
    ):  # start near the end, default length past it
        bounds.check_window(
            common_pb2.TimeWindow(start=timestamp_pb2.Timestamp(seconds=int(bounds.LATEST_UNIX))),
            0.0,
            3600,
            86400,
        )


@pytest.mark.parametrize(
    ("lat", "lon", "alt", "words"),
    [
        (91, 0, 0, "latitude"),
        (0, -181, 0, "longitude"),
        (0, 0, -1e9, "altitude"),
        (0, 0, 1e6, "altitude"),
        (math.nan, 0, 0, "finite"),
        (0, math.inf, 0, "finite"),
    ],
)
def test_ground_points_are_bounded(lat, lon, alt, words) -> None:
    with pytest.raises(InvalidArgument, match=words):
        bounds.check_geo_point(common_pb2.GeoPoint(latitude_deg=lat, longitude_deg=lon, altitude_m=alt))


def test_ground_points_inside_pass() -> None:
    point = common_pb2.GeoPoint(latitude_deg=-90, longitude_deg=180, altitude_m=-430)
    assert bounds.check_geo_point(point) == (-90, 180, -430)


def test_counts_names_and_indices() -> None:
    assert bounds.check_count(0, "max_passes", 1, 10, zero_means="the default") == 0
    with pytest.raises(InvalidArgument, match="max_passes -1 is outside 1..10"):
        bounds.check_count(-1, "max_passes", 1, 10, zero_means="the default")
    with pytest.raises(InvalidArgument, match="longer than 200"):
        bounds.check_name("x" * 10_000_000, "data_center_id")
    with pytest.raises(InvalidArgument, match="control"):
        bounds.check_name("a\x00b", "data_center_id")
    with pytest.raises(InvalidArgument, match=r"\[0, 9\]"):
        bounds.check_indices([0, 10], "satellite_indices", 10)


def test_errors_echo_at_most_200_characters_of_a_value() -> None:
    huge = "y" * 10_000_000
    shown = bounds.shown(huge)
    assert len(shown) <= bounds.MAX_ECHO_CHARS and "10000000 long" in shown
    with pytest.raises(InvalidArgument) as refused:
        bounds.check_name(huge, "name")
    assert len(str(refused.value)) < 400
    # And a message built carelessly is still cut, keeping its head and its advice.
    error = NotFound("object " + huge + " is missing; put it again")
    assert len(str(error)) <= MAX_MESSAGE_CHARS + 100 and str(error).endswith("put it again")


def test_block_lists_of_mixed_id_lengths_are_refused() -> None:
    assert validate_block_list(["QUFB", "QkJC"]) == ["QUFB", "QkJC"]
    with pytest.raises(InvalidArgument, match="same length"):
        validate_block_list(["QUFB", "QkJCQg=="])

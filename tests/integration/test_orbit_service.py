"""OrbitService over real gRPC on loopback: positions, elements, look angles, passes, bad input."""

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2

from skyhaul.contract.orbit_codec import elements_from_proto, from_bytes
from skyhaul.core.constellations import build_preset
from skyhaul.core.frames import ecef_to_geodetic
from skyhaul.core.propagate import Propagator
from skyhaul.orbit.catalog import Catalog
from skyhaul.orbit.service import OrbitApp
from skyhaul.runtime.clock import EmulationClock, to_timestamp
from skyhaul.runtime.scenario import default_scenario
from skyhaul.runtime.server import start_server
from skyhaul.v1 import common_pb2, orbit_pb2, orbit_pb2_grpc

T0 = default_scenario().epoch_unix + 3600.0


@pytest.fixture
async def orbit():
    scenario = default_scenario()
    clock = EmulationClock(scenario.epoch_unix, 1.0, start_wall=0.0)
    srv = await start_server(OrbitApp(Catalog(scenario), clock), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    yield orbit_pb2_grpc.OrbitServiceStub(channel)
    await channel.close()
    await srv.stop(0.1)


async def test_positions_match_the_core(orbit):
    frame = await orbit.GetPositions(
        orbit_pb2.GetPositionsRequest(
            constellation="starlink-gen1",
            at=to_timestamp(T0),
            fields=orbit_pb2.PositionFields(geodetic=True, velocity=True),
        ),
        timeout=10,
    )
    assert frame.satellite_count == 4408
    r = from_bytes(frame.ecef_km, (4408, 3))
    expected = Propagator(build_preset("starlink-gen1", default_scenario().epoch_unix)).ecef(T0).r_km
    np.testing.assert_allclose(r, expected, atol=1e-9)
    lat, lon, alt = (from_bytes(b) for b in (frame.latitude_deg, frame.longitude_deg, frame.altitude_km))
    np.testing.assert_allclose(np.stack([lat, lon, alt]), np.stack(ecef_to_geodetic(expected)), atol=1e-9)
    speed = np.linalg.norm(from_bytes(frame.velocity_ecef_km_s, (4408, 3)), axis=1)
    assert np.all((speed > 7.0) & (speed < 7.7))


async def test_elements_round_trip_propagates_identically(orbit):
    response = await orbit.GetElements(orbit_pb2.GetElementsRequest(), timeout=10)
    elements = elements_from_proto(response)
    assert elements.version == response.summary.elements_version
    again = await orbit.GetElements(orbit_pb2.GetElementsRequest(known_version=elements.version), timeout=10)
    assert again.not_modified and not again.satnum
    frame = await orbit.GetPositions(orbit_pb2.GetPositionsRequest(at=to_timestamp(T0)), timeout=10)
    np.testing.assert_array_equal(Propagator(elements).ecef(T0).r_km, from_bytes(frame.ecef_km, (-1, 3)))


async def test_stream_positions_steps_forward(orbit):
    request = orbit_pb2.StreamPositionsRequest(
        start=to_timestamp(T0), step=duration_pb2.Duration(seconds=10), count=3
    )
    frames = [f async for f in orbit.StreamPositions(request, timeout=10)]
    assert [f.at.seconds for f in frames] == [int(T0), int(T0) + 10, int(T0) + 20]
    moved = np.linalg.norm(
        from_bytes(frames[1].ecef_km, (-1, 3)) - from_bytes(frames[0].ecef_km, (-1, 3)), axis=1
    )
    assert np.all((moved > 60) & (moved < 80))  # ~7.6 km/s for 10 s, less the Earth's rotation


async def test_look_angles_and_passes_agree(orbit):
    seattle = common_pb2.GeoPoint(latitude_deg=47.6, longitude_deg=-122.3)
    angles = await orbit.GetLookAngles(
        orbit_pb2.GetLookAnglesRequest(observer=seattle, at=to_timestamp(T0), min_elevation_deg=25),
        timeout=10,
    )
    assert len(angles.satellite_index) > 0 and min(angles.elevation_deg) >= 25
    assert list(angles.elevation_deg) == sorted(angles.elevation_deg, reverse=True)
    window = common_pb2.TimeWindow(start=to_timestamp(T0 - 600), end=to_timestamp(T0 + 600))
    passes = await orbit.ListPasses(
        orbit_pb2.ListPassesRequest(observer=seattle, window=window, min_elevation_deg=25), timeout=30
    )
    up_now = {p.satellite_index for p in passes.passes if p.rise_time.seconds <= T0 <= p.set_time.seconds}
    assert set(angles.satellite_index) <= up_now


@pytest.mark.parametrize(
    ("call", "request_", "code", "words"),
    [
        (
            "GetLookAngles",
            orbit_pb2.GetLookAnglesRequest(observer=common_pb2.GeoPoint(latitude_deg=91)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "latitude",
        ),
        (
            "GetPositions",
            orbit_pb2.GetPositionsRequest(constellation="nope"),
            grpc.StatusCode.NOT_FOUND,
            "known",
        ),
        (
            "StreamPositions",
            orbit_pb2.StreamPositionsRequest(count=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "step",
        ),
        (
            "StreamPositions",
            orbit_pb2.StreamPositionsRequest(step=duration_pb2.Duration(seconds=1), count=10**9),
            grpc.StatusCode.INVALID_ARGUMENT,
            "too much",
        ),
        (
            "ListPasses",
            orbit_pb2.ListPassesRequest(
                window=common_pb2.TimeWindow(start=to_timestamp(T0), end=to_timestamp(T0 - 1))
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "after",
        ),
    ],
)
async def test_bad_input_is_refused_clearly(orbit, call, request_, code, words):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        result = getattr(orbit, call)(request_, timeout=10)
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    assert err.value.code() == code
    assert words in err.value.details()

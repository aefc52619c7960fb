"""OrbitService: constellations, positions as packed arrays, look angles and passes.

A thin adapter: the physics is skyhaul.core; this file validates requests, runs the numpy work
off the event loop when it is big, and packs the results.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
from opentelemetry import trace

from skyhaul.contract import bounds
from skyhaul.contract.orbit_codec import (
    elements_to_proto,
    pass_to_proto,
    satellites_to_proto,
    to_bytes,
)
from skyhaul.core.frames import ecef_to_geodetic
from skyhaul.core.geometry import look_angles
from skyhaul.core.passes import find_passes
from skyhaul.orbit.catalog import Catalog, Constellation
from skyhaul.runtime.clock import EmulationClock, to_timestamp
from skyhaul.runtime.errors import InvalidArgument, as_invalid_argument
from skyhaul.runtime.server import ServiceApp, service_full_name
from skyhaul.runtime.settings import Settings
from skyhaul.v1 import common_pb2, orbit_pb2, orbit_pb2_grpc

MAX_STREAM_FRAMES = 1_000_000
MAX_STREAM_SAT_STEPS = 500_000_000  # satellites x frames of one stream
MAX_PASS_WINDOW_S = 31 * 86_400
DEFAULT_MAX_PASSES = 10_000
INLINE_SAT_STEPS = 20_000  # smaller jobs run on the event loop: a thread hop costs more than they do


MAX_STREAM_STEP_S = 86_400.0


def check_observer(point: common_pb2.GeoPoint, what: str = "observer") -> tuple[float, float, float]:
    """(lat, lon, alt_km) of an observer inside the contract's bounds (see contract.bounds)."""
    lat, lon, alt_m = bounds.check_geo_point(point, what)
    return lat, lon, alt_m / 1000.0


def positions_frame(
    constellation: Constellation, t: float, velocity: bool, geodetic: bool
) -> orbit_pb2.PositionsFrame:
    state = constellation.propagator.ecef(t, with_velocity=velocity)
    frame = orbit_pb2.PositionsFrame(
        at=to_timestamp(t),
        satellite_count=constellation.elements.size,
        ecef_km=to_bytes(state.r_km),
        sgp4_error=np.ascontiguousarray(state.error, dtype=np.int8).tobytes(),
        elements_version=constellation.elements.version,
    )
    if velocity:
        frame.velocity_ecef_km_s = to_bytes(state.v_km_s)
    if geodetic:
        lat, lon, alt = ecef_to_geodetic(state.r_km)
        frame.latitude_deg, frame.longitude_deg, frame.altitude_km = (
            to_bytes(lat),
            to_bytes(lon),
            to_bytes(alt),
        )
    return frame


async def _compute(work_size: int, fn, *args):
    if work_size <= INLINE_SAT_STEPS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class OrbitServicer(orbit_pb2_grpc.OrbitServiceServicer):
    def __init__(self, catalog: Catalog, clock: EmulationClock) -> None:
        self.catalog = catalog
        self.clock = clock

    def _time(self, request, field: str = "at") -> float:
        return bounds.resolve_time(request, field, self.clock.now)

    def _constellation(self, name: str) -> Constellation:
        bounds.check_name(name, "constellation")
        constellation = self.catalog.get(name)
        span = trace.get_current_span()
        span.set_attribute("skyhaul.constellation", constellation.name)
        span.set_attribute("skyhaul.satellites", constellation.elements.size)
        return constellation

    async def ListConstellations(self, request, context):
        items = await asyncio.to_thread(lambda: [self.catalog.get(n).summary() for n in self.catalog.names()])
        return orbit_pb2.ListConstellationsResponse(
            constellations=items, default_constellation=self.catalog.default
        )

    async def GetConstellation(self, request, context):
        c = self._constellation(request.constellation)
        return orbit_pb2.GetConstellationResponse(
            summary=c.summary(), satellites=satellites_to_proto(c.elements)
        )

    async def GetElements(self, request, context):
        c = self._constellation(request.constellation)
        summary = c.summary()
        if request.known_version and request.known_version == c.elements.version:
            return orbit_pb2.GetElementsResponse(summary=summary, not_modified=True)
        return elements_to_proto(c.elements, summary)

    async def GetPositions(self, request, context):
        c = self._constellation(request.constellation)
        t = self._time(request)
        fields = request.fields
        return await _compute(c.elements.size, positions_frame, c, t, fields.velocity, fields.geodetic)

    async def StreamPositions(self, request, context):
        c = self._constellation(request.constellation)
        step = bounds.check_duration(
            request.step, "step", maximum_s=MAX_STREAM_STEP_S, exclusive_minimum=True
        )
        if request.count <= 0:
            raise InvalidArgument("count must be > 0: the number of frames to send")
        if request.count > MAX_STREAM_FRAMES or request.count * c.elements.size > MAX_STREAM_SAT_STEPS:
            raise InvalidArgument(
                f"{request.count} frames of {c.elements.size} satellites is too much for one stream "
                f"(at most {MAX_STREAM_FRAMES} frames and {MAX_STREAM_SAT_STEPS:.0e} satellite-steps): split the window"
            )
        start = self._time(request, "start")
        bounds.check_unix(
            start + (request.count - 1) * step, "the stream's last frame (start + (count - 1) * step)"
        )
        fields = request.fields
        for k in range(request.count):
            t = start + k * step
            if request.follow_clock:
                wait = self.clock.to_wall(t) - self.clock.wall()
                if wait > 0:
                    await asyncio.sleep(wait)
            yield await _compute(c.elements.size, positions_frame, c, t, fields.velocity, fields.geodetic)

    async def GetLookAngles(self, request, context):
        c = self._constellation(request.constellation)
        lat, lon, alt_km = check_observer(request.observer)
        bounds.check_angle(request.min_elevation_deg, "min_elevation_deg", -90.0, 90.0)
        t = self._time(request)

        def compute():
            state = c.propagator.ecef(t)
            el, az, rng = look_angles(lat, lon, alt_km, state.r_km)
            keep = np.flatnonzero(np.nan_to_num(el, nan=-91.0) >= request.min_elevation_deg)
            order = keep[np.argsort(-el[keep], kind="stable")]
            return order, el[order], az[order], rng[order]

        order, el, az, rng = await _compute(c.elements.size, compute)
        return orbit_pb2.GetLookAnglesResponse(
            at=to_timestamp(t),
            satellite_index=order.tolist(),
            elevation_deg=el.tolist(),
            azimuth_deg=az.tolist(),
            range_km=rng.tolist(),
        )

    async def ListPasses(self, request, context):
        c = self._constellation(request.constellation)
        lat, lon, alt_km = check_observer(request.observer)
        start, end = bounds.check_window(request.window, self.clock.now(), 86_400.0, MAX_PASS_WINDOW_S)
        bounds.check_angle(request.min_elevation_deg, "min_elevation_deg", -90.0, 90.0)
        indices = (
            bounds.check_indices(request.satellite_indices, "satellite_indices", c.elements.size) or None
        )
        min_duration = bounds.check_duration(
            request.min_duration, "min_duration", maximum_s=MAX_PASS_WINDOW_S
        )
        limit = (
            bounds.check_count(
                request.max_passes, "max_passes", 1, DEFAULT_MAX_PASSES, zero_means=f"{DEFAULT_MAX_PASSES}"
            )
            or DEFAULT_MAX_PASSES
        )

        def compute():
            with as_invalid_argument():
                return find_passes(
                    c.propagator,
                    lat,
                    lon,
                    alt_km,
                    start,
                    end,
                    request.min_elevation_deg,
                    min_duration,
                    indices,
                )

        passes = await asyncio.to_thread(compute)
        names = c.elements.names
        return orbit_pb2.ListPassesResponse(
            passes=[pass_to_proto(p, names) for p in passes[:limit]], truncated=len(passes) > limit
        )


class OrbitApp(ServiceApp):
    name = "orbit"
    service_names = (service_full_name(orbit_pb2, "OrbitService"),)

    def __init__(self, catalog: Catalog, clock: EmulationClock) -> None:
        self.servicer = OrbitServicer(catalog, clock)

    def register(self, server: grpc.aio.Server) -> None:
        orbit_pb2_grpc.add_OrbitServiceServicer_to_server(self.servicer, server)


def build(settings: Settings, clock: EmulationClock) -> OrbitApp:
    return OrbitApp(Catalog(settings.scenario), clock)


__all__ = ["build", "OrbitApp", "OrbitServicer", "positions_frame"]

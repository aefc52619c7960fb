"""Links core values (routes, hops, timelines, summaries, the ground segment) as protobuf messages."""

from __future__ import annotations

import numpy as np
from google.protobuf import duration_pb2

from skyhaul.contract.link_model_codec import (
    replay_to_proto,
    terminal_model_from_proto,
    terminal_model_to_proto,
)
from skyhaul.core import routing
from skyhaul.core.ground import GroundSegment
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.core.summary import TimelineSummary
from skyhaul.core.timeline import TimelineChunk
from skyhaul.runtime.clock import to_timestamp
from skyhaul.runtime.scenario import Scenario
from skyhaul.v1 import common_pb2, links_pb2, route_pb2

SEGMENTS = {
    routing.UPLINK: route_pb2.SEGMENT_KIND_UPLINK,
    routing.ISL: route_pb2.SEGMENT_KIND_ISL,
    routing.DOWNLINK: route_pb2.SEGMENT_KIND_DOWNLINK,
    routing.FIBRE: route_pb2.SEGMENT_KIND_FIBRE,
}
MODES = {"slotted": links_pb2.SCHEDULER_MODE_SLOTTED, "continuous": links_pb2.SCHEDULER_MODE_CONTINUOUS}
POLICIES = {
    "highest-elevation": links_pb2.ASSIGNMENT_POLICY_HIGHEST_ELEVATION,
    "longest-visibility": links_pb2.ASSIGNMENT_POLICY_LONGEST_VISIBILITY,
    "least-loaded": links_pb2.ASSIGNMENT_POLICY_LEAST_LOADED,
    "shortest-path": links_pb2.ASSIGNMENT_POLICY_SHORTEST_PATH,
}
ISL_MODES = {
    "none": links_pb2.ISL_MODE_NONE,
    "+grid": links_pb2.ISL_MODE_PLUS_GRID,
    "nearest": links_pb2.ISL_MODE_NEAREST,
}


def sat_label(index: int) -> str:
    """How routes name a satellite: its index in the constellation."""
    return f"sat-{index}"


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(round(seconds * 1e9)))
    return d


def duration_seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos * 1e-9


def slot_to_proto(index: int, start_unix: float, end_unix: float) -> route_pb2.Slot:
    return route_pb2.Slot(index=int(index), start=to_timestamp(start_unix), end=to_timestamp(end_unix))


def hop_to_proto(hop: routing.Hop) -> route_pb2.Hop:
    return route_pb2.Hop(
        segment=SEGMENTS[hop.kind],
        from_id=hop.src,
        to_id=hop.dst,
        distance_km=hop.distance_km,
        delay_ms=hop.delay_s * 1e3,
    )


def route_to_proto(
    route: routing.Route,
    slot: route_pb2.Slot,
    sample_times: np.ndarray,
    sample_delay_s: np.ndarray,
    sample_step_s: float,
    handover_stall_ms: float,
) -> route_pb2.Route:
    """A held route at ``route.t_unix`` with its delay samples across the slot, each flagged
    available or not (an unavailable sample stays NaN for readers that predate the flag)."""
    message = route_pb2.Route(
        data_center_id=route.terminal_id,
        region_id=route.region_id,
        at=to_timestamp(route.t_unix),
        available=route.available,
        hops=[hop_to_proto(h) for h in route.hops],
        one_way_delay_ms=route.one_way_delay_s * 1e3,
        capacity_up_mbps=route.capacity_up_mbps,
        capacity_down_mbps=route.capacity_down_mbps,
        slot=slot,
        # The terminal's satellite while it carries the route; -1 in an outage (the hops still show
        # the held path, along which the samples are taken).
        first_satellite_index=route.first_satellite if route.available else -1,
        gateway_id=route.gateway_id or "",
        samples_step=duration(sample_step_s),
        delay_samples_ms=(np.asarray(sample_delay_s, dtype=float) * 1e3).tolist(),
        sample_available=np.isfinite(np.asarray(sample_delay_s, dtype=float)).tolist(),
    )
    if len(sample_times):
        message.samples_start.CopyFrom(to_timestamp(float(sample_times[0])))
    if route.handover and handover_stall_ms > 0:
        message.handover_stall.CopyFrom(duration(handover_stall_ms / 1e3))
    return message


def path_key(route: route_pb2.Route) -> tuple[str, ...]:
    """The nodes a route passes through, to tell a new path from new samples on the same one."""
    if not route.hops:
        return ()
    return (route.hops[0].from_id, *(h.to_id for h in route.hops))


def assignment(
    ground_id: str, kind: int, satellite: int, elevation_deg: float, azimuth_deg: float, range_km: float
) -> route_pb2.Assignment:
    return route_pb2.Assignment(
        ground_id=ground_id,
        kind=kind,
        satellite_index=int(satellite),
        elevation_deg=float(elevation_deg),
        azimuth_deg=float(azimuth_deg),
        range_km=float(range_km),
    )


def chunk_to_proto(chunk: TimelineChunk, step_s: float) -> links_pb2.RouteTimelineChunk:
    """One single-route chunk (1-D arrays) of a prediction."""
    return links_pb2.RouteTimelineChunk(
        start=to_timestamp(float(chunk.t_unix[0])),
        step=duration(step_s),
        rtt_ms=chunk.rtt_ms.tolist(),
        capacity_up_mbps=chunk.capacity_up_mbps.tolist(),
        capacity_down_mbps=chunk.capacity_down_mbps.tolist(),
        satellite_index=chunk.first_sat.astype(np.int32).tolist(),
        available=np.isfinite(chunk.rtt_ms).tolist(),
        floor_rtt_ms=(chunk.rtt_ms if chunk.floor_rtt_ms is None else chunk.floor_rtt_ms).tolist(),
        loss_probability=(
            np.zeros(chunk.rtt_ms.shape) if chunk.loss_probability is None else chunk.loss_probability
        ).tolist(),
    )


def summary_to_proto(
    summary: TimelineSummary,
    compute_seconds: float,
    *,
    expected_loss: float = 0.0,
    floor_rtt_p50_ms: float = float("nan"),
    link_model: str = "propagation",
) -> links_pb2.RoutePredictionSummary:
    return links_pb2.RoutePredictionSummary(
        expected_loss=expected_loss,
        floor_rtt_p50_ms=floor_rtt_p50_ms,
        link_model=link_model,
        samples=summary.samples,
        availability=summary.availability,
        rtt_min_ms=summary.rtt_ms_min,
        rtt_p50_ms=summary.rtt_ms_p50,
        rtt_p95_ms=summary.rtt_ms_p95,
        rtt_max_ms=summary.rtt_ms_max,
        handovers=summary.handovers,
        outages=[
            common_pb2.TimeWindow(start=to_timestamp(a), end=to_timestamp(b)) for a, b in summary.outages
        ],
        longest_outage_s=summary.longest_outage_s,
        compute_seconds=compute_seconds,
        outage_count=len(summary.outages),
    )


def scheduler_to_proto(config: SchedulerConfig) -> links_pb2.SchedulerConfig:
    return links_pb2.SchedulerConfig(
        mode=MODES[config.mode],
        slot_interval=duration(config.slot_interval_s),
        slot_offset=duration(config.slot_offset_s),
        policy=POLICIES[config.policy],
        isl_mode=ISL_MODES[config.isl],
        handover_stall=duration(config.handover_stall_ms / 1e3),
        sample_step=duration(config.sample_step_s),
    )


def _geo(lat: float, lon: float, alt_m: float) -> common_pb2.GeoPoint:
    return common_pb2.GeoPoint(latitude_deg=lat, longitude_deg=lon, altitude_m=alt_m)


def ground_segment_to_proto(
    scenario: Scenario, config: SchedulerConfig, constellation: str, ground: GroundSegment | None = None
) -> links_pb2.GetGroundSegmentResponse:
    """The ground segment as the scenario gives it; with ``ground`` (the core segment the links
    service routes over), its gateways (e.g. those of a ground preset) instead of the scenario's."""
    response = links_pb2.GetGroundSegmentResponse(
        scheduler=scheduler_to_proto(config), constellation=constellation
    )
    for r in scenario.regions:
        core_gateways = [g for g in ground.gateways if g.region_id == r.id] if ground is not None else None
        response.regions.append(
            links_pb2.Region(
                id=r.id,
                location=_geo(r.location.lat, r.location.lon, r.location.alt_m),
                gateway_ids=[g.id for g in (r.gateways if core_gateways is None else core_gateways)],
            )
        )
        if core_gateways is not None:
            for g in core_gateways:
                response.gateways.append(
                    links_pb2.Gateway(
                        id=g.id,
                        region_id=r.id,
                        position=_geo(g.lat_deg, g.lon_deg, g.alt_km * 1000.0),
                        min_elevation_deg=g.min_elevation_deg,
                        capacity_mbps=g.capacity_mbps,
                        fibre_route_factor=g.fibre_route_factor,
                    )
                )
            continue
        for g in r.gateways:
            response.gateways.append(
                links_pb2.Gateway(
                    id=g.id,
                    region_id=r.id,
                    position=_geo(g.location.lat, g.location.lon, g.location.alt_m),
                    min_elevation_deg=g.min_elevation_deg,
                    capacity_mbps=g.capacity_mbps,
                    fibre_route_factor=g.fibre_route_factor,
                )
            )
    for dc in scenario.data_centers:
        start = dc.start_location
        response.terminals.append(
            links_pb2.Terminal(
                data_center_id=dc.id,
                position=_geo(start.lat, start.lon, start.alt_m),
                track=[
                    common_pb2.TrackPoint(
                        offset_s=p.t_s, position=_geo(p.location.lat, p.location.lon, p.location.alt_m)
                    )
                    for p in dc.track
                ],
                min_elevation_deg=dc.terminal.min_elevation_deg,
                uplink_mbps=dc.terminal.uplink_mbps,
                downlink_mbps=dc.terminal.downlink_mbps,
                home_region_id=dc.home_region,
            )
        )
    return response


__all__ = [
    "assignment",
    "chunk_to_proto",
    "duration",
    "duration_seconds",
    "ground_segment_to_proto",
    "hop_to_proto",
    "path_key",
    "route_to_proto",
    "sat_label",
    "scheduler_to_proto",
    "slot_to_proto",
    "summary_to_proto",
    "terminal_model_from_proto",
    "terminal_model_to_proto",
    "replay_to_proto",
]

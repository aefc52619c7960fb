"""The scenario's ground segment and scheduler section as the links core's plain values."""

from __future__ import annotations

from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.core.scheduler import SchedulerConfig
from skyhaul.runtime.scenario import DataCenterSpec, Scenario, SchedulerSpec


def terminal(dc: DataCenterSpec, epoch_unix: float) -> Terminal:
    """A data center's dish: fixed, or on its track (track times are offsets from the scenario epoch)."""
    rates = {
        "min_elevation_deg": dc.terminal.min_elevation_deg,
        "uplink_mbps": dc.terminal.uplink_mbps,
        "downlink_mbps": dc.terminal.downlink_mbps,
        "home_region_id": dc.home_region,
    }
    if dc.track:
        # The core keeps one altitude per terminal: the track's first point's.
        return Terminal.moving(
            dc.id,
            [(p.t_s, p.location.lat, p.location.lon) for p in dc.track],
            epoch_unix=epoch_unix,
            alt_km=dc.track[0].location.alt_m / 1000.0,
            **rates,
        )
    loc = dc.location
    assert loc is not None  # the scenario loader guarantees a location or a track
    return Terminal(dc.id, loc.lat, loc.lon, loc.alt_m / 1000.0, **rates)


def ground_segment(scenario: Scenario) -> GroundSegment:
    """Terminals (the data centers, in scenario order), gateways and regions."""
    gateways = [
        Gateway(
            g.id,
            r.id,
            g.location.lat,
            g.location.lon,
            g.location.alt_m / 1000.0,
            g.min_elevation_deg,
            g.capacity_mbps,
            g.fibre_route_factor,
        )
        for r in scenario.regions
        for g in r.gateways
    ]
    regions = [Region(r.id, r.location.lat, r.location.lon) for r in scenario.regions]
    terminals = [terminal(dc, scenario.epoch_unix) for dc in scenario.data_centers]
    return GroundSegment(tuple(terminals), tuple(gateways), tuple(regions))


def scheduler_config(spec: SchedulerSpec) -> SchedulerConfig:
    return SchedulerConfig(
        mode=spec.mode,
        slot_interval_s=spec.slot_interval_s,
        slot_offset_s=spec.slot_offset_s,
        policy=spec.policy,
        isl=spec.isl,
        handover_stall_ms=spec.handover_stall_ms,
        sample_step_s=spec.sample_step_s,
        beam_capacity_mbps=spec.beam_capacity_mbps,
    )


def gateway_regions(scenario: Scenario) -> dict[str, str]:
    """Gateway id -> its region id."""
    return {g.id: r.id for r in scenario.regions for g in r.gateways}


__all__ = ["gateway_regions", "ground_segment", "scheduler_config", "terminal"]

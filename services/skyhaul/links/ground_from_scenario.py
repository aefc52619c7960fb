"""The scenario's data centers, regions and gateways as the core's ``GroundSegment``.

The scenario's ``scheduler:`` section already parses into core's ``SchedulerConfig``
(``scenario.scheduler``); only the ground needs converting (geodetic metres to km, track offsets
to Unix times).
"""

from __future__ import annotations

from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal
from skyhaul.runtime.scenario import DataCenterSpec, Scenario


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
    location = dc.location
    assert location is not None  # the scenario loader guarantees a location or a track
    return Terminal(dc.id, location.lat, location.lon, location.alt_m / 1000.0, **rates)


def ground_segment(scenario: Scenario) -> GroundSegment:
    """Terminals (the data centers, in scenario order), gateways and regions."""
    gateways = [
        Gateway(
            gateway.id,
            region.id,
            gateway.location.lat,
            gateway.location.lon,
            gateway.location.alt_m / 1000.0,
            gateway.min_elevation_deg,
            gateway.capacity_mbps,
            gateway.fibre_route_factor,
        )
        for region in scenario.regions
        for gateway in region.gateways
    ]
    regions = [Region(region.id, region.location.lat, region.location.lon) for region in scenario.regions]
    terminals = [terminal(dc, scenario.epoch_unix) for dc in scenario.data_centers]
    return GroundSegment(tuple(terminals), tuple(gateways), tuple(regions))


def gateway_regions(scenario: Scenario) -> dict[str, str]:
    """Gateway id -> its region id."""
    return {gateway.id: region.id for region in scenario.regions for gateway in region.gateways}


__all__ = ["gateway_regions", "ground_segment", "terminal"]

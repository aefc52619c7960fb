"""The scenario's data centers, regions and gateways as the core's ``GroundSegment``, and the
``LinkModel`` options of its ``link_model:`` section.

The scenario's ``scheduler:`` section already parses into core's ``SchedulerConfig``
(``scenario.scheduler``); only the ground needs converting (geodetic metres to km, track offsets
to Unix times).

With ``link_model.ground: starlink-2023`` a region that lists no gateways of its own gets, instead
of its default gateway, the preset's operating gateways wired to the PoPs its data centers are
homed to (``core.starlink_ground.home_pop``, or the data center's ``pop:``); each such gateway's
fibre runs gateway -> PoP -> region (great circles x ``gateway_pop_route_factor`` and
``backbone_route_factor``), expressed as the gateway's fibre route factor. A region with its own
gateways keeps them.
"""

from __future__ import annotations

import re

import numpy as np

from skyhaul.core.ground import Gateway, GroundSegment, Region, Terminal, great_circle_km
from skyhaul.core.latency import ReplayTrace
from skyhaul.core.starlink_ground import GroundPreset, GroundSite, home_pop
from skyhaul.runtime.linkdata import load_replay_trace, starlink_ground
from skyhaul.runtime.scenario import DataCenterSpec, RegionSpec, Scenario


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


def data_center_pop(dc: DataCenterSpec, preset: GroundPreset) -> GroundSite:
    """The PoP a data center is homed to: its ``pop:``, or the operator's rule from where it starts."""
    start = dc.start_location
    return home_pop(start.lat, start.lon, preset, dc.pop)


def _own_gateways(scenario: Scenario, k: int) -> bool:
    regions = scenario.raw.get("regions") if isinstance(scenario.raw, dict) else None
    try:
        return bool(regions[k].get("gateways"))  # type: ignore[index,union-attr]
    except (TypeError, IndexError, AttributeError):
        return True


def _slug(name: str) -> str:
    return "gw-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _preset_gateways(scenario: Scenario, region: RegionSpec, preset: GroundPreset) -> list[Gateway]:
    params = scenario.link_model.params
    template = region.gateways[0]
    pops = {data_center_pop(dc, preset).name for dc in scenario.data_centers if dc.home_region == region.id}
    out: list[Gateway] = []
    for pop_name in sorted(pops):
        pop = preset.pop(pop_name)
        to_region = float(great_circle_km(pop.lat_deg, pop.lon_deg, region.location.lat, region.location.lon))
        for site in preset.gateways_of(pop_name):
            to_pop = float(great_circle_km(site.lat_deg, site.lon_deg, pop.lat_deg, pop.lon_deg))
            fibre_km = to_pop * params.gateway_pop_route_factor + to_region * params.backbone_route_factor
            direct = float(
                great_circle_km(site.lat_deg, site.lon_deg, region.location.lat, region.location.lon)
            )
            factor = max(1.0, fibre_km / max(direct, 1e-3))
            out.append(
                Gateway(
                    f"{_slug(site.name)}-{region.id}",
                    region.id,
                    site.lat_deg,
                    site.lon_deg,
                    0.0,
                    template.min_elevation_deg,
                    template.capacity_mbps,
                    factor,
                )
            )
    return out


def ground_segment(scenario: Scenario) -> GroundSegment:
    """Terminals (the data centers, in scenario order), gateways and regions."""
    preset = starlink_ground() if scenario.link_model.ground == "starlink-2023" else None
    gateways: list[Gateway] = []
    for k, region in enumerate(scenario.regions):
        if preset is not None and not _own_gateways(scenario, k):
            from_preset = _preset_gateways(scenario, region, preset)
            if from_preset:
                gateways.extend(from_preset)
                continue
        gateways.extend(
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
            for gateway in region.gateways
        )
    regions = [Region(region.id, region.location.lat, region.location.lon) for region in scenario.regions]
    terminals = [terminal(dc, scenario.epoch_unix) for dc in scenario.data_centers]
    return GroundSegment(tuple(terminals), tuple(gateways), tuple(regions))


def gateway_regions(scenario: Scenario | GroundSegment) -> dict[str, str]:
    """Gateway id -> its region id (of a ground segment: with the preset's gateways)."""
    if isinstance(scenario, GroundSegment):
        return {gateway.id: gateway.region_id for gateway in scenario.gateways}
    return {gateway.id: region.id for region in scenario.regions for gateway in region.gateways}


def replays(scenario: Scenario) -> dict[str, ReplayTrace]:
    """The data centers whose link replays a recorded trace (scenario ``replay:``)."""
    out = {}
    interval = scenario.scheduler.slot_interval_s
    for dc in scenario.data_centers:
        spec = dc.replay
        if spec is None:
            continue
        trace = load_replay_trace(spec.file, spec.format)
        out[dc.id] = ReplayTrace.build(
            trace.t_unix,
            trace.rtt_ms,
            epoch_unix=scenario.epoch_unix,
            shift_s=spec.shift_s,
            loop=spec.loop,
            slot_interval_s=interval,
            source=spec.file.rsplit("/", 1)[-1],
        )
    return out


def model_options(scenario: Scenario) -> dict:
    """``LinkModel`` keyword options from the scenario's ``link_model:`` section."""
    spec = scenario.link_model
    masks = [dc.terminal.min_elevation_deg for dc in scenario.data_centers] or [25.0]
    return {
        "latency": spec.params,
        "latency_seed": spec.seed,
        "replays": replays(scenario),
        "gsl_rule": spec.gsl(float(np.min(masks))),
        "constellation": scenario.constellation.label,
        "min_satellite_altitude_km": spec.min_satellite_altitude_km,
    }


__all__ = [
    "data_center_pop",
    "gateway_regions",
    "ground_segment",
    "model_options",
    "replays",
    "terminal",
]

"""The scenario: one YAML file that every service reads, validated into frozen dataclasses.

Every error names the field by its path (``data_centers[0].location.lat: 91 is outside [-90, 90]``)
so a person can fix the file without reading code. Unknown keys are errors: a typo must not be
silently ignored.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any

import yaml

from skyhaul.core.constellations import ShellSpec
from skyhaul.core.ground import Gateway, Terminal
from skyhaul.core.gsl import GslRule
from skyhaul.core.latency import LatencyParams, PathProfile, default_params
from skyhaul.core.scheduler import ISL_MODES, MODES, POLICIES, SchedulerConfig


class ScenarioError(ValueError):
    """A scenario that cannot be used. The message starts with the offending field's path."""


# City-level coordinates of a few Azure regions (from the Green Software Foundation's
# carbon-aware-sdk region list), so a scenario can say `preset: westus2`.
AZURE_REGIONS: dict[str, tuple[str, float, float]] = {
    "australiaeast": ("Australia East", -33.86, 151.2094),
    "brazilsouth": ("Brazil South", -23.55, -46.633),
    "canadacentral": ("Canada Central", 43.653, -79.383),
    "centralindia": ("Central India", 18.5822, 73.9197),
    "centralus": ("Central US", 41.5908, -93.6208),
    "eastus": ("East US", 37.3719, -79.8164),
    "eastus2": ("East US 2", 36.6681, -78.3889),
    "japaneast": ("Japan East", 35.68, 139.77),
    "northeurope": ("North Europe", 53.3478, -6.2597),
    "norwayeast": ("Norway East", 59.913868, 10.752245),
    "southafricanorth": ("South Africa North", -25.73134, 28.21837),
    "southcentralus": ("South Central US", 29.4167, -98.5),
    "southeastasia": ("Southeast Asia", 1.283, 103.833),
    "swedencentral": ("Sweden Central", 60.67488, 17.14127),
    "uksouth": ("UK South", 50.941, -0.799),
    "westeurope": ("West Europe", 52.3667, 4.9),
    "westus": ("West US", 37.783, -122.417),
    "westus2": ("West US 2", 47.233, -119.852),
}

PRIORITIES = ("telemetry", "interactive", "bulk")


@dataclass(frozen=True)
class GeoSpec:
    lat: float
    lon: float
    alt_m: float = 0.0


@dataclass(frozen=True)
class ConstellationSpec:
    preset: str | None = None
    tle_file: str | None = None
    name_filter: str | None = None
    skip_invalid: bool = False
    shells: tuple[ShellSpec, ...] = ()

    @property
    def label(self) -> str:
        if self.preset:
            return self.preset
        if self.tle_file:
            return Path(self.tle_file).stem
        return "custom-" + "-".join(s.name for s in self.shells)


@dataclass(frozen=True)
class GroundMasks:
    """The ``scheduler:`` section's default minimum elevations, for terminals and gateways that
    give none of their own (defaults: core ``Terminal``'s and ``Gateway``'s)."""

    terminal_min_elevation_deg: float = Terminal.min_elevation_deg
    gateway_min_elevation_deg: float = Gateway.min_elevation_deg


@dataclass(frozen=True)
class GatewaySpec:
    """A gateway as the scenario gives it (defaults are filled in by the parser from core ``Gateway``)."""

    id: str
    location: GeoSpec
    min_elevation_deg: float
    capacity_mbps: float
    fibre_route_factor: float


@dataclass(frozen=True)
class RegionSpec:
    id: str
    display_name: str
    location: GeoSpec
    gateways: tuple[GatewaySpec, ...]


@dataclass(frozen=True)
class TerminalSpec:
    """A data center's dish as the scenario gives it (defaults from core ``Terminal``)."""

    min_elevation_deg: float
    uplink_mbps: float
    downlink_mbps: float


@dataclass(frozen=True)
class TrackPointSpec:
    t_s: float  # seconds after the scenario epoch
    location: GeoSpec


@dataclass(frozen=True)
class WorkloadSpec:
    objects: int = 0
    size_bytes: int = 262_144
    interval_s: float = 60.0
    priority: str = "bulk"
    key_prefix: str = "sensor/"


@dataclass(frozen=True)
class SyncSpec:
    block_size_bytes: int = 1_048_576
    container: str = "mdc-sync"
    bandwidth_share: float = 1.0  # fraction of the link the sync worker may use


@dataclass(frozen=True)
class DataCenterSpec:
    id: str
    home_region: str
    location: GeoSpec | None
    track: tuple[TrackPointSpec, ...]
    terminal: TerminalSpec
    workload: WorkloadSpec
    sync: SyncSpec
    storage_bytes: int = 100 * 2**30
    # The data center's link (the ``link_model`` section's per-data-center keys, see below).
    pop: str | None = None
    replay: ReplaySpec | None = None

    @property
    def start_location(self) -> GeoSpec:
        return self.location if self.location is not None else self.track[0].location


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    epoch_unix: float
    speed: float
    duration_s: float | None
    constellation: ConstellationSpec
    scheduler: SchedulerConfig
    regions: tuple[RegionSpec, ...]
    data_centers: tuple[DataCenterSpec, ...]
    source: str = "<built-in>"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    link_model: LinkModelSpec = field(default_factory=lambda: LinkModelSpec())

    def region(self, region_id: str) -> RegionSpec:
        for r in self.regions:
            if r.id == region_id:
                return r
        raise KeyError(region_id)

    def data_center(self, dc_id: str) -> DataCenterSpec:
        for d in self.data_centers:
            if d.id == dc_id:
                return d
        raise KeyError(dc_id)


class _Fields:
    """Reads one mapping of the YAML, tracking the path and the keys it consumed."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{path or 'scenario'}: expected a mapping, got {type(data).__name__}")
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.raw(key)
        if value is None:
            if required:
                raise ScenarioError(f"{self.at(key)}: required")
            return default
        if not isinstance(value, str) or not value.strip():
            raise ScenarioError(f"{self.at(key)}: expected a non-empty string, got {value!r}")
        return value

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        lo: float = -math.inf,
        hi: float = math.inf,
        lo_open: bool = False,
        required: bool = False,
    ) -> float:
        value = self.raw(key)
        if value is None:
            if required or default is None:
                raise ScenarioError(f"{self.at(key)}: required")
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ScenarioError(f"{self.at(key)}: expected a number, got {value!r}")
        if value < lo or value > hi or (lo_open and value == lo):
            low = "(" if lo_open else "["
            raise ScenarioError(f"{self.at(key)}: {value} is outside {low}{lo:g}, {hi:g}]")
        return float(value)

    def integer(self, key: str, default: int | None = None, *, lo: int = 0, hi: int = 2**62) -> int:
        value = self.raw(key)
        if value is None:
            if default is None:
                raise ScenarioError(f"{self.at(key)}: required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{self.at(key)}: expected a whole number, got {value!r}")
        if value < lo or value > hi:
            raise ScenarioError(f"{self.at(key)}: {value} is outside [{lo}, {hi}]")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.raw(key, default)
        if value not in options:
            raise ScenarioError(f"{self.at(key)}: {value!r} is not one of {', '.join(options)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise ScenarioError(f"{self.at(key)}: expected true or false, got {value!r}")
        return value

    def items(self, key: str, *, required: bool = False) -> list[tuple[str, Any]]:
        value = self.raw(key)
        if value is None:
            if required:
                raise ScenarioError(f"{self.at(key)}: required (a list)")
            return []
        if not isinstance(value, list):
            raise ScenarioError(f"{self.at(key)}: expected a list, got {type(value).__name__}")
        return [(f"{self.at(key)}[{i}]", v) for i, v in enumerate(value)]

    def sub(self, key: str) -> _Fields:
        return _Fields(self.raw(key, {}) or {}, self.at(key))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise ScenarioError(f"{self.at(str(unknown[0]))}: unknown key (known here: {known})")


def _geo(f: _Fields) -> GeoSpec:
    geo = GeoSpec(
        lat=f.number("lat", lo=-90, hi=90, required=True),
        lon=f.number("lon", lo=-180, hi=180, required=True),
        alt_m=f.number("alt_m", 0.0, lo=-500, hi=100_000),
    )
    f.done()
    return geo


def _epoch(value: Any, path: str) -> float:
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ScenarioError(
                f"{path}: {value!r} is not an ISO 8601 time like 2020-10-30T00:00:00Z"
            ) from None
    else:
        raise ScenarioError(f"{path}: expected an ISO 8601 time like 2020-10-30T00:00:00Z, got {value!r}")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def _unique(ids: list[str], path: str) -> None:
    seen: set[str] = set()
    for i, ident in enumerate(ids):
        if ident in seen:
            raise ScenarioError(f"{path}[{i}].id: {ident!r} is used twice")
        seen.add(ident)


def _identifier(f: _Fields, key: str = "id") -> str:
    value = f.string(key, required=True)
    assert value is not None
    ok = value.replace("-", "").isalnum() and value == value.lower() and len(value) <= 40
    if not ok or value.startswith("-") or value.endswith("-"):
        raise ScenarioError(
            f"{f.at(key)}: {value!r} must be lowercase letters, digits and inner hyphens, at most 40 "
            "characters (it names Kubernetes objects and Redis keys)"
        )
    return value


def _constellation(f: _Fields, base_dir: Path | None) -> ConstellationSpec:
    preset = f.string("preset")
    tle_file = f.string("tle_file")
    name_filter = f.string("name_filter")
    skip_invalid = f.boolean("skip_invalid", False)
    shells = []
    for path, item in f.items("shells"):
        s = _Fields(item, path)
        shells.append(
            ShellSpec(
                name=s.string("name", f"shell{len(shells)}") or "",
                planes=s.integer("planes", lo=1, hi=1000),
                sats_per_plane=s.integer("sats_per_plane", lo=1, hi=1000),
                altitude_km=s.number("altitude_km", lo=160, hi=40_000, required=True),
                inclination_deg=s.number("inclination_deg", lo=0, hi=180, required=True),
                phasing=s.integer("phasing", ShellSpec.phasing, lo=0, hi=1000),
            )
        )
        s.done()
    f.done()
    given = [name for name, v in (("preset", preset), ("tle_file", tle_file), ("shells", shells)) if v]
    if len(given) != 1:
        raise ScenarioError(
            f"{f.path}: give exactly one of preset, tle_file, shells (got {', '.join(given) or 'none'})"
        )
    if tle_file and base_dir is not None and not Path(tle_file).is_absolute():
        tle_file = str((base_dir / tle_file).resolve())
    if tle_file and not Path(tle_file).is_file():
        raise ScenarioError(f"{f.at('tle_file')}: no such file: {tle_file}")
    if name_filter and not tle_file:
        raise ScenarioError(f"{f.at('name_filter')}: only applies with tle_file")
    return ConstellationSpec(preset, tle_file, name_filter, skip_invalid, tuple(shells))


def _scheduler(f: _Fields) -> tuple[SchedulerConfig, GroundMasks]:
    """The ``scheduler:`` section: core's ``SchedulerConfig`` (its defaults) and the ground masks."""
    defaults = SchedulerConfig()
    fields = dict(
        mode=f.choice("mode", MODES, defaults.mode),
        slot_interval_s=f.number("slot_interval_s", defaults.slot_interval_s, lo=0, hi=3600, lo_open=True),
        slot_offset_s=f.number("slot_offset_s", defaults.slot_offset_s, lo=0, hi=3600),
        policy=f.choice("policy", POLICIES, defaults.policy),
        isl=f.choice("isl", ISL_MODES, defaults.isl),
        handover_stall_ms=f.number("handover_stall_ms", defaults.handover_stall_ms, lo=0, hi=10_000),
        sample_step_s=f.number("sample_step_s", defaults.sample_step_s, lo=0, hi=60, lo_open=True),
        beam_capacity_mbps=f.number(
            "beam_capacity_mbps", defaults.beam_capacity_mbps, lo=0, hi=1e7, lo_open=True
        ),
    )
    masks = GroundMasks(
        terminal_min_elevation_deg=f.number(
            "terminal_min_elevation_deg", GroundMasks.terminal_min_elevation_deg, lo=0, hi=90
        ),
        gateway_min_elevation_deg=f.number(
            "gateway_min_elevation_deg", GroundMasks.gateway_min_elevation_deg, lo=0, hi=90
        ),
    )
    f.done()
    if fields["slot_offset_s"] >= fields["slot_interval_s"]:
        raise ScenarioError(f"{f.at('slot_offset_s')}: must be smaller than slot_interval_s")
    try:
        config = SchedulerConfig(**fields)
    except ValueError as exc:  # core's checks name the field as "scheduler.<key>: ..."
        raise ScenarioError(str(exc)) from None
    return config, masks


def _region(f: _Fields, masks: GroundMasks) -> RegionSpec:
    rid = _identifier(f)
    preset = f.string("preset")
    display = f.string("display_name")
    if f.has("location"):
        location = _geo(f.sub("location"))
    elif preset or rid in AZURE_REGIONS:
        key = preset or rid
        if key not in AZURE_REGIONS:
            raise ScenarioError(
                f"{f.at('preset')}: unknown region {key!r} (known: {', '.join(sorted(AZURE_REGIONS))})"
            )
        name, lat, lon = AZURE_REGIONS[key]
        location, display = GeoSpec(lat, lon), display or name
    else:
        raise ScenarioError(f"{f.at('location')}: required (or a known Azure region id / preset)")
    gateways = []
    for path, item in f.items("gateways"):
        g = _Fields(item, path)
        gid = _identifier(g)
        gateways.append(
            GatewaySpec(
                id=gid,
                location=GeoSpec(
                    lat=g.number("lat", lo=-90, hi=90, required=True),
                    lon=g.number("lon", lo=-180, hi=180, required=True),
                    alt_m=g.number("alt_m", 0.0, lo=-500, hi=10_000),
                ),
                min_elevation_deg=g.number("min_elevation_deg", masks.gateway_min_elevation_deg, lo=0, hi=90),
                capacity_mbps=g.number("capacity_mbps", Gateway.capacity_mbps, lo=0, hi=1e7, lo_open=True),
                fibre_route_factor=g.number("fibre_route_factor", Gateway.fibre_route_factor, lo=1, hi=10),
            )
        )
        g.done()
    if not gateways:
        # Starlink gateways sit at Azure data centers: one at the region itself by default.
        gateways.append(
            GatewaySpec(
                f"gw-{rid}",
                location,
                masks.gateway_min_elevation_deg,
                Gateway.capacity_mbps,
                Gateway.fibre_route_factor,
            )
        )
    _unique([g.id for g in gateways], f.at("gateways"))
    f.done()
    return RegionSpec(rid, display or rid, location, tuple(gateways))


def _data_center(
    f: _Fields, masks: GroundMasks, region_ids: set[str], base_dir: Path | None = None
) -> DataCenterSpec:
    dcid = _identifier(f)
    home = f.string("home_region", required=True)
    if home not in region_ids:
        raise ScenarioError(
            f"{f.at('home_region')}: {home!r} is not a region of this scenario ({', '.join(sorted(region_ids))})"
        )
    location = _geo(f.sub("location")) if f.has("location") else None
    track = []
    for path, item in f.items("track"):
        t = _Fields(item, path)
        t_s = t.number("t_s", lo=0, required=True)
        geo = GeoSpec(
            lat=t.number("lat", lo=-90, hi=90, required=True),
            lon=t.number("lon", lo=-180, hi=180, required=True),
            alt_m=t.number("alt_m", 0.0, lo=-500, hi=100_000),
        )
        t.done()
        if track and t_s <= track[-1].t_s:
            raise ScenarioError(f"{path}.t_s: track times must increase ({t_s} after {track[-1].t_s})")
        track.append(TrackPointSpec(t_s, geo))
    if (location is None) == (not track):
        raise ScenarioError(f"{f.path}: give exactly one of location, track")
    tf = f.sub("terminal")
    terminal = TerminalSpec(
        min_elevation_deg=tf.number("min_elevation_deg", masks.terminal_min_elevation_deg, lo=0, hi=90),
        uplink_mbps=tf.number("uplink_mbps", Terminal.uplink_mbps, lo=0, hi=1e6, lo_open=True),
        downlink_mbps=tf.number("downlink_mbps", Terminal.downlink_mbps, lo=0, hi=1e6, lo_open=True),
    )
    tf.done()
    wf = f.sub("workload")
    d = WorkloadSpec()
    workload = WorkloadSpec(
        objects=wf.integer("objects", d.objects, lo=0, hi=100_000),
        size_bytes=wf.integer("size_bytes", d.size_bytes, lo=1, hi=2**34),
        interval_s=wf.number("interval_s", d.interval_s, lo=0, hi=86_400, lo_open=True),
        priority=wf.choice("priority", PRIORITIES, d.priority),
        key_prefix=wf.string("key_prefix", d.key_prefix) or d.key_prefix,
    )
    wf.done()
    sf = f.sub("sync")
    ds = SyncSpec()
    sync = SyncSpec(
        block_size_bytes=sf.integer("block_size_bytes", ds.block_size_bytes, lo=4096, hi=64 * 2**20),
        container=sf.string("container", ds.container) or ds.container,
        bandwidth_share=sf.number("bandwidth_share", ds.bandwidth_share, lo=0, hi=1, lo_open=True),
    )
    sf.done()
    storage = f.integer("storage_bytes", DataCenterSpec.storage_bytes, lo=1)
    pop, replay = _data_center_link(f.raw("pop"), f.raw("replay"), f.path, base_dir)
    f.done()
    return DataCenterSpec(dcid, home, location, tuple(track), terminal, workload, sync, storage, pop, replay)


def parse_scenario(data: Any, source: str = "<string>", base_dir: Path | None = None) -> Scenario:
    """Validate a scenario mapping (as loaded from YAML). Raises ScenarioError naming the field."""
    f = _Fields(data, "")
    name = f.string("name", "scenario") or "scenario"
    description = f.raw("description", "") or ""
    if not isinstance(description, str):
        raise ScenarioError(f"description: expected text, got {description!r}")
    epoch = _epoch(f.raw("epoch", "2020-10-30T00:00:00Z"), "epoch")
    speed = f.number("speed", 1.0, lo=0, hi=100_000, lo_open=True)
    duration = f.raw("duration_s")
    if duration is not None:
        duration = f.number("duration_s", lo=0, hi=30 * 86_400, lo_open=True)
    constellation = _constellation(f.sub("constellation"), base_dir)
    scheduler, masks = _scheduler(f.sub("scheduler"))
    regions = [_region(_Fields(item, path), masks) for path, item in f.items("regions", required=True)]
    if not regions:
        raise ScenarioError("regions: at least one region is needed")
    _unique([r.id for r in regions], "regions")
    region_ids = {r.id for r in regions}
    dcs = [
        _data_center(_Fields(item, path), masks, region_ids, base_dir)
        for path, item in f.items("data_centers")
    ]
    _unique([d.id for d in dcs], "data_centers")
    gateway_ids = [g.id for r in regions for g in r.gateways]
    if len(set(gateway_ids)) != len(gateway_ids):
        raise ScenarioError("regions: gateway ids must be unique across regions")
    link_model = _link_model(f.raw("link_model"), constellation, scheduler)
    _check_link_model(link_model, constellation, scheduler, dcs, epoch)
    f.done()
    return Scenario(
        name=name,
        description=description,
        epoch_unix=epoch,
        speed=speed,
        duration_s=duration,
        constellation=constellation,
        scheduler=scheduler,
        regions=tuple(regions),
        data_centers=tuple(dcs),
        source=source,
        raw=dict(data),
        link_model=link_model,
    )


# ------------------------------------------------------------------------------ link model section
#
# ``link_model:`` (top level) and the data centers' ``pop:`` / ``replay:`` keys: what a real terminal
# adds to the space path (skyhaul.core.latency), the GSL rule, the Starlink ground preset, and
# satellites too low to use. Parsed here, self-contained; see docs/link-model.md and docs/scenarios.md.

GROUND_PRESETS = ("starlink-2023",)
REPLAY_FORMATS = ("auto", "ping", "csv", "dish")
GSL_RULES = ("elevation", "slant-range")
# Catalogues carry re-entering and orbit-raising satellites; Walker shells fly where they are built.
CATALOGUE_MIN_ALTITUDE_KM = 300.0


@dataclass(frozen=True)
class ReplaySpec:
    """A data center's link driven by a recorded trace instead of the model.

    Trace time tau maps to scenario time tau + shift_s; with ``loop`` the trace repeats with a period
    of its span rounded up to whole slots (so its slot phase is kept)."""

    file: str
    format: str = "auto"
    loop: bool = True
    shift_s: float | None = None  # None: the whole number of slots that brings the trace to the epoch


@dataclass(frozen=True)
class LinkModelSpec:
    """The ``link_model:`` section. ``params.mode`` is ``calibrated`` or ``propagation``."""

    params: LatencyParams = field(default_factory=lambda: default_params(""))
    seed: int = 0
    gsl_rule: str = "elevation"
    max_gsl_range_km: float | None = None
    ground: str | None = None
    min_satellite_altitude_km: float = 0.0

    def gsl(self, min_elevation_deg: float) -> GslRule:
        """The GSL rule of a ground node with mask ``min_elevation_deg``."""
        if self.gsl_rule == "slant-range":
            return GslRule("slant-range", min_elevation_deg, self.max_gsl_range_km)
        return GslRule("elevation", min_elevation_deg)


# The section's file format as JSON Schema (draft 7) fragments, for a schema-driven validator to
# plug in: the top-level ``link_model`` property and the data centers' ``pop`` / ``replay``.
_PROFILE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {name: {"type": "number", "minimum": 0} for name in PathProfile.__dataclass_fields__},
}
LINK_MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "what a real terminal adds to the space path, GSL rule, ground preset (docs/link-model.md)",
    "additionalProperties": False,
    "properties": {
        "mode": {"enum": ["calibrated", "propagation"]},
        "seed": {"type": "integer", "minimum": 0},
        "bent_pipe": _PROFILE_SCHEMA,
        "laser": _PROFILE_SCHEMA,
        "gateway_pop_route_factor": {"type": "number", "minimum": 1, "maximum": 10},
        "backbone_route_factor": {"type": "number", "minimum": 1, "maximum": 10},
        "gsl_rule": {"enum": list(GSL_RULES)},
        "max_gsl_range_km": {"type": "number", "exclusiveMinimum": 0, "maximum": 100_000},
        "ground": {"enum": list(GROUND_PRESETS)},
        "min_satellite_altitude_km": {"type": "number", "minimum": 0, "maximum": 40_000},
    },
}
DATA_CENTER_LINK_PROPERTIES: dict[str, Any] = {
    "pop": {"type": "string", "minLength": 1, "description": "the PoP the terminal is homed to"},
    "replay": {
        "type": "object",
        "additionalProperties": False,
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "minLength": 1},
            "format": {"enum": list(REPLAY_FORMATS)},
            "loop": {"type": "boolean"},
            "shift_s": {"type": "number"},
        },
    },
}


def _section(value: Any, path: str, known) -> Mapping[str, Any]:
    """A mapping of this section (None = empty); unknown keys are errors."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{path}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(map(str, value)) - set(known))
    if unknown:
        raise ScenarioError(f"{path}.{unknown[0]}: unknown key (known here: {', '.join(sorted(known))})")
    return value


def _section_number(
    data: Mapping[str, Any], key: str, path: str, default, lo=-math.inf, hi=math.inf
) -> float:
    value = data.get(key, default)
    if value is None:
        raise ScenarioError(f"{path}.{key}: required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(f"{path}.{key}: expected a number, got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{path}.{key}: {value} is outside [{lo:g}, {hi:g}]")
    return float(value)


def _section_choice(data: Mapping[str, Any], key: str, path: str, options, default):
    value = data.get(key, default)
    if value is not None and value not in options:
        raise ScenarioError(f"{path}.{key}: {value!r} is not one of {', '.join(options)}")
    return value


def _path_profile(value: Any, path: str, base: PathProfile) -> PathProfile:
    data = _section(value, path, PathProfile.__dataclass_fields__)
    values = {name: _section_number(data, name, path, None, lo=0) for name in data}
    try:
        return dataclasses_replace(base, **values)
    except ValueError as exc:  # core names the parameter
        raise ScenarioError(f"{path}: {exc}") from None


def _link_model(
    value: Any, constellation: ConstellationSpec, scheduler: SchedulerConfig, path: str = "link_model"
) -> LinkModelSpec:
    """The ``link_model:`` section. Defaults: Starlink constellations (preset or catalogue named
    starlink*) get the calibrated model, others the propagation floor (``core.latency.default_params``)."""
    data = _section(value, path, LINK_MODEL_SCHEMA["properties"])
    base = default_params(constellation.label)
    mode = _section_choice(data, "mode", path, ("calibrated", "propagation"), base.mode)
    if mode == "calibrated" and base.mode == "propagation":
        # No fitted defaults for this constellation: calibrated means "the profiles given here".
        base = LatencyParams(mode="calibrated", source="scenario link_model")
    try:
        params = LatencyParams(
            mode=mode,
            bent_pipe=_path_profile(data.get("bent_pipe"), f"{path}.bent_pipe", base.bent_pipe),
            laser=_path_profile(data.get("laser"), f"{path}.laser", base.laser),
            gateway_pop_route_factor=_section_number(
                data, "gateway_pop_route_factor", path, base.gateway_pop_route_factor, 1, 10
            ),
            backbone_route_factor=_section_number(
                data, "backbone_route_factor", path, base.backbone_route_factor, 1, 10
            ),
            slot_interval_s=scheduler.slot_interval_s,
            slot_offset_s=scheduler.slot_offset_s,
            source=base.source,
        )
    except ValueError as exc:
        if isinstance(exc, ScenarioError):
            raise
        raise ScenarioError(f"{path}: {exc}") from None
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ScenarioError(f"{path}.seed: expected a whole number >= 0, got {seed!r}")
    rule = _section_choice(data, "gsl_rule", path, GSL_RULES, "elevation")
    max_range = None
    if rule == "slant-range":
        max_range = _section_number(data, "max_gsl_range_km", path, None, 1e-9, 100_000)
    elif "max_gsl_range_km" in data:
        raise ScenarioError(f"{path}.max_gsl_range_km: only applies with gsl_rule: slant-range")
    ground = _section_choice(data, "ground", path, GROUND_PRESETS, None)
    default_floor = CATALOGUE_MIN_ALTITUDE_KM if constellation.tle_file else 0.0
    min_alt = _section_number(data, "min_satellite_altitude_km", path, default_floor, 0, 40_000)
    return LinkModelSpec(params, seed, rule, max_range, ground, min_alt)


def _data_center_link(
    pop: Any, replay: Any, path: str, base_dir: Path | None
) -> tuple[str | None, ReplaySpec | None]:
    """A data center's ``pop:`` (the PoP it is homed to, overriding the homing rule) and ``replay:``."""
    if pop is not None and (not isinstance(pop, str) or not pop.strip()):
        raise ScenarioError(f"{path}.pop: expected a PoP name such as SEA, got {pop!r}")
    if replay is None:
        return pop, None
    where = f"{path}.replay"
    data = _section(replay, where, DATA_CENTER_LINK_PROPERTIES["replay"]["properties"])
    file = data.get("file")
    if not isinstance(file, str) or not file.strip():
        raise ScenarioError(f"{where}.file: required (a trace file)")
    if base_dir is not None and not Path(file).is_absolute():
        file = str((base_dir / file).resolve())
    fmt = _section_choice(data, "format", where, REPLAY_FORMATS, "auto")
    loop = data.get("loop", True)
    if not isinstance(loop, bool):
        raise ScenarioError(f"{where}.loop: expected true or false, got {loop!r}")
    shift = _section_number(data, "shift_s", where, None) if "shift_s" in data else None
    if not Path(file).is_file():
        raise ScenarioError(f"{where}.file: no such file: {file}")
    # Parse now: a bad trace is an error at validation, not at the first slot.
    from skyhaul.runtime.linkdata import load_replay_trace

    try:
        load_replay_trace(file, fmt)
    except ValueError as exc:
        raise ScenarioError(f"{where}.file: {exc}") from None
    return pop, ReplaySpec(file, fmt, loop, shift)


def _check_link_model(
    spec: LinkModelSpec,
    constellation: ConstellationSpec,
    scheduler: SchedulerConfig,
    dcs: list[DataCenterSpec],
    epoch_unix: float,
) -> None:
    """Checks across sections: PoP names against the ground preset; ``+grid`` on a TLE catalogue
    must infer planes (an error naming the constellation, never 0 ISLs in silence)."""
    pops = [(k, d.pop) for k, d in enumerate(dcs) if d.pop is not None]
    if pops:
        if spec.ground is None:
            k, _ = pops[0]
            raise ScenarioError(f"data_centers[{k}].pop: needs link_model.ground (e.g. starlink-2023)")
        from skyhaul.runtime.linkdata import starlink_ground

        known = {p.name for p in starlink_ground().pops}
        for k, name in pops:
            if name not in known:
                raise ScenarioError(
                    f"data_centers[{k}].pop: unknown PoP {name!r} (known: {', '.join(sorted(known))})"
                )
    if constellation.tle_file and scheduler.isl in ("+grid", "nearest"):
        from skyhaul.runtime.linkdata import catalogue_isl_topology

        try:
            catalogue_isl_topology(
                constellation.tle_file,
                scheduler.isl,
                epoch_unix,
                name=constellation.label,
                name_filter=constellation.name_filter,
                skip_invalid=constellation.skip_invalid,
                min_satellite_altitude_km=spec.min_satellite_altitude_km,
            )
        except ValueError as exc:
            raise ScenarioError(f"scheduler.isl: {exc}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Relative paths inside it are relative to the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_scenario(data, source=str(p), base_dir=p.resolve().parent)
    except ScenarioError as exc:
        raise ScenarioError(f"{p.name}: {exc}") from None


DEFAULT_SCENARIO: dict[str, Any] = {
    "name": "default",
    "description": "A modular data center on Kodiak Island, Alaska, reaching West US 2 over Starlink shell 1 with ISLs.",
    "epoch": "2020-10-30T00:00:00Z",
    "speed": 1,
    "constellation": {"preset": "starlink-shell1"},
    "scheduler": {"isl": "+grid", "policy": "highest-elevation"},
    "regions": [{"id": "westus2"}],
    "data_centers": [
        {"id": "mdc-kodiak", "home_region": "westus2", "location": {"lat": 57.79, "lon": -152.4}},
    ],
}


def default_scenario() -> Scenario:
    return parse_scenario(DEFAULT_SCENARIO, source="<built-in default>")


def scenario_from_env(
    env: Mapping[str, str], *, loader: Callable[[str], Scenario] = load_scenario
) -> Scenario:
    path = env.get("SKYHAUL_SCENARIO")
    return loader(path) if path else default_scenario()

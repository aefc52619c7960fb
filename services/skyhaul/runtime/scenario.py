"""The scenario: one YAML file that every service reads, validated into frozen dataclasses.

Every error names the field by its path (``data_centers[0].location.lat: 91 is outside [-90, 90]``)
so a person can fix the file without reading code. Unknown keys are errors: a typo must not be
silently ignored. The file format is defined once, as the JSON Schema SCENARIO_SCHEMA (published as
docs/scenario.schema.json); everything a run needs from the file (presets, TLE contents, container
names, references between sections) is checked here, before any process starts.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from skyhaul.contract.blobs import show_value, validate_blob_name, validate_container_name
from skyhaul.core.constellations import PRESETS, ShellSpec
from skyhaul.core.ground import Gateway, Terminal
from skyhaul.core.gsl import GslRule
from skyhaul.core.latency import LatencyParams, PathProfile, default_params
from skyhaul.core.scheduler import ISL_MODES, MODES, POLICIES, SchedulerConfig
from skyhaul.core.tle import TleError, load_tle_file
from skyhaul.runtime.errors import InvalidArgument


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
DATA_PLANES = ("relay", "packet")  # docs/data-plane.md: relay needs no privileges, packet needs root


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
class RetentionSpec:
    """How long synced objects stay on the data center's disk (None = no limit); see docs/retention.md."""

    max_age_s: float | None = None  # emulated seconds since the object synced
    max_bytes: int | None = None  # all stored objects together; the oldest synced go first


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
    forwards: tuple[str, ...] = ()  # "LOCALPORT=HOST:PORT": the user's own TCP apps behind the terminal
    retention: RetentionSpec = RetentionSpec()
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
    data_plane: str = "relay"
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


# --- The file format, defined once ------------------------------------------------------------
# Every key, type, range and default of a scenario file lives in SCENARIO_SCHEMA below (JSON Schema,
# draft 7, which editors understand). `skyhaul scenario schema` writes it to
# docs/scenario.schema.json; jsonschema checks files against it, and parse_scenario() then only adds
# the rules a schema cannot say (cross references, one-of choices, TLE contents, container names).

SCHEMA_ID = "https://skyhaul.dev/scenario.schema.json"
# Below this, links would compute more delay samples per slot than it can publish in time: a run
# with `sample_step_s: 1e-6` validates but never gets ready.
MIN_SAMPLE_STEP_S = 0.1
ECHO_LIMIT = 200  # characters of a user's value an error may repeat


def _number(
    description: str, default: float | None = None, *, minimum=None, maximum=None, above=None, below=None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number", "description": description}
    for key, value in (
        ("minimum", minimum),
        ("maximum", maximum),
        ("exclusiveMinimum", above),
        ("exclusiveMaximum", below),
        ("default", default),
    ):
        if value is not None:
            schema[key] = value
    return schema


def _integer(description: str, default: int | None = None, *, minimum: int = 0, maximum: int | None = None):
    schema = _number(description, default, minimum=minimum, maximum=maximum)
    schema["type"] = "integer"
    return schema


def _text(description: str, default: str | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "description": description, **extra}
    if default is not None:
        schema["default"] = default
    return schema


def _choice(description: str, options, default: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": list(options), "description": description}
    if default is not None:
        schema["default"] = default
    return schema


def _boolean(description: str, default: bool) -> dict[str, Any]:
    return {"type": "boolean", "description": description, "default": default}


def _mapping(description: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _list(description: str, items: dict[str, Any], min_items: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "description": description, "items": items}
    if min_items:
        schema["minItems"] = min_items
    return schema


_IDENTIFIER = {
    "type": "string",
    "pattern": "^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$",
    "description": "lowercase letters, digits and inner hyphens, at most 40 characters (it names "
    "Kubernetes objects and Redis keys)",
    "errorMessage": "must be lowercase letters, digits and inner hyphens, at most 40 characters "
    "(it names Kubernetes objects and Redis keys)",
}
_LAT = _number("latitude, degrees north", minimum=-90, maximum=90)
_LON = _number("longitude, degrees east", minimum=-180, maximum=180)
_ELEVATION = dict(minimum=0, below=90)


def _geo_schema(description: str, max_alt_m: float = 100_000) -> dict[str, Any]:
    return _mapping(
        description,
        {
            "lat": _LAT,
            "lon": _LON,
            "alt_m": _number("metres above the WGS84 ellipsoid", 0.0, minimum=-500, maximum=max_alt_m),
        },
        ("lat", "lon"),
    )


def _build_schema() -> dict[str, Any]:
    scheduler = SchedulerConfig()
    shell = _mapping(
        "a Walker-delta shell",
        {
            "name": _text("label of the shell (default shell<N>)"),
            "planes": _integer("orbital planes", minimum=1, maximum=1000),
            "sats_per_plane": _integer("satellites per plane", minimum=1, maximum=1000),
            "altitude_km": _number("altitude above the equator, km", minimum=160, maximum=40_000),
            "inclination_deg": _number("inclination, degrees", minimum=0, maximum=180),
            "phasing": _integer(
                "Walker phasing F in [0, planes); a one-plane shell gives 0", ShellSpec.phasing, maximum=1000
            ),
        },
        ("planes", "sats_per_plane", "altitude_km", "inclination_deg"),
    )
    constellation = _mapping(
        "exactly one of preset, tle_file, shells",
        {
            "preset": _choice(
                "a built-in constellation: " + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()), PRESETS
            ),
            "tle_file": _text("a TLE catalogue (2- or 3-line), relative to the scenario file"),
            "name_filter": _text("with tle_file: a glob on satellite names, e.g. STARLINK-*"),
            "skip_invalid": _boolean(
                "with tle_file: skip (and report) malformed sets instead of failing", False
            ),
            "shells": _list("your own Walker-delta shells", shell, min_items=1),
        },
    )
    scheduler_section = _mapping(
        "how satellites are assigned and routes built",
        {
            "mode": _choice(
                "slotted: decide at slot starts and hold; continuous: re-decide every step",
                MODES,
                scheduler.mode,
            ),
            "slot_interval_s": _number("slot length, s", scheduler.slot_interval_s, above=0, maximum=3600),
            "slot_offset_s": _number(
                "slots start at this second of each interval",
                scheduler.slot_offset_s,
                minimum=0,
                maximum=3600,
            ),
            "policy": _choice("terminal assignment policy", POLICIES, scheduler.policy),
            "isl": _choice(
                "none: bent pipe; +grid: laser links to plane neighbours", ISL_MODES, scheduler.isl
            ),
            "handover_stall_ms": _number(
                "traffic held at a slot boundary where the satellite changes, ms",
                scheduler.handover_stall_ms,
                minimum=0,
                maximum=10_000,
            ),
            "sample_step_s": _number(
                f"spacing of the delay samples published for each slot (at least {MIN_SAMPLE_STEP_S} s)",
                scheduler.sample_step_s,
                minimum=MIN_SAMPLE_STEP_S,
                maximum=60,
            ),
            "beam_capacity_mbps": _number(
                "a satellite's beam capacity, shared among the terminals on it",
                scheduler.beam_capacity_mbps,
                above=0,
                maximum=1e7,
            ),
            "terminal_min_elevation_deg": _number(
                "default elevation mask of terminals", Terminal.min_elevation_deg, **_ELEVATION
            ),
            "gateway_min_elevation_deg": _number(
                "default elevation mask of gateways", Gateway.min_elevation_deg, **_ELEVATION
            ),
        },
    )
    gateway = _mapping(
        "a gateway of the region",
        {
            "id": _IDENTIFIER,
            "lat": _LAT,
            "lon": _LON,
            "alt_m": _number("metres above the WGS84 ellipsoid", 0.0, minimum=-500, maximum=10_000),
            "min_elevation_deg": _number(
                "elevation mask (default: scheduler.gateway_min_elevation_deg)", **_ELEVATION
            ),
            "capacity_mbps": _number("gateway capacity", Gateway.capacity_mbps, above=0, maximum=1e7),
            "fibre_route_factor": _number(
                "fibre length to the region / great-circle distance",
                Gateway.fibre_route_factor,
                minimum=1,
                maximum=10,
            ),
        },
        ("id", "lat", "lon"),
    )
    region = _mapping(
        "a cloud region",
        {
            "id": _IDENTIFIER,
            "preset": _choice(
                "an Azure region whose coordinates to use (default: the id, if it is one)",
                sorted(AZURE_REGIONS),
            ),
            "display_name": _text("label (default: the Azure region's name)"),
            "location": _geo_schema("where the region is (default: from the preset)"),
            "gateways": _list("gateways (default: one at the region)", gateway),
        },
        ("id",),
    )
    workload, sync = WorkloadSpec(), SyncSpec()
    data_center = _mapping(
        "a modular data center",
        {
            "id": _IDENTIFIER,
            "home_region": _text("id of the region it syncs to"),
            "location": _geo_schema("a fixed site (or give track)"),
            "track": _list(
                "a moving site: points in time order (or give location)",
                _mapping(
                    "a point of the track",
                    {
                        "t_s": _number("seconds after the epoch", minimum=0),
                        "lat": _LAT,
                        "lon": _LON,
                        "alt_m": _number("metres", 0.0, minimum=-500, maximum=100_000),
                    },
                    ("t_s", "lat", "lon"),
                ),
                min_items=1,
            ),
            "terminal": _mapping(
                "the data center's dish",
                {
                    "min_elevation_deg": _number(
                        "elevation mask (default: scheduler.terminal_min_elevation_deg)", **_ELEVATION
                    ),
                    "uplink_mbps": _number("uplink rate", Terminal.uplink_mbps, above=0, maximum=1e6),
                    "downlink_mbps": _number("downlink rate", Terminal.downlink_mbps, above=0, maximum=1e6),
                },
            ),
            "workload": _mapping(
                "a synthetic workload of puts",
                {
                    "objects": _integer("objects per interval", workload.objects, maximum=100_000),
                    "size_bytes": _integer("bytes per object", workload.size_bytes, minimum=1, maximum=2**34),
                    "interval_s": _number(
                        "emulated seconds between batches", workload.interval_s, above=0, maximum=86_400
                    ),
                    "priority": _choice("sync priority", PRIORITIES, workload.priority),
                    "key_prefix": _text("object keys start with this", workload.key_prefix),
                },
            ),
            "sync": _mapping(
                "store-and-forward to the home region",
                {
                    "block_size_bytes": _integer(
                        "block size of uploads", sync.block_size_bytes, minimum=4096, maximum=64 * 2**20
                    ),
                    "container": _text(
                        "region container (Azure rules: 3-63 lowercase letters, digits, single hyphens)",
                        sync.container,
                    ),
                    "bandwidth_share": _number(
                        "fraction of the link the sync may use", sync.bandwidth_share, above=0, maximum=1
                    ),
                },
            ),
            "storage_bytes": _integer(
                "local store capacity", DataCenterSpec.storage_bytes, minimum=1, maximum=2**62
            ),
            **DATA_CENTER_LINK_PROPERTIES,
            "retention": _mapping(
                "keep synced objects at the data center for a time or up to a size, oldest synced "
                "evicted first, never an unsynced one (docs/retention.md)",
                {
                    "max_age_s": _number(
                        "emulated seconds a synced object stays after it synced",
                        above=0,
                        maximum=10 * 365 * 86_400,
                    ),
                    "max_bytes": _integer(
                        "bytes all objects may take before synced ones go", minimum=1, maximum=2**62
                    ),
                },
            ),
            "forwards": _list(
                "your own TCP applications behind the terminal: LOCALPORT=HOST:PORT, relayed from "
                "127.0.0.1:LOCALPORT through the link (relay data plane)",
                {"type": "string", "pattern": "^[0-9]{1,5}=.+:[0-9]{1,5}$"},
            ),
        },
        ("id", "home_region"),
    )
    schema = _mapping(
        "A Skyhaul scenario: one YAML file that every service reads.",
        {
            "name": _text("label used in logs, Redis keys and reports", "scenario"),
            "description": {"type": "string", "description": "free text", "default": ""},
            "epoch": {
                "type": "string",
                "format": "date-time",
                "default": "2020-10-30T00:00:00Z",
                "description": "emulated time when the run starts (ISO 8601, UTC when no zone)",
            },
            "speed": _number("emulated seconds per wall second", 1.0, above=0, maximum=100_000),
            "duration_s": _number(
                "optional length of the run (informational for tools)", above=0, maximum=30 * 86_400
            ),
            "data_plane": {
                "type": "string",
                "enum": list(DATA_PLANES),
                "default": "relay",
                "description": "relay (a TCP relay, no privileges) or packet (every IP packet through "
                "the link in a network namespace per data center; root): docs/data-plane.md",
            },
            "constellation": constellation,
            "scheduler": scheduler_section,
            "link_model": LINK_MODEL_SCHEMA,
            "regions": _list("cloud regions and their gateways", region, min_items=1),
            "data_centers": _list("modular data centers and their terminals", data_center),
        },
        ("constellation", "regions"),
    )
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "Skyhaul scenario",
        **schema,
    }


def scenario_schema_json() -> str:
    """The schema as committed in docs/scenario.schema.json."""
    return json.dumps(SCENARIO_SCHEMA, indent=2, ensure_ascii=False) + "\n"


def _show(value: Any) -> str:
    return show_value(value, ECHO_LIMIT)


def _path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_TYPE_WORDS = {
    "number": "a number",
    "integer": "a whole number",
    "string": "text",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
}


def _describe(error: jsonschema.ValidationError) -> str:
    """One schema violation as 'path: what is wrong', in the words the rest of the project uses."""
    path, schema, value, kind = _path(error.absolute_path), error.schema, error.instance, error.validator
    if kind == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        key = sorted(str(k) for k in value if k not in schema.get("properties", {}))[0]
        # A sibling first; else a key of another section (`constelation:` indented one level too deep).
        guess = difflib.get_close_matches(key, known, n=1) or difflib.get_close_matches(key, _ALL_KEYS, n=1)
        hint = f"did you mean {guess[0]}? " if guess else ""
        shown = key if len(key) <= ECHO_LIMIT else _show(key)
        return f"{_join(path, shown)}: unknown key ({hint}known here: {', '.join(known)})"
    if kind == "required":
        missing = [k for k in schema.get("required", ()) if k not in value]
        return f"{_join(path, missing[0])}: required"
    where = path or "scenario"
    if kind == "type":
        return f"{where}: expected {_TYPE_WORDS.get(str(error.validator_value), error.validator_value)}, got {_show(value)}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        low = (
            f"({schema['exclusiveMinimum']:g}"
            if "exclusiveMinimum" in schema
            else f"[{schema.get('minimum', -math.inf):g}"
        )
        high = (
            f"{schema['exclusiveMaximum']:g})"
            if "exclusiveMaximum" in schema
            else f"{schema.get('maximum', math.inf):g}]"
        )
        return f"{where}: {_show(value)} is outside {low}, {high}"
    if kind == "enum":
        return f"{where}: {_show(value)} is not one of {', '.join(map(str, error.validator_value))}"
    if kind == "minItems":
        return f"{where}: at least one item is needed"
    if "errorMessage" in schema:
        return f"{where}: {_show(value)} {schema['errorMessage']}"
    if kind == "minLength":
        return f"{where}: expected a non-empty string"
    return f"{where}: {error.message[:ECHO_LIMIT]}"


def _property_names(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        names = set(schema.get("properties", {}))
        return names.union(*(_property_names(v) for v in schema.values()))
    return set()


def _check_finite(value: Any, path: list) -> None:
    """JSON has no NaN or infinity; YAML does (.nan, .inf), and a range check never catches NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ScenarioError(f"{_path(path) or 'scenario'}: expected a finite number, got {value}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, [*path, key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, [*path, i])


def _drop_nulls(value: Any) -> Any:
    """A key left empty (`scheduler:` with its lines commented out) means "use the defaults", as if
    it were not there; YAML reads it as null."""
    if isinstance(value, Mapping):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def validate_document(data: Any) -> None:
    """Check a loaded scenario against SCENARIO_SCHEMA; raise ScenarioError naming the first bad field."""
    _check_finite(data, [])
    # Document order; at one place an unknown key first (`constelation:` is the cause of the missing
    # `constellation`).
    errors = sorted(
        _VALIDATOR.iter_errors(data),
        key=lambda e: ([str(p) for p in e.absolute_path], e.validator != "additionalProperties"),
    )
    if errors:
        more = (
            f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
            if len(errors) > 1
            else ""
        )
        raise ScenarioError(_describe(errors[0]) + more)


# --- The rules a schema cannot say, and the typed result ---------------------------------------------


def _epoch(value: Any, path: str) -> float:
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ScenarioError(
            f"{path}: {_show(value)} is not an ISO 8601 time like 2020-10-30T00:00:00Z"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def _unique(ids: list[str], path: str) -> None:
    seen: set[str] = set()
    for i, ident in enumerate(ids):
        if ident in seen:
            raise ScenarioError(f"{path}[{i}].id: {ident!r} is used twice")
        seen.add(ident)


def _geo(data: Mapping[str, Any]) -> GeoSpec:
    return GeoSpec(float(data["lat"]), float(data["lon"]), float(data.get("alt_m", 0.0)))


def _check_tle_file(path: str, name_filter: str | None, skip_invalid: bool, field_path: str) -> None:
    """Parse the catalogue now, so a bad TLE stops the run before orbit starts (file and line named)."""
    try:
        result = load_tle_file(path, name_filter=name_filter, skip_invalid=skip_invalid)
    except TleError as exc:
        reason = exc.reason if len(exc.reason) <= ECHO_LIMIT else exc.reason[:ECHO_LIMIT] + "..."
        raise ScenarioError(f"{field_path}: {exc.source}, line {exc.line_number}: {reason}") from None
    if not result.records:
        which = f" matching name_filter {_show(name_filter)}" if name_filter else ""
        raise ScenarioError(f"{field_path}: {path} holds no satellites{which}")


def _constellation(data: Mapping[str, Any], base_dir: Path | None) -> ConstellationSpec:
    preset, tle_file, name_filter = data.get("preset"), data.get("tle_file"), data.get("name_filter")
    shells = tuple(
        ShellSpec(
            name=item.get("name", f"shell{i}"),
            planes=int(item["planes"]),
            sats_per_plane=int(item["sats_per_plane"]),
            altitude_km=float(item["altitude_km"]),
            inclination_deg=float(item["inclination_deg"]),
            phasing=int(item.get("phasing", ShellSpec.phasing)),
        )
        for i, item in enumerate(data.get("shells", ()))
    )
    given = [name for name, v in (("preset", preset), ("tle_file", tle_file), ("shells", shells)) if v]
    if len(given) != 1:
        raise ScenarioError(
            f"constellation: give exactly one of preset, tle_file, shells (got {', '.join(given) or 'none'})"
        )
    if name_filter and not tle_file:
        raise ScenarioError("constellation.name_filter: only applies with tle_file")
    if tle_file:
        if base_dir is not None and not Path(tle_file).is_absolute():
            tle_file = str((base_dir / tle_file).resolve())
        if not Path(tle_file).is_file():
            raise ScenarioError(f"constellation.tle_file: no such file: {_show(tle_file)[1:-1]}")
        _check_tle_file(
            tle_file, name_filter, bool(data.get("skip_invalid", False)), "constellation.tle_file"
        )
    return ConstellationSpec(preset, tle_file, name_filter, bool(data.get("skip_invalid", False)), shells)


_MASK_KEYS = ("terminal_min_elevation_deg", "gateway_min_elevation_deg")


def _scheduler(data: Mapping[str, Any]) -> tuple[SchedulerConfig, GroundMasks]:
    """The ``scheduler:`` section: core's ``SchedulerConfig`` (its defaults) and the ground masks."""
    fields = {
        k: (float(v) if isinstance(v, int | float) else v) for k, v in data.items() if k not in _MASK_KEYS
    }
    masks = GroundMasks(**{k: float(data[k]) for k in _MASK_KEYS if k in data})
    defaults = SchedulerConfig()
    interval = fields.get("slot_interval_s", defaults.slot_interval_s)
    if fields.get("slot_offset_s", defaults.slot_offset_s) >= interval:
        raise ScenarioError("scheduler.slot_offset_s: must be smaller than slot_interval_s")
    try:
        config = SchedulerConfig(**fields)
    except ValueError as exc:  # core's checks name the field as "scheduler.<key>: ..."
        raise ScenarioError(str(exc)) from None
    return config, masks


def _region(data: Mapping[str, Any], path: str, masks: GroundMasks) -> RegionSpec:
    rid = data["id"]
    preset, display = data.get("preset"), data.get("display_name")
    if "location" in data:
        location = _geo(data["location"])
    elif (preset or rid) in AZURE_REGIONS:
        name, lat, lon = AZURE_REGIONS[preset or rid]
        location, display = GeoSpec(lat, lon), display or name
    else:
        raise ScenarioError(f"{path}.location: required (or a known Azure region id / preset)")
    gateways = [
        GatewaySpec(
            id=g["id"],
            location=_geo(g),
            min_elevation_deg=float(g.get("min_elevation_deg", masks.gateway_min_elevation_deg)),
            capacity_mbps=float(g.get("capacity_mbps", Gateway.capacity_mbps)),
            fibre_route_factor=float(g.get("fibre_route_factor", Gateway.fibre_route_factor)),
        )
        for g in data.get("gateways", ())
    ]
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
    _unique([g.id for g in gateways], f"{path}.gateways")
    return RegionSpec(rid, display or rid, location, tuple(gateways))


def _data_center(
    data: Mapping[str, Any], path: str, masks: GroundMasks, region_ids: set[str], base_dir: Path | None = None
) -> DataCenterSpec:
    home = data["home_region"]
    if home not in region_ids:
        raise ScenarioError(
            f"{path}.home_region: {_show(home)} is not a region of this scenario ({', '.join(sorted(region_ids))})"
        )
    location = _geo(data["location"]) if "location" in data else None
    track: list[TrackPointSpec] = []
    for i, point in enumerate(data.get("track", ())):
        t_s = float(point["t_s"])
        if track and t_s <= track[-1].t_s:
            raise ScenarioError(
                f"{path}.track[{i}].t_s: track times must increase ({t_s:g} after {track[-1].t_s:g})"
            )
        track.append(TrackPointSpec(t_s, _geo(point)))
    if (location is None) == (not track):
        raise ScenarioError(f"{path}: give exactly one of location, track")
    t = data.get("terminal", {})
    terminal = TerminalSpec(
        min_elevation_deg=float(t.get("min_elevation_deg", masks.terminal_min_elevation_deg)),
        uplink_mbps=float(t.get("uplink_mbps", Terminal.uplink_mbps)),
        downlink_mbps=float(t.get("downlink_mbps", Terminal.downlink_mbps)),
    )
    w, defaults = data.get("workload", {}), WorkloadSpec()
    workload = WorkloadSpec(
        objects=int(w.get("objects", defaults.objects)),
        size_bytes=int(w.get("size_bytes", defaults.size_bytes)),
        interval_s=float(w.get("interval_s", defaults.interval_s)),
        priority=w.get("priority", defaults.priority),
        key_prefix=w.get("key_prefix", defaults.key_prefix),
    )
    try:  # every key the workload makes must be a blob name the region accepts
        validate_blob_name(workload.key_prefix + "0", "object key")
    except InvalidArgument as exc:
        raise ScenarioError(f"{path}.workload.key_prefix: {exc}") from None
    s, sync_defaults = data.get("sync", {}), SyncSpec()
    sync = SyncSpec(
        block_size_bytes=int(s.get("block_size_bytes", sync_defaults.block_size_bytes)),
        container=s.get("container", sync_defaults.container),
        bandwidth_share=float(s.get("bandwidth_share", sync_defaults.bandwidth_share)),
    )
    try:  # the region refuses a container Azure would refuse: say so now, not after the first outage
        validate_container_name(sync.container)
    except InvalidArgument as exc:
        raise ScenarioError(f"{path}.sync.container: {exc}") from None
    storage = int(data.get("storage_bytes", DataCenterSpec.storage_bytes))
    forwards = []
    for i, item in enumerate(data.get("forwards", ())):
        local, _, target = item.partition("=")
        host, _, port = target.rpartition(":")
        if not (1 <= int(local) <= 65535 and host and 1 <= int(port) <= 65535):
            raise ScenarioError(
                f"{path}.forwards[{i}]: {_show(item)} is not LOCALPORT=HOST:PORT (ports 1-65535)"
            )
        forwards.append(item)
    r = data.get("retention", {})
    retention = RetentionSpec(
        max_age_s=float(r["max_age_s"]) if "max_age_s" in r else None,
        max_bytes=int(r["max_bytes"]) if "max_bytes" in r else None,
    )
    return DataCenterSpec(
        data["id"],
        home,
        location,
        tuple(track),
        terminal,
        workload,
        sync,
        storage,
        tuple(forwards),
        retention,
        *_data_center_link(data.get("pop"), data.get("replay"), path, base_dir),
    )


def parse_scenario(data: Any, source: str = "<string>", base_dir: Path | None = None) -> Scenario:
    """Validate a scenario mapping (as loaded from YAML). Raises ScenarioError naming the field."""
    if isinstance(data, Mapping) and isinstance(data.get("epoch"), dt.datetime | dt.date):
        # yaml.safe_load turns an unquoted time into a datetime; the file format says text.
        data = {**data, "epoch": data["epoch"].isoformat()}
    data = _drop_nulls(data)
    validate_document(data)
    epoch = _epoch(data.get("epoch", "2020-10-30T00:00:00Z"), "epoch")
    duration = data.get("duration_s")
    constellation = _constellation(data["constellation"], base_dir)
    scheduler, masks = _scheduler(data.get("scheduler", {}))
    regions = [_region(item, f"regions[{i}]", masks) for i, item in enumerate(data["regions"])]
    _unique([r.id for r in regions], "regions")
    region_ids = {r.id for r in regions}
    dcs = [
        _data_center(item, f"data_centers[{i}]", masks, region_ids, base_dir)
        for i, item in enumerate(data.get("data_centers", ()))
    ]
    _unique([d.id for d in dcs], "data_centers")
    gateway_ids = [g.id for r in regions for g in r.gateways]
    if len(set(gateway_ids)) != len(gateway_ids):
        raise ScenarioError("regions: gateway ids must be unique across regions")
    link_model = _link_model(data.get("link_model"), constellation, scheduler)
    _check_link_model(link_model, constellation, scheduler, dcs, epoch)
    return Scenario(
        name=data.get("name", "scenario"),
        description=data.get("description", "") or "",
        epoch_unix=epoch,
        speed=float(data.get("speed", 1.0)),
        duration_s=float(duration) if duration is not None else None,
        constellation=constellation,
        scheduler=scheduler,
        regions=tuple(regions),
        data_centers=tuple(dcs),
        source=source,
        raw=dict(data),
        data_plane=data.get("data_plane", "relay"),
        link_model=link_model,
    )


# --- Reading the file -------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys (YAML would silently keep the last) and keeps times as
    text (the schema says the epoch is an ISO 8601 string)."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key, line = key_node.value, key_node.start_mark.line + 1
        if key in seen:
            raise ScenarioError(f"line {line}: duplicate key {_show(key)} (first given on line {seen[key]})")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_scenario_file(path: str | Path) -> Any:
    """The YAML document of a scenario file, refusing binary files, bad UTF-8 and duplicate keys."""
    p = Path(path)
    try:
        content = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(
            f"{_show(str(path))[1:-1]}: cannot read the scenario file ({exc.strerror or exc})"
        ) from None
    if b"\0" in content:
        raise ScenarioError(f"{p.name}: not a text file (a scenario is UTF-8 YAML; this one holds NUL bytes)")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise ScenarioError(f"{p.name}: line {line}: not UTF-8 text (a scenario is UTF-8 YAML)") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ScenarioError as exc:
        raise ScenarioError(f"{p.name}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or "cannot be parsed")[:ECHO_LIMIT]
        raise ScenarioError(f"{p.name}: not valid YAML: {where}{problem}") from None


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
    data = read_scenario_file(p)
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


# Built last: the link model's fragments (above) are part of the one schema.
SCENARIO_SCHEMA: dict[str, Any] = _build_schema()
_VALIDATOR = jsonschema.Draft7Validator(SCENARIO_SCHEMA)
_ALL_KEYS = sorted(_property_names(SCENARIO_SCHEMA))

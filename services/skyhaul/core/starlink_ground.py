"""The real Starlink ground segment as a preset: gateways and PoPs, and homing a terminal to a PoP.

Data: ``skyhaul/data/starlink_ground_2023-10-10.csv`` (community map of 2023-10-10, source in its
header), parsed here from text (the runtime reads the file).

Homing rule (how the operator assigns a terminal's PoP — by region, not by the nearest gateway;
measured: Victoria BC, Calgary and Anchorage all land in Seattle): the terminal's *region group*
is the group (continent as the map draws it) of the nearest gateway of any status; its PoP is the
nearest PoP of that group by great circle. That reproduces Seattle for Victoria, Calgary and
Anchorage and Frankfurt for the Seychelles (the LENS dishes' PoPs). A data center may name its PoP
instead (``override``). A gateway's PoP: the map does not say, so the file carries the nearest PoP
of the gateway's group; a route then uses the gateways wired to the terminal's PoP.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from skyhaul.core.ground import great_circle_km

# Gateway statuses on the map that may carry traffic (the rest are permits or plans).
OPERATING_STATUSES = ("live", "presumed-live", "built")


@dataclass(frozen=True)
class GroundSite:
    kind: str  # "gateway" | "pop"
    name: str
    lat_deg: float
    lon_deg: float
    group: str
    status: str = ""
    pop: str = ""  # gateways: the PoP it is wired to


@dataclass(frozen=True)
class GroundPreset:
    pops: tuple[GroundSite, ...]
    gateways: tuple[GroundSite, ...]

    def pop(self, name: str) -> GroundSite:
        for site in self.pops:
            if site.name == name:
                return site
        raise KeyError(f"unknown PoP {name!r}; known: {', '.join(p.name for p in self.pops)}")

    def gateways_of(self, pop: str, statuses=OPERATING_STATUSES) -> tuple[GroundSite, ...]:
        """Gateways wired to a PoP, with an operating status (``statuses=None``: any)."""
        self.pop(pop)
        return tuple(g for g in self.gateways if g.pop == pop and (statuses is None or g.status in statuses))


def parse_ground_csv(text: str) -> GroundPreset:
    """The preset from its CSV text (``#`` lines are comments)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    need = {"kind", "name", "lat", "lon", "group", "status", "pop"}
    if reader.fieldnames is None or not need <= set(reader.fieldnames):
        raise ValueError(f"ground preset: the header must have the columns {', '.join(sorted(need))}")
    pops, gateways = [], []
    for k, row in enumerate(reader, start=2):
        try:
            lat, lon = float(row["lat"]), float(row["lon"])
        except ValueError:
            raise ValueError(f"ground preset row {k}: lat/lon must be numbers") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError(f"ground preset row {k}: ({lat}, {lon}) is not a location")
        site = GroundSite(row["kind"], row["name"], lat, lon, row["group"], row["status"], row["pop"])
        if site.kind == "pop":
            pops.append(site)
        elif site.kind == "gateway":
            gateways.append(site)
        else:
            raise ValueError(f"ground preset row {k}: kind {site.kind!r} is neither gateway nor pop")
    preset = GroundPreset(tuple(pops), tuple(gateways))
    names = {p.name for p in pops}
    for g in gateways:
        if g.pop not in names:
            raise ValueError(f"ground preset: gateway {g.name!r} is wired to unknown PoP {g.pop!r}")
    return preset


def region_group(lat_deg: float, lon_deg: float, preset: GroundPreset) -> str:
    """The group of the nearest gateway (any status): where the operator counts the terminal."""
    lat = np.array([g.lat_deg for g in preset.gateways])
    lon = np.array([g.lon_deg for g in preset.gateways])
    return preset.gateways[int(np.argmin(great_circle_km(lat_deg, lon_deg, lat, lon)))].group


def home_pop(lat_deg: float, lon_deg: float, preset: GroundPreset, override: str | None = None) -> GroundSite:
    """The PoP a terminal at (lat, lon) is homed to (see the module doc); ``override`` names one."""
    if override is not None:
        return preset.pop(override)
    if not (-90 <= lat_deg <= 90 and -180 <= lon_deg <= 180):
        raise ValueError(f"({lat_deg}, {lon_deg}) is not a location")
    group = region_group(lat_deg, lon_deg, preset)
    candidates = [p for p in preset.pops if p.group == group] or list(preset.pops)
    lat = np.array([p.lat_deg for p in candidates])
    lon = np.array([p.lon_deg for p in candidates])
    return candidates[int(np.argmin(great_circle_km(lat_deg, lon_deg, lat, lon)))]
